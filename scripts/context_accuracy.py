# Copyright 2026 The opd_jax Authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
r"""Greedy accuracy of a model on bare questions and under teacher contexts.

The gap between a self-teacher's accuracy with a privileged context and the
bare student's is what self-distillation can transfer:

  python scripts/context_accuracy.py --model=assets/demo/student_init \
      --templates=empty,solution,summary,correct_wrong --num_questions=256
"""

from __future__ import annotations

import json

from absl import flags

from opd_jax import cli
from opd_jax import script_flags
from opd_jax.data import context as contexts
from opd_jax.data import tokenizer as tokenizers
from opd_jax.evaluation.evaluate import context_accuracy
from opd_jax.models import load_hf

_MODEL = flags.DEFINE_string("model", None, "HF checkpoint directory.")
_TEMPLATES = flags.DEFINE_list(
    "templates", ["empty", "solution"], "teacher context presets or strings"
)
_N = flags.DEFINE_integer("num_questions", 256, "test-split questions")
_TASK = flags.DEFINE_enum(
    "task", "arithmetic", ["arithmetic", "countdown"], "built-in task"
)
_DIFFICULTY = flags.DEFINE_enum(
    "difficulty",
    "easy",
    ["easy", "two_step", "default", "hard"],
    "task level (one the task has)",
)
_PROMPT_LEN = flags.DEFINE_integer("max_prompt_len", 128, "prompt budget")
_NEW = flags.DEFINE_integer("max_new_tokens", 24, "response budget")


def main(argv):
  del argv
  for template in _TEMPLATES.value:  # before the model loads
    contexts.TeacherContext(template, _PROMPT_LEN.value)
  base = script_flags.task_source(
      _TASK.value, _DIFFICULTY.value, "test", _N.value, _NEW.value
  )
  tok = tokenizers.load_tokenizer(_MODEL.value, role="--model")
  model = load_hf(_MODEL.value)
  out = context_accuracy(
      model,
      tok,
      base,
      _TEMPLATES.value,
      max_prompt_len=_PROMPT_LEN.value,
      max_new_tokens=_NEW.value,
  )
  for template, accuracy in out.items():
    print(f"{template:>16s}: accuracy {accuracy:.3f} on {len(base)}")
  print(json.dumps(out))


if __name__ == "__main__":
  flags.mark_flag_as_required("model")
  cli.run(main)
