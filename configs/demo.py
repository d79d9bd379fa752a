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
r"""The demo (`make demo`): TIP Soft-OR (rho 0.5) OPD on the arithmetic task.

  python scripts/demo.py [--workdir=./workdir_demo] [--config.total_steps=..]

The teacher and the student's starting point are the small checkpoints
shipped in assets/demo/ (reproduced by scripts/train_teacher.py): a 4-layer
Qwen3-style teacher trained by SFT on the task, and a student of the same
shape after a short SFT warm-up on 256 problems (a quarter with the worked
solution in front of the question, so that it can use one as its own
self-distillation teacher), which knows the answer format but not the
arithmetic. The student samples its own rollouts at
temperature 1; the teacher scores them; TIP keeps half of each rollout's
tokens (Soft-OR of student entropy and reverse KL) and the loss is the
reverse KL on those tokens. Evaluation is greedy on held-out (test split)
problems, which share no arithmetic chain with the train split.

The 'easy' difficulty (one or two +/- steps on small numbers, ~25-token
questions and ~17-token rationales) keeps every sequence under 64 tokens,
so the whole run fits the CPU budget of the demo.
"""

import os

from opd_jax.trainer.config import default_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSETS = os.path.join(REPO, "assets", "demo")


def get_config():
  c = default_config()
  c.seed = 0
  c.student = os.path.join(ASSETS, "student_init")
  c.teacher = os.path.join(ASSETS, "teacher")
  c.dtype = "float32"
  c.method = "tip"
  c.tip.selector = "soft_or"
  c.tip.rho = 0.5
  c.tip.score_divergence = "reverse_kl"
  c.tip.loss_pass.divergence = "reverse_kl"
  c.data.source = "arithmetic"
  c.data.difficulty = "easy"
  c.data.num_examples = 20000
  c.data.eval_split = "test"
  c.lmbda = 1.0
  c.rollout_source = "student"
  c.sampling.temperature = 1.0
  c.batch_size = 64
  # Questions are at most ~28 tokens and rationales (with <eos>) at most ~23
  # at this difficulty: 24 new tokens fit every reference answer.
  c.max_prompt_len = 32
  c.max_new_tokens = 24
  c.total_steps = 300
  c.optimizer.learning_rate = 2e-3
  c.optimizer.warmup_steps = 10
  c.optimizer.end_lr_fraction = 0.1
  c.optimizer.clip_norm = 1.0
  c.eval_every = 50
  c.eval_examples = 256
  # One checkpoint at the end: the demo is short, and saving is not free.
  c.checkpoint_every = 300
  c.keep_checkpoints = 1
  c.async_checkpointing = False
  c.log_every = 1
  return c
