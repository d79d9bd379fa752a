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
"""RESULTS.md of a tuned grid from result.json files alone: each row's
chosen rate and the other rates' validation scores, the detectable
difference under the table and beside each verdict."""

import json
import os

import numpy as np

from opd_jax.results import claims as claims_lib
from opd_jax.results import grid as grid_lib
from opd_jax.results import report
from opd_jax.results import runner
from opd_jax.results.evaluate_run import write_json

REPO = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)
GRID = os.path.join(REPO, "configs", "grids", "default.py")
Q = 40


def _result(run, accuracy, rng, collapse=False, lr="run", cpu=None):
  ones = round(accuracy * Q)
  greedy = rng.permutation([1] * ones + [0] * (Q - ones)).tolist()
  curve = [
      {
          "step": s,
          "rollout/eos_rate": 0.0 if collapse else 1.0,
          "rollout/len_mean": 5.0,
          "select/frac": 1.0,
          "train/step_time": 0.5,
      }
      for s in range(1, 21)
  ]
  done = {"seconds": 10.0, "cpu_seconds": 9.0, "load_avg": 1.0}
  if cpu:
    done["cpu"] = cpu
  write_json(
      run.result_path,
      {
          "lr": run.lr if lr == "run" else lr,
          "split": run.split or "test",
          "eval": {"greedy": greedy, "samples": [[g, 1] for g in greedy]},
          "curve": curve,
          "done": done,
      },
  )


def test_report_shows_tuning_and_detectable_difference(tmp_path):
  out = str(tmp_path)
  grid = grid_lib.load_grid(GRID, names=["no_opd", "rkl", "tsd_kd"])
  rng = np.random.default_rng(0)
  by_lr = {
      "rkl": {2e-4: 0.2, 6e-4: 0.4, 2e-3: 0.8, 6e-3: 0.6},
      # Best at the grid's smallest rate: tuned at an edge.
      "tsd_kd": {2e-4: 0.6, 6e-4: 0.5, 2e-3: 0.1, 6e-3: 0.0},
  }
  for v in grid.variants:
    for run in runner.tuning_runs(grid, out, v):
      _result(run, by_lr[v.name][run.lr], rng, collapse=run.lr == 6e-3)
  rows = {v.name: v for v in grid.variants}
  assert runner.chosen_lr(grid, out, rows["rkl"]) == 2e-3
  # tsd_kd waits for the rate past its edge (2e-4 / 3).
  assert runner.chosen_lr(grid, out, rows["tsd_kd"]) is None
  assert [r.lr for r in runner.tuning_runs(grid, out, rows["tsd_kd"])] == [
      6.7e-5,
      2e-4,
      6e-4,
      2e-3,
      6e-3,
  ]
  # Two of three seeds of rkl, all of the others (tsd_kd's at 2e-4, as
  # before the extension was scheduled): incomplete.
  for v in grid.variants:
    for run in runner.test_runs(grid, out, v):
      if v.name != "rkl" or run.seed < 2:
        _result(run, 0.5, rng, lr=2e-4 if v.name == "tsd_kd" else "run")
  path = report.write_results(grid, out, "python scripts/reproduce.py ...")
  with open(path, encoding="utf-8") as f:
    text = f.read()
  assert "**Incomplete: 16 of 18 runs finished.**" in text
  assert (
      "learning rate tuned per row over [0.0002, 0.0006, 0.002, 0.006] (30x"
      in text
  )
  assert "'validation' split" in text
  rows_md = text.split("## Claims")[0].splitlines()
  table = {l.split(" | ")[0]: l for l in rows_md if l[:2] == "| "}
  rkl = table["| full-token reverse KL (2 seeds)"]
  assert "0.0006: 0.400" in rkl and "**0.002: 0.800**" in rkl
  assert "0.006: 0.600 (collapsed)" in rkl and "(collapsed)" in rkl
  assert "edge" not in rkl
  tsd = table["| TSD-KD"]
  assert "6.7e-05: pending; **0.0002: 0.600**" in tsd
  assert (
      "(*tuned at an edge: best rate 0.0002 is the smallest of those run"
      " (0.0002-0.006)*)"
      in tsd
  )
  assert table["| SFT init (no OPD)"].split(" | ")[2] == "-"
  # The s/step column says which CPU (none recorded here: '?').
  assert "| 0.500 (?) |" in rkl
  assert "s/step by CPU: ? = unknown CPU (8 runs)" in text
  # Only tsd_kd has all its seeds among trained rows: no pair yet.
  assert "Detectable difference" not in text
  _result(runner.test_runs(grid, out, rows["rkl"])[2], 0.5, rng)
  report.write_results(grid, out, "python scripts/reproduce.py ...")
  with open(path, encoding="utf-8") as f:
    text = f.read()
  # tsd_kd's rate past its edge is still to run.
  assert "**Incomplete: 17 of 18 runs finished.**" in text
  line = next(l for l in text.splitlines() if "Detectable difference" in l)
  assert "over the 1 pairs of trained rows" in line
  assert "| verdict | detectable (±) |" in text
  claim = next(l for l in text.splitlines() if "(tsd_kd > gkd)" in l)
  assert claim.endswith("| - |")  # gkd not in this grid: not run
  with open(os.path.join(out, "summary.json"), encoding="utf-8") as f:
    summary = {r["name"]: r for r in json.load(f)["rows"]}
  assert summary["rkl"]["lr"] == 2e-3
  assert [t["lr"] for t in summary["rkl"]["tuning"]] == [
      2e-4,
      6e-4,
      2e-3,
      6e-3,
  ]
  assert summary["tsd_kd"]["unsettled"].startswith("tuned at an edge")
  assert summary["tsd_kd"]["trained_lr"] == [2e-4]
  # The grid's alignment measurement, not run here, is named as such.
  claim = next(l for l in text.splitlines() if l.startswith("| Unmasking |"))
  assert "scripts/diagnose.py not run" in claim and "**not run**" in claim
  assert claims_lib.ALIGNMENT_RULE in text
  setup = next(l for l in text.splitlines() if "- Gradient alignment" in l)
  assert "--student=assets/demo/student_init" in setup
  assert "--out=diagnose" in setup and REPO not in setup
  alignment = {
      "questions": 4,
      "rollouts": 64,
      "objectives": {
          "rkl": {
              "incorrect_vs_correct": {
                  "n": [9, 3],
                  "mean": [0.5, 0.1],
                  "mannwhitney_p": 0.02,
              },
              "within_question": {
                  "questions": 3,
                  "mean_difference": 0.4,
                  "wilcoxon_p": 0.01,
              },
          }
      },
  }
  write_json(runner.diagnose_summary_path(out), alignment)
  report.write_results(grid, out, "python scripts/reproduce.py ...")
  with open(path, encoding="utf-8") as f:
    claim = next(l for l in f if l.startswith("| Unmasking |"))
  assert "Wilcoxon p 0.01 | **holds** |" in claim


