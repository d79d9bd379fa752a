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
r"""Distillation on your own data: a jsonl / parquet file, evaluated on another.

  python scripts/train.py --config=configs/own_data.py --workdir=/tmp/own

As shipped it trains the demo's pair (assets/demo/) on
assets/demo/data/train.jsonl and evaluates on assets/demo/data/test.jsonl,
one JSON object per line:

  {"question": "Mia has 9 apples. ...", "answer": "13",
   "solution": "9-4=5. 5+8=13. #### 13"}

Your own: `--config.data.path=train.jsonl --config.data.eval_path=test.jsonl
--config.student=DIR --config.teacher=DIR`, and the column names
(`data.question_field`, `data.answer_field`) if yours differ. A `.parquet`
file, a `.json` list or a `datasets` `save_to_disk` directory load the same
way. Training needs questions only; the evaluation rows need answers (graded
as exact integers when every answer is one, else by math-verify). Without
`data.eval_path`, `data.eval_fraction` (0.1) of the file's questions are held
out of training and evaluated on (the same ones in every run).

A teacher context (self-distillation, docs/self_distillation.md): the
student's own weights, shown each row's worked solution, teach the student
that sees the bare question:

  --config.teacher=self --config.teacher_context.template=solution \
      --config.data.solution_field=solution \
      --config.teacher_context.max_prompt_len=96

(the teacher's prompt, solution + question, gets its own width; a longer
one loses the start of its context, with a warning).
"""

import os

from opd_jax.trainer.config import default_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSETS = os.path.join(REPO, "assets", "demo")


def get_config():
  c = default_config()
  c.student = os.path.join(ASSETS, "student_init")
  c.teacher = os.path.join(ASSETS, "teacher")
  c.method = "tip"
  c.tip.selector = "soft_or"
  c.tip.rho = 0.5
  c.data.source = "file"
  c.data.path = os.path.join(ASSETS, "data", "train.jsonl")
  c.data.eval_path = os.path.join(ASSETS, "data", "test.jsonl")
  c.data.question_field = "question"
  c.data.answer_field = "answer"
  # Rows whose prompt is longer than max_prompt_len are dropped ('drop') or
  # cut from the left ('truncate').
  c.data.overlong = "drop"
  c.batch_size = 64
  c.max_prompt_len = 32
  c.max_new_tokens = 24
  c.total_steps = 300
  c.optimizer.learning_rate = 2e-3
  c.optimizer.warmup_steps = 10
  c.eval_every = 50
  c.eval_examples = 256
  c.checkpoint_every = 100
  c.keep_checkpoints = 1
  return c
