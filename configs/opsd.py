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
r"""On-policy self-distillation (OPSD): the student's own weights, shown the
reference solution, teach the student that sees the bare question.

The teacher is the frozen initial student (theta_0); it scores each rollout
after its own prompt, `[reference solution + question | response]`; the
loss is the full-vocabulary reverse KL on every response token.

  python scripts/train.py --config=configs/opsd.py --workdir=/tmp/opsd \
      --config.student=/path/to/student_hf

On a jsonl / parquet / datasets file, name the column of the solutions:
  --config.data.source=file --config.data.path=train.jsonl \
  --config.data.solution_field=solution

Variants: `--config.self_teacher.weights=live` (the current student under
stop-gradient) or `=ema` (`--config.self_teacher.ema_decay=0.99`); other
contexts `--config.teacher_context.template=summary|correct_wrong|empty`
(`empty` is plain OPD against theta_0) or a format string over {question}
and the data's fields; TIP's token selection composes with it:
`--config.method=tip`. `--config.teacher_context.kl_clip=10` clips each
token's KL (OPSD's guard against style tokens of huge KL).
"""

from opd_jax.trainer.config import default_config


def get_config():
  c = default_config()
  c.method = "rkl"
  c.student_preset = "qwen3_1p7b"
  c.teacher = "self"
  c.self_teacher.weights = "initial"
  c.teacher_context.template = "solution"
  # The solution rides in front of the question: the teacher's prompt gets
  # its own, larger budget (cut from the left of the context beyond it).
  c.max_prompt_len = 256
  c.max_new_tokens = 512
  c.teacher_context.max_prompt_len = 1024
  c.optimizer.learning_rate = 1e-6
  c.optimizer.weight_decay = 0.1
  return c
