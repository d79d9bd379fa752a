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
"""configs/grids/countdown.py: the issue's rows, each a valid run on the
Countdown task; its claims name its rows; its budgets fit the task."""

import os

import pytest

from opd_jax.data import context as contexts
from opd_jax.data import countdown, tasks
from opd_jax.data.tokenizer import count_tokens
from opd_jax.results import catalogue
from opd_jax.results import grid as grid_lib
from opd_jax.trainer import config as config_lib

REPO = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)
GRID = os.path.join(REPO, "configs", "grids", "countdown.py")


@pytest.fixture(scope="module")
def grid():
  return grid_lib.load_grid(GRID)


def test_every_variant_and_tuning_run_validates(grid):
  rates = grid.tuning.learning_rates
  assert max(rates) / min(rates) >= 30
  for v in grid.variants:
    for c in (
        grid.config(v, grid.seeds[1]),
        grid.config(v, grid.tuning.seed, lr=rates[0], split="validation"),
    ):
      config_lib.validate(c)
      assert c.data.source == "countdown" and c.data.difficulty == "default"
      if v.trains:
        assert c.method == v.method


def test_the_issues_rows_are_there(grid):
  rows = {v.name: v for v in grid.variants}
  assert {
      "rkl",
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
      "topd",
      "topd_nds_only",
      "opsd",
      "minillm",
      "sampled_rkl",
  } <= set(rows)
  assert rows["gkd_0p9"].overrides["gkd.loss_pass.jsd_beta"] == 0.9
  assert rows["topd"].overrides["topd.window"] == 50
  assert rows["topd"].overrides["topd.ot_quantile"] == 0.3
  # Q3's nominal share: below the entropy median x above the 80th
  # percentile of the divergence = 10% when the two are independent.
  q3 = rows["tip_q3"].overrides
  assert q3["tip.q_entropy"] * (1 - q3["tip.q_divergence"]) == pytest.approx(
      0.1
  )


def test_claims_name_rows_of_the_grid(grid):
  names = {v.name for v in grid.variants}
  for claim in grid.claims:
    assert {claim.a, claim.b} <= names, claim
  assert any(c.b == "gkd_0p9" for c in grid.claims)


def test_budgets_fit_the_task(grid):
  c = grid.config(grid.variants[2], 0)
  lengths = tasks.reference_lengths("countdown", "default")
  assert c.max_new_tokens >= lengths[-1]
  examples = countdown.make_dataset("train", 200)
  # The chat template adds <bos>, <user> and <assistant>.
  assert max(count_tokens(e.question) for e in examples) + 3 <= (
      c.max_prompt_len
  )
  opsd = next(v for v in grid.variants if v.name == "opsd")
  budget = grid.config(opsd, 0).teacher_context.max_prompt_len
  template = contexts.TEMPLATES["solution"]
  longest = max(
      count_tokens(
          template.format(question=e.question, **countdown.context_fields(e))
      )
      for e in examples
  )
  assert longest + 3 <= budget


def test_the_alignment_measurement_runs_on_countdown(grid):
  flags = grid.diagnose_flags("/tmp/out")
  for flag in (
      "--task=countdown",
      "--difficulty=default",
      "--max_new_tokens=512",
      "--teachers=teacher,self:solution",
      "--num_questions=128",
  ):
    assert flag in flags, flag


def test_the_catalogue_names_what_it_lacks():
  with pytest.raises(ValueError) as e:
    catalogue.rows("rkl", "tip_q4")
  assert str(e.value).startswith("rows: expected names in [") and str(
      e.value
  ).endswith("got ['tip_q4']")
  with pytest.raises(ValueError, match=r"got \['tsd'\]"):
    catalogue.claims("opd", "tsd")
  q3 = catalogue.rows("tip_q3", tip_q3={"tip.q_divergence": 0.9})[0]
  assert q3.overrides["tip.q_divergence"] == 0.9
  assert "tip.q_divergence" not in catalogue.ROWS["tip_q3"].overrides
