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


def _result(run, accuracy, rng, collapse=False):
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
  write_json(
      run.result_path,
      {
          "lr": run.lr,
          "split": run.split or "test",
          "eval": {"greedy": greedy, "samples": [[g, 1] for g in greedy]},
          "curve": curve,
          "done": {"seconds": 10.0, "cpu_seconds": 9.0, "load_avg": 1.0},
      },
  )


def test_report_shows_tuning_and_detectable_difference(tmp_path):
  out = str(tmp_path)
  grid = grid_lib.load_grid(GRID, names=["no_opd", "rkl", "tsd_kd"])
  rng = np.random.default_rng(0)
  by_lr = {
      "rkl": {6e-4: 0.4, 2e-3: 0.8, 6e-3: 0.6},
      "tsd_kd": {6e-4: 0.5, 2e-3: 0.1, 6e-3: 0.0},
  }
  for v in grid.variants:
    for run in runner.tuning_runs(grid, out, v):
      _result(run, by_lr[v.name][run.lr], rng, collapse=run.lr == 6e-3)
  rows = {v.name: v for v in grid.variants}
  assert runner.chosen_lr(grid, out, rows["rkl"]) == 2e-3
  assert runner.chosen_lr(grid, out, rows["tsd_kd"]) == 6e-4
  # Two of three seeds of rkl, all of the others: incomplete.
  for v in grid.variants:
    for run in runner.test_runs(grid, out, v):
      if v.name != "rkl" or run.seed < 2:
        _result(run, 0.5, rng)
  path = report.write_results(grid, out, "python scripts/reproduce.py ...")
  with open(path, encoding="utf-8") as f:
    text = f.read()
  assert "**Incomplete: 14 of 15 runs finished.**" in text
  assert "learning rate tuned per row over [0.0006, 0.002, 0.006]" in text
  assert "'validation' split" in text
  rows_md = text.split("## Claims")[0].splitlines()
  table = {l.split(" | ")[0]: l for l in rows_md if l[:2] == "| "}
  rkl = table["| full-token reverse KL (2 seeds)"]
  assert "0.0006: 0.400" in rkl and "**0.002: 0.800**" in rkl
  assert "0.006: 0.600 (collapsed)" in rkl and "(collapsed)" in rkl
  tsd = table["| TSD-KD"]
  assert "**0.0006: " in tsd and "| - |" not in tsd.split(" | ")[2]
  assert table["| SFT init (no OPD)"].split(" | ")[2] == "-"
  # Only tsd_kd has all its seeds among trained rows: no pair yet.
  assert "Detectable difference" not in text
  _result(runner.test_runs(grid, out, rows["rkl"])[2], 0.5, rng)
  report.write_results(grid, out, "python scripts/reproduce.py ...")
  with open(path, encoding="utf-8") as f:
    text = f.read()
  assert "Incomplete" not in text
  line = next(l for l in text.splitlines() if "Detectable difference" in l)
  assert "over the 1 pairs of trained rows" in line
  assert "| verdict | detectable (±) |" in text
  claim = next(l for l in text.splitlines() if "(tsd_kd >= gkd)" in l)
  assert claim.endswith("| - |")  # gkd not in this grid: not run
  with open(os.path.join(out, "summary.json"), encoding="utf-8") as f:
    summary = {r["name"]: r for r in json.load(f)["rows"]}
  assert summary["rkl"]["lr"] == 2e-3
  assert [t["lr"] for t in summary["rkl"]["tuning"]] == [6e-4, 2e-3, 6e-3]
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