def test_rollouts_table_shows_how_each_row_changed(tmp_path):
  out = str(tmp_path)
  grid = grid_lib.load_grid(GRID, names=["no_opd", "rkl", "tsd_kd"])
  rows = {v.name: v for v in grid.variants}
  # tsd_kd: length 16 -> 24 (the cap), EOS rate 1 -> 0, entropy 0.2 ->
  # 0.4 over 30 steps; two seeds whose loss terms differ.
  for run in runner.test_runs(grid, out, rows["tsd_kd"])[:2]:
    curve = [
        {
            "step": s,
            "rollout/len_mean": 16.0 if s <= 10 else 24.0,
            "rollout/eos_rate": 1.0 if s <= 10 else 0.0,
            "entropy/student": 0.2 if s <= 10 else 0.4,
            "loss/em": 0.01 * (run.seed + 1),
            "loss/indirect": 14.5,
            "loss/total": 15.0,
        }
        for s in range(1, 31)
    ]
    write_json(
        run.result_path,
        {
            "eval": {"greedy": [0, 1], "samples": [[0], [1]]},
            "curve": curve,
            "done": {"seconds": 1.0, "cpu_seconds": 1.0, "load_avg": 1.0},
        },
    )
  results = report.collect(grid, out)
  lines = report.dynamics_table(results)
  assert lines[0].startswith("| row | response length (tokens) | EOS rate |")
  (tsd,) = [l for l in lines if l.startswith("| TSD-KD |")]
  assert tsd == (
      "| TSD-KD | 16.0 -> 24.0 | 1.00 -> 0.00 | 0.200 -> 0.400 |"
      " em 0.015, indirect 14.5 |"
  )
  # Untrained or unrun rows have no line.
  assert len(lines) == 3
  path = report.write_results(grid, out, "python scripts/reproduce.py ...")
  with open(path, encoding="utf-8") as f:
    text = f.read()
  assert tsd in text and "## Findings" not in text
  with open(os.path.join(out, report.FINDINGS_FILE), "w") as f:
    f.write("TSD-KD's length reaches the cap.\n")
  report.write_results(grid, out, "python scripts/reproduce.py ...")
  with open(path, encoding="utf-8") as f:
    text = f.read()
  assert text.rstrip().endswith("TSD-KD's length reaches the cap.")
  assert "## Findings" in text


