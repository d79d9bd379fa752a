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
r"""The results grid in the papers' regime: long branching reasoning.

  nice -n 19 python scripts/reproduce.py --grid=configs/grids/countdown.py \
      --out=results/countdown --jobs=1 [--methods=rkl,gkd] [--seeds=0]

The default grid decides on ~17-token arithmetic answers from a same-size
teacher; most of the seed papers' mechanisms cannot act there (issue 36).
This grid runs the rows whose claims depend on them on the Countdown task
(docs/tasks.md: written searches of median ~170 tokens with dead ends to
recover from and several valid answers) with a teacher of 5x the student's
parameters:

  * TOPD with its paper's 50-token windows and a ~30% false-alarm share
    (`ot_quantile=0.3`; the default grid's 0.8 masks 80% of candidates);
  * TIP's Q3 with cuts that nominally hold 10% of tokens (low-entropy half x
    top-20% divergence; the realised share is reported per run);
  * TSD-KD's top-10 ranking over a vocabulary it can rank, against GKD at
    its paper's beta 0.9 as well as 0.5, in the paper's and the released
    code's readings, and its gated JSD alone;
  * DEAR's decision / evidence split on traces with real decisions;
  * OPSD with the worked search in the self-teacher's context.

The pair: `scripts/train_teacher.py --task=countdown --role=teacher` and
`--role=student` write assets/countdown/{teacher,student_init} (the
issue's bar: teacher >= 0.9 greedy, student 0.15-0.45 bare and far above
with the solution in context). Until they are shipped this grid loads and
validates (tests/results/test_countdown_grid.py) but does not run.

Shape: batch 16 x 512 new tokens, 300 steps, so that a run stays near the
issue's 15 minutes on 2 cores if the step is about 3 s (to be measured on
the pair with `python -m benchmarks step`, then batch and steps fitted).
"""

import os

from opd_jax import methods
from opd_jax.results import catalogue
from opd_jax.trainer.config import default_config

REPO = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)
ASSETS = os.path.join(REPO, "assets", "countdown")

SEEDS = (0, 1, 2)
# Four rates spanning 30x (the protocol's minimum), a factor ~3 apart; a
# row whose best is at an edge gets more past it (docs/evaluation.md).
TUNING = dict(
    learning_rates=(1e-4, 3e-4, 1e-3, 3e-3), seed=100, split="validation"
)
# 500 distinct test problems (the split holds 2,400), greedy and 4 samples.
EVALUATION = dict(num_questions=500, k=4, temperature=1.0, batch_size=128)
MEMORY = dict(
    preset="qwen3_0p6b", batch_size=8, prompt_len=64, response_len=2048
)
# The Unmasking measurement on this pair: 128 questions, so that >= 64 of
# them have both correct and incorrect rollouts at a student of 0.15-0.45;
# the external teacher and the self-teacher shown the solution on the same
# trees. 64 rollouts per question: 512-token rollouts cost 20x the default
# grid's per rollout.
DIAGNOSE = dict(
    num_questions=128, budget=64, seed=0, teachers=("teacher", "self:solution")
)
QUICK = dict(
    variants=("no_opd", "rkl", "tip_soft_or_50"),
    seeds=(0,),
    overrides={
        "total_steps": 2,
        # Below total_steps: a warm-up that outlasts the run is refused.
        "optimizer.warmup_steps": 1,
        "eval_every": 2,
        "eval_examples": 4,
        "checkpoint_every": 2,
        "keep_checkpoints": 2,
        "batch_size": 2,
    },
    evaluation=dict(num_questions=4, k=2, temperature=1.0, batch_size=4),
    memory=dict(preset="", batch_size=2, prompt_len=8, response_len=16),
)
# The self-teacher's prompt: the solution template's text, a worked search
# (at most 483 tokens at this level) and the question.
CONTEXT_PROMPT_LEN = 544


def get_config():
  c = default_config()
  c.seed = 0
  c.student = os.path.join(ASSETS, "student_init")
  c.teacher = os.path.join(ASSETS, "teacher")
  c.dtype = "float32"
  c.data.source = "countdown"
  c.data.difficulty = "default"
  c.data.num_examples = 20000
  c.data.eval_split = "test"
  c.lmbda = 1.0
  c.rollout_source = "student"
  c.sampling.temperature = 1.0
  c.batch_size = 16
  c.max_prompt_len = 32
  # The longest reference search is 483 tokens with <eos> (docs/tasks.md).
  c.max_new_tokens = 512
  c.total_steps = 300
  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 10
  c.optimizer.end_lr_fraction = 0.1
  c.optimizer.clip_norm = 1.0
  c.eval_every = 50
  c.eval_examples = 128
  c.checkpoint_every = 50
  c.keep_checkpoints = 1
  c.async_checkpointing = False
  c.log_every = 1
  return c


def variants():
  """The rows the issue lists, with the controls."""
  rows = [
      catalogue.teacher_row(os.path.join(ASSETS, "teacher")),
      *catalogue.rows(
          "no_opd",
          "rkl",
          "sampled_rkl",
          "gkd",
          "gkd_0p9",
          "tip_entropy_50",
          "tip_soft_or_50",
          "tip_soft_or_20",
          "tip_q3",
          "tip_random_50",
          "tip_bottom_soft_or_50",
          "dear",
          "dear_decision_only",
          "tsd_kd",
          "tsd_kd_code",
          "tsd_kd_gated_jsd",
          "minillm",
          # Q3's cuts: the low-entropy half x the top-20% divergence, 10%
          # of tokens if the two were independent; the realised share is
          # reported per run.
          tip_q3={"tip.q_entropy": 0.5, "tip.q_divergence": 0.8},
      ),
      catalogue.opsd_row("solution", CONTEXT_PROMPT_LEN),
  ]
  if "topd" in methods.REGISTRY:
    # The paper's 50-token windows, and a false-alarm share near its ~30%.
    rows += catalogue.topd_rows(
        "TOPD (50-token windows)", window=50, ot_quantile=0.3
    )
  return rows


def claims():
  """The papers' claims on these rows (margins: opd_jax.results.catalogue)."""
  return catalogue.claims(
      "opd",
      "tip_entropy",
      "tip_soft_or",
      "tip_q3",
      "tip_bottom",
      "tip_random",
      "tsd_kd_0p9",
      "tsd_kd",
      "tsd_kd_code_0p9",
      "tsd_kd_gated_jsd",
      "dear",
      "dear_decision",
      "opsd",
      "topd",
      "topd_nds",
  )
