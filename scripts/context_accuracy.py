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
import jax

from opd_jax import cli
from opd_jax.data import arithmetic, context as contexts
from opd_jax.data import tokenizer as tokenizers
from opd_jax.data.dataset import PromptDataset
from opd_jax.data.sources import ArithmeticSource
from opd_jax.evaluation.evaluate import evaluate
from opd_jax.evaluation.graders import grader_for
from opd_jax.models import load_hf
from opd_jax.rollouts import default_eos_ids

_MODEL = flags.DEFINE_string("model", None, "HF checkpoint directory.")
_TEMPLATES = flags.DEFINE_list(
    "templates", ["empty", "solution"], "teacher context presets or strings"
)
_N = flags.DEFINE_integer("num_questions", 256, "test-split questions")
_DIFFICULTY = flags.DEFINE_enum(
    "difficulty", "easy", arithmetic.DIFFICULTIES, "task level"
)
_PROMPT_LEN = flags.DEFINE_integer("max_prompt_len", 128, "prompt budget")
_NEW = flags.DEFINE_integer("max_new_tokens", 24, "response budget")


def main(argv):
  del argv
  # Every template is checked before the model loads or anything compiles.
  ctxs = {
      t: contexts.TeacherContext(t, _PROMPT_LEN.value) for t in _TEMPLATES.value
  }
  tok = tokenizers.load_tokenizer(_MODEL.value, role="--model")
  model = load_hf(_MODEL.value)
  task = arithmetic.ArithmeticTask(
      difficulty=getattr(arithmetic.Difficulty, _DIFFICULTY.value)()
  )
  base = ArithmeticSource("test", _N.value, task=task)
  out = {}
  for template in _TEMPLATES.value:
    ctx = ctxs[template]
    data = PromptDataset(
        contexts.ContextSource(base, ctx),
        tok,
        max_prompt_len=_PROMPT_LEN.value,
        overlong="truncate",
    )
    result = evaluate(
        model,
        data,
        tok,
        grader_for(base),
        key=jax.random.PRNGKey(0),
        max_new_tokens=_NEW.value,
        eos_ids=default_eos_ids(model.config, tok),
    )
    out[template] = result.metrics()["eval/accuracy"]
    print(f"{template:>16s}: accuracy {out[template]:.3f} on {len(data)}")
  print(json.dumps(out))


if __name__ == "__main__":
  flags.mark_flag_as_required("model")
  cli.run(main)