def test_times_compare_within_one_cpu(tmp_path):
  out = str(tmp_path)
  grid = grid_lib.load_grid(GRID, names=["no_opd", "rkl"])
  rng = np.random.default_rng(1)
  rkl = grid.variants[1]
  for run in runner.tuning_runs(grid, out, rkl):
    _result(run, 0.8 if run.lr == 2e-3 else 0.2, rng)
  cpus = ["Zen 5 EPYC", "Zen 5 EPYC", None]
  for run, cpu in zip(runner.test_runs(grid, out, rkl), cpus):
    _result(run, 0.5, rng, cpu=cpu)
  results = report.collect(grid, out)
  (row,) = [r for r in results if r.variant.name == "rkl"]
  assert row.step_times() == {"Zen 5 EPYC": 0.5, runner.UNKNOWN_CPU: 0.5}
  tags = report.cpu_tags(results)
  assert tags == {"Zen 5 EPYC": "A", runner.UNKNOWN_CPU: "?"}
  line = next(l for l in report.results_table(results, 4) if "reverse KL" in l)
  assert "| 0.500 (A); 0.500 (?) |" in line
  note = report.cpu_note(results)
  assert note.startswith("s/step by CPU: A = Zen 5 EPYC (2 runs); ? =")
  assert "not comparable" in note


def _claim_result(paper, text, verdict, statistic="diff +0.1"):
  claim = claims_lib.Claim(paper, text, "a", ">", "b")
  return claims_lib.ClaimResult(claim, "", statistic, verdict)


def test_claims_side_by_side_per_regime():
  default = [
      _claim_result("TIP", "Q3 matches", claims_lib.EDGE),
      _claim_result("TOPD", "TOPD beats OPD", claims_lib.FAILS),
  ]
  countdown = [
      _claim_result("TOPD", "TOPD beats OPD", claims_lib.HOLDS, "diff +0.2"),
      _claim_result("DEAR", "DEAR beats OPD", claims_lib.INCONCLUSIVE),
  ]
  lines = report.regimes_table({"default": default, "countdown": countdown})
  assert lines[0] == "| paper | claim | default | countdown |"
  assert lines[2] == (
      "| TIP | Q3 matches | **inconclusive (edge)** (diff +0.1) | - |"
  )
  assert lines[3] == (
      "| TOPD | TOPD beats OPD | **fails** (diff +0.1) | **holds** (diff"
      " +0.2) |"
  )
  assert lines[4] == (
      "| DEAR | DEAR beats OPD | - | **inconclusive** (diff +0.1) |"
  )
  # One regime works too.
  assert len(report.regimes_table({"default": default})) == 4


def test_write_regimes_from_grids(tmp_path):
  grid = grid_lib.load_grid(GRID, names=["no_opd", "rkl"])
  rng = np.random.default_rng(2)
  outs = []
  for name, acc in (("one", 0.9), ("two", 0.1)):
    out = str(tmp_path / name)
    outs.append(out)
    for v in grid.variants:
      for run in runner.tuning_runs(grid, out, v):
        _result(run, 0.8 if run.lr == 2e-3 else 0.2, rng)
      for run in runner.test_runs(grid, out, v):
        _result(run, acc if v.trains else 0.5, rng)
  path = report.write_regimes(
      [("one", grid, outs[0]), ("two", grid, outs[1])],
      str(tmp_path / "REGIMES.md"),
  )
  with open(path, encoding="utf-8") as f:
    text = f.read()
  line = next(l for l in text.splitlines() if l.startswith("| OPD |"))
  cells = line.split(" | ")
  assert cells[2].startswith("**holds**") and cells[3].startswith("**fails**")
  assert claims_lib.RULES in text
