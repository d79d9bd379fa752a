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
"""configs/grids/default.py: every row is a valid run, every claim names
rows of the grid, --quick and --methods narrow it."""

import os

import pytest

from opd_jax import methods
from opd_jax.results import grid as grid_lib
from opd_jax.trainer import config as config_lib

REPO = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)
GRID = os.path.join(REPO, "configs", "grids", "default.py")


@pytest.fixture(scope="module")
def grid():
  return grid_lib.load_grid(GRID)


def test_every_variant_validates(grid):
  assert len(grid.seeds) >= 3
  for v in grid.variants:
    c = grid.config(v, grid.seeds[1])
    config_lib.validate(c)
    assert c.seed == grid.seeds[1]
    if v.trains:
      assert c.method == v.method
      assert c.data.difficulty == "easy"


def test_rows_of_the_issue_are_there(grid):
  names = {v.name for v in grid.variants}
  assert {
      "no_opd",
      "rkl",
      "gkd",
      "sampled_rkl",
      "tip_entropy_50",
      "tip_soft_or_50",
      "tip_soft_or_20",
      "tip_q3",
      "tip_bottom_soft_or_50",
      "tip_random_50",
      "tsd_kd",
      "tsd_kd_no_gate",
      "tsd_kd_no_opener",
      "tsd_kd_no_em",
      "tsd_kd_em_0p1",
      "tsd_kd_code",
      "opsd",
      "opsd_summary",
      "opsd_correct_wrong",
      "dear",
      "dear_decision_only",
      "minillm",
  } <= names
  assert ("topd" in names) == ("topd" in methods.REGISTRY)


def test_claims_name_rows(grid):
  names = {v.name for v in grid.variants} | {"topd", "topd_nds_only"}
  for claim in grid.claims:
    assert {claim.a, claim.b} <= names, claim


def test_ablations_change_what_they_say(grid):
  c = {v.name: grid.config(v, 0) for v in grid.variants}
  assert c["tsd_kd_no_gate"].tsd_kd.gate is False
  assert c["tsd_kd"].tsd_kd.gate is True
  assert c["tsd_kd_no_opener"].tsd_kd.alpha == 0.0
  assert c["tsd_kd_no_em"].tsd_kd.em_ratio == 0.0
  assert c["dear_decision_only"].dear.q == 0.0
  assert c["gkd"].gkd.loss_pass.jsd_beta == 0.5
  assert c["tsd_kd_em_0p1"].tsd_kd.em_weight == 0.1
  code = c["tsd_kd_code"].tsd_kd
  assert (code.em_rule, code.em_ratio, code.em_group_rows) == (
      "quantile",
      0.9,
      4,
  )
  assert code.pl_code_compat and code.opener_group_rows == 4
  for name, template in (
      ("opsd", "solution"),
      ("opsd_summary", "summary"),
      ("opsd_correct_wrong", "correct_wrong"),
  ):
    assert c[name].teacher == "self", name
    assert c[name].teacher_context.template == template, name


def test_tuning_grid_is_the_same_for_all_and_spans_30x(grid):
  rates = grid.tuning.learning_rates
  assert len(rates) == 4 and max(rates) / min(rates) == pytest.approx(30.0)
  assert grid.tuning.edge_factor == 3.0 and grid.tuning.edge_steps == 2
  assert grid.tuning.split == "validation"
  assert grid.tuning.seed not in grid.seeds
  for v in grid.variants:
    c = grid.config(v, grid.tuning.seed, lr=rates[0], split="validation")
    config_lib.validate(c)
    assert c.optimizer.learning_rate == rates[0]
    assert c.data.eval_split == "validation"
  quick = grid_lib.load_grid(GRID, quick=True)
  assert not quick.tuning.enabled


def test_the_alignment_measurement_runs_on_the_grids_pair(grid):
  assert grid.diagnose == grid_lib.DiagnoseSpec(32, 512, 0)
  flags = grid.diagnose_flags("/tmp/out")
  c = grid.config(grid.variants[1], 0)
  for flag in (
      f"--student={c.student}",
      f"--teacher={c.teacher}",
      "--difficulty=easy",
      f"--max_new_tokens={c.max_new_tokens}",
      "--num_questions=32",
      "--budget=512",
      "--out=/tmp/out",
  ):
    assert flag in flags, flag
  assert c.student.endswith("student_init")
  assert not grid_lib.load_grid(GRID, quick=True).diagnose.enabled
  with pytest.raises(ValueError, match=r"DIAGNOSE.budget: expected an"):
    grid_lib.DiagnoseSpec(num_questions=2, budget=0)


def test_quick_and_methods_narrow_the_grid():
  quick = grid_lib.load_grid(GRID, quick=True)
  assert [v.name for v in quick.variants if v.trains] == [
      "rkl",
      "tip_soft_or_50",
  ]
  assert quick.seeds == (0,) and quick.quick
  assert quick.config(quick.variants[1], 0).total_steps < 10
  some = grid_lib.load_grid(GRID, names=["gkd", "rkl"])
  assert [v.name for v in some.variants] == ["gkd", "rkl"]
  with pytest.raises(ValueError, match=r"--methods: \['nope'\]"):
    grid_lib.load_grid(GRID, names=["nope"])


def test_claims_state_their_margins(grid):
  by_text = {c.text: c for c in grid.claims}
  dear = by_text["DEAR beats OPD by 2.5 points"]
  assert (dear.relation, dear.margin) == (">", 0.025)
  tip = next(c for c in grid.claims if c.a == "tip_entropy_50" and c.b == "rkl")
  assert (tip.relation, tip.margin, tip.memory_ratio) == ("~", 0.05, 0.53)
  # No claim passes on an interval straddling zero any more.
  assert all(c.relation != ">=" or c.margin > 0 for c in grid.claims)


_BAD_GRID = """
import importlib.util
from opd_jax.results import Variant
spec = importlib.util.spec_from_file_location("default_grid", {path!r})
d = importlib.util.module_from_spec(spec)
spec.loader.exec_module(d)
get_config, claims, SEEDS, TUNING = d.get_config, d.claims, d.SEEDS, d.TUNING


def variants():
  return d.variants() + [Variant("bad", "a bad row", {method!r}, {over!r})]
"""


@pytest.mark.parametrize(
    "method, overrides, message",
    [
        (
            "tip",
            {"tip.rhoo": 0.5},
            r"row 'bad': config.tip.rhoo: expected one of \[.*'rho'.*\],"
            r" got 'rhoo' \(in override 'tip.rhoo'\)",
        ),
        (
            "tip",
            {"tipp.rho": 0.5},
            r"row 'bad': config.tipp: expected one of \[.*'tip'.*\], got"
            r" 'tipp'",
        ),
        (
            "tipp",
            {},
            r"row 'bad': method: expected one of \[.*'tip'.*\], got 'tipp'",
        ),
        (
            "tip",
            {"dear.q": 0.0},
            r"row 'bad': config.dear.q: expected fields of its method"
            r" config.tip.\*, got a field of method 'dear'",
        ),
    ],
)
def test_a_row_naming_an_unknown_field_is_one_line(
    tmp_path, method, overrides, message
):
  path = tmp_path / "bad.py"
  path.write_text(
      _BAD_GRID.format(path=GRID, method=method, over=overrides),
      encoding="utf-8",
  )
  with pytest.raises(ValueError, match=message) as err:
    grid_lib.load_grid(str(path))
  text = str(err.value)
  assert "\n" not in text and text.startswith(f"--grid: {path}: row 'bad'")
