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
"""The grid runner's skip / retry / resume logic, with stand-in commands."""

import dataclasses
import json
import os
import sys

import pytest

from opd_jax.results import grid as grid_lib
from opd_jax.results import runner
from opd_jax.results.evaluate_run import write_json

# A stand-in training process: counts its calls in the workdir and fails
# (as a killed run would) while FAIL_FIRST names its run and it is called
# for the first time.
_TRAIN = r"""
import os, sys
workdir, name = sys.argv[1], sys.argv[2]
os.makedirs(workdir, exist_ok=True)
path = os.path.join(workdir, "calls")
calls = int(open(path).read()) + 1 if os.path.exists(path) else 1
open(path, "w").write(str(calls))
sys.exit(3 if name == os.environ.get("FAIL_FIRST") and calls == 1 else 0)
"""
_EVAL = r"""
import json, sys
json.dump({"greedy": [1, 0]}, open(sys.argv[1], "w"))
"""
_MEMORY = r"""
import json, os, sys
for path in sys.argv[1:]:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  json.dump({"temp_bytes": 1}, open(path, "w"))
"""


def _grid():
  return grid_lib.Grid(
      path="unused.py",
      variants=(
          grid_lib.Variant("init", "init", None),
          grid_lib.Variant("a", "a", "rkl"),
          grid_lib.Variant("b", "b", "gkd", {"gkd.loss_pass.jsd_beta": 0.5}),
      ),
      seeds=(0, 1),
      evaluation=grid_lib.EvalSpec(),
      memory=grid_lib.MemorySpec(),
      claims=(),
  )


def _commands(out, fail_first=""):
  py = sys.executable
  return runner.Commands(
      train=lambda r: [py, "-c", _TRAIN, r.workdir, r.name],
      evaluate=lambda r: [py, "-c", _EVAL, r.eval_path],
      memory=lambda vs: [
          py,
          "-c",
          _MEMORY,
          *[runner.memory_path(out, v) for v in vs],
      ],
      env={**os.environ, "FAIL_FIRST": fail_first},
  )


def _calls(run):
  with open(os.path.join(run.workdir, "calls")) as f:
    return int(f.read())


def test_failed_run_is_retried_and_finished_runs_skipped(tmp_path):
  out, grid = str(tmp_path), _grid()
  logs = []
  outcomes = runner.execute_grid(
      grid, out, _commands(out, "a/seed_1"), log=logs.append
  )
  status = {o.name: o.status for o in outcomes}
  assert status == {
      "init/seed_0": "done",
      "a/seed_0": "done",
      "b/seed_0": "done",
      "init/seed_1": "done",
      "a/seed_1": "failed",
      "b/seed_1": "done",
      "memory/a": "done",
      "memory/b": "done",
  }
  runs = {r.name: r for r in runner.grid_runs(grid, out)}
  killed = runs["a/seed_1"]
  assert not killed.is_done() and not os.path.exists(killed.eval_path)
  assert "train exited with 3" in next(
      o.error for o in outcomes if o.status == "failed"
  )
  assert "train exited with 3" in killed.failure()
  assert runs["init/seed_0"].workdir is None  # evaluated, never trained
  assert any("min left" in line for line in logs)

  outcomes = runner.execute_grid(
      grid, out, _commands(out, "a/seed_1"), log=logs.append
  )
  status = {o.name: o.status for o in outcomes}
  assert status["a/seed_1"] == "done"
  assert all(s == "skipped" for n, s in status.items() if n != "a/seed_1")
  # The killed run restarted in its own workdir; the others never reran.
  assert _calls(killed) == 2
  assert _calls(runs["a/seed_0"]) == 1
  assert killed.failure() is None
  with open(killed.result_path) as f:
    result = json.load(f)
  assert result["done"]["seconds"] >= 0
  assert result["eval"] == {"greedy": [1, 0]} and result["split"] == "test"
  assert not os.path.exists(killed.eval_path)


# A stand-in evaluation whose greedy accuracy is set by the learning rate
# in its argv: 0.002 scores best, 0.006 ties 0.0006 on greedy.
_EVAL_BY_LR = r"""
import json, sys
path, lr = sys.argv[1], sys.argv[2]
greedy = {"0.0006": [1, 0, 0, 0], "0.002": [1, 1, 1, 0],
          "0.006": [1, 0, 0, 0], "0.018": [1, 0, 0, 0]}.get(lr, [0, 1, 0, 1])
samples = {"0.0006": [[1, 1]] * 4, "0.006": [[0, 0]] * 4,
           "0.018": [[0, 0]] * 4}.get(lr, [[1]] * 4)
json.dump({"greedy": greedy, "samples": samples}, open(path, "w"))
"""


def _tuned_grid(**tuning):
  return grid_lib.Grid(
      path="unused.py",
      variants=(
          grid_lib.Variant("init", "init", None),
          grid_lib.Variant("a", "a", "rkl"),
      ),
      seeds=(0, 1),
      evaluation=grid_lib.EvalSpec(),
      memory=grid_lib.MemorySpec(),
      claims=(),
      tuning=grid_lib.TuningSpec(**tuning),
  )


def _tuned_commands(out, calls):
  py = sys.executable

  def train(r):
    calls.append((r.name, r.lr, r.split))
    return [py, "-c", _TRAIN, r.workdir, r.name]

  return runner.Commands(
      train=train,
      evaluate=lambda r: [py, "-c", _EVAL_BY_LR, r.eval_path, repr(r.lr)],
      memory=lambda vs: [
          py,
          "-c",
          _MEMORY,
          *[runner.memory_path(out, v) for v in vs],
      ],
      env=dict(os.environ),
  )


def test_tuning_then_seeds_at_the_best_rate_and_resume_from_results(
    tmp_path,
):
  out = str(tmp_path / "grid")
  grid = _tuned_grid(learning_rates=(6e-4, 2e-3, 6e-3, 1.8e-2), seed=100)
  calls, logs = [], []
  runner.execute_grid(grid, out, _tuned_commands(out, calls), log=logs.append)
  # The row's four tuning runs (tuning seed, validation split), then its
  # seeds at the best rate (inside the grid: no rate past an edge) on the
  # test split; the untrained row only evaluates.
  assert calls == [
      ("a/tune/lr_0.0006", 6e-4, "validation"),
      ("a/tune/lr_0.002", 2e-3, "validation"),
      ("a/tune/lr_0.006", 6e-3, "validation"),
      ("a/tune/lr_0.018", 1.8e-2, "validation"),
      ("a/seed_0", 2e-3, None),
      ("a/seed_1", 2e-3, None),
  ]
  assert "8 runs (4 tuning), 0 already done, 8 to run" in logs[0]
  assert any("0 run(s) left" in line for line in logs)
  variant = grid.variants[1]
  assert runner.chosen_lr(grid, out, variant) == 2e-3
  results = [r.result() for r in runner.all_runs(grid, out)]
  assert [r["lr"] for r in results] == [
      None,
      None,
      6e-4,
      2e-3,
      6e-3,
      1.8e-2,
  ] + [2e-3] * 2
  # Each result records its CPU and s/step (timings compare within a CPU).
  done = results[-1]["done"]
  assert done["cpu"] == runner.cpu_model() and done["cpu"]
  assert "step_time" in done
  # Only the result files travel (a commit of the results directory):
  # another machine has everything done.
  moved = str(tmp_path / "elsewhere")
  for run in runner.all_runs(grid, out):
    dest = run.result_path.replace(out, moved)
    os.makedirs(os.path.dirname(dest))
    os.replace(run.result_path, dest)
  calls.clear()
  logs.clear()
  outcomes = runner.execute_grid(
      grid, moved, _tuned_commands(moved, calls), log=logs.append
  )
  assert not calls and "8 already done, 0 to run" in logs[0]
  assert all(o.status == "skipped" for o in outcomes if "/seed" in o.name)


def test_ties_go_to_pass_at_k_then_the_smaller_rate(tmp_path):
  out = str(tmp_path)
  variant = grid_lib.Variant("a", "a", "rkl")
  # 0.0006 and 0.018 tie on greedy; 0.0006's pass@k is higher (no rate
  # past an edge here: edge_steps=0).
  grid = _tuned_grid(learning_rates=(6e-4, 1.8e-2), seed=7, edge_steps=0)
  runner.execute_grid(grid, out, _tuned_commands(out, []), log=lambda _: 0)
  assert runner.chosen_lr(grid, out, variant) == 6e-4
  # Equal on both: the smaller rate.
  grid = _tuned_grid(learning_rates=(3e-2, 1e-3), seed=7, edge_steps=0)
  runner.execute_grid(grid, out, _tuned_commands(out, []), log=lambda _: 0)
  assert runner.chosen_lr(grid, out, variant) == 1e-3


def test_a_row_with_a_failed_tuning_run_waits(tmp_path):
  out = str(tmp_path)
  grid = _tuned_grid(learning_rates=(1e-3, 3e-2), seed=7)
  calls, logs = [], []
  cmds = _tuned_commands(out, calls)
  cmds = dataclasses.replace(
      cmds, env={**cmds.env, "FAIL_FIRST": "a/tune/lr_0.001"}
  )
  runner.execute_grid(grid, out, cmds, log=logs.append)
  assert [c[0] for c in calls] == ["a/tune/lr_0.001", "a/tune/lr_0.03"]
  assert any("a: not tuned" in line for line in logs)
  assert runner.chosen_lr(grid, out, grid.variants[1]) is None


def test_tuning_spec_refusals():
  with pytest.raises(ValueError, match="TUNING.learning_rates"):
    grid_lib.TuningSpec(learning_rates=(1e-3, 1e-3))
  with pytest.raises(ValueError, match="TUNING.learning_rates"):
    grid_lib.TuningSpec(learning_rates=(0.0, 1e-3))
  with pytest.raises(ValueError, match="TUNING.split"):
    grid_lib.TuningSpec(learning_rates=(1e-3, 3e-2), split="test")
  assert not grid_lib.TuningSpec(learning_rates=(1e-3,)).enabled
  # The protocol's span: at least 30x.
  with pytest.raises(
      ValueError,
      match=r"TUNING.learning_rates: expected a span >= 30x, got 10x",
  ):
    grid_lib.TuningSpec(learning_rates=(6e-4, 2e-3, 6e-3))
  assert grid_lib.TuningSpec(learning_rates=(2e-4, 6e-3)).enabled
  with pytest.raises(ValueError, match="edge_factor"):
    grid_lib.TuningSpec(learning_rates=(1e-3, 3e-2), edge_factor=1.0)


# Validation accuracy 0 at every rate of the grid, 1 below 1e-4: the best
# rate keeps sitting on the low edge.
_EVAL_LOW = r"""
import json, sys
path, lr = sys.argv[1], float(sys.argv[2] if sys.argv[2] != "None" else 1)
g = [1, 1] if lr < 1e-4 else [0, 0]
json.dump({"greedy": g, "samples": [[x] for x in g]}, open(path, "w"))
"""


def test_a_best_rate_on_an_edge_gets_rates_past_it(tmp_path):
  out = str(tmp_path)
  grid = _tuned_grid(learning_rates=(2e-4, 6e-4, 2e-3, 6e-3), seed=7)
  calls = []
  cmds = dataclasses.replace(
      _tuned_commands(out, calls),
      evaluate=lambda r: [
          sys.executable,
          "-c",
          _EVAL_LOW,
          r.eval_path,
          repr(r.lr),
      ],
  )
  runner.execute_grid(grid, out, cmds, log=lambda _: 0)
  # All four tie at 0 (the smallest wins, an edge): 2e-4 / 3 = 6.7e-5
  # scores 1 and is the new edge: 2.2e-5 ties it and wins (smaller); two
  # steps taken, the edge stays and the seeds run at 2.2e-5.
  assert [c[0] for c in calls] == [
      "a/tune/lr_0.0002",
      "a/tune/lr_0.0006",
      "a/tune/lr_0.002",
      "a/tune/lr_0.006",
      "a/tune/lr_6.7e-05",
      "a/tune/lr_2.2e-05",
      "a/seed_0",
      "a/seed_1",
  ]
  sched = runner.row_schedule(grid, out, grid.variants[1])
  assert sched.complete and sched.edge == "low" and sched.at_limit
  assert runner.chosen_lr(grid, out, grid.variants[1]) == 2.2e-5
  assert [r.lr for r in runner.test_runs(grid, out, grid.variants[1])] == [
      2.2e-5
  ] * 2


def test_test_runs_at_another_rate_are_redone(tmp_path):
  out = str(tmp_path)
  grid = _tuned_grid(learning_rates=(2e-4, 6e-3), seed=7, edge_steps=0)
  variant = grid.variants[1]
  run = runner.Run(variant, 0, out, 2e-4)
  os.makedirs(os.path.join(run.dir, "train"))
  write_json(run.result_path, {"lr": 2e-4, "eval": {}, "done": {}})
  logs = []
  runner.discard_other_rate([run], 6e-3, logs.append)
  assert not run.is_done() and not os.path.isdir(run.workdir)
  assert os.path.isfile(os.path.join(run.dir, "result.stale.json"))
  assert "trained at lr 0.0002, the row's best is now 0.006" in logs[0]
  # At the same rate (up to a JSON round trip) nothing moves.
  write_json(run.result_path, {"lr": 6e-3 * (1 + 1e-15), "eval": {}})
  runner.discard_other_rate([run], 6e-3, logs.append)
  assert run.is_done() and len(logs) == 1


def test_curve_keeps_the_reported_keys(tmp_path):
  rows = [
      {"step": 1, "loss/total": 1.234567891, "train/lr": 0.1, "x": 3},
      {"step": 2, "eval/accuracy": 0.5, "rollout/eos_rate": 1.0},
      {"note": "no step"},
  ]
  with open(tmp_path / "metrics.jsonl", "w") as f:
    f.write("\n".join(json.dumps(r) for r in rows))
  assert runner.curve(str(tmp_path)) == [
      {"step": 1, "loss/total": 1.2346},
      {"step": 2, "eval/accuracy": 0.5, "rollout/eos_rate": 1.0},
  ]
  assert runner.curve(None) == []


def test_estimate_uses_each_variant_else_the_training_mean(tmp_path):
  runs = runner.grid_runs(_grid(), str(tmp_path))
  # Measured: init/seed_0 2 s, a/seed_0 10 s, b/seed_0 30 s. Pending:
  # init/seed_1 (2), a/seed_1 (10), b/seed_1 (30) -> 42 s on one job.
  measured = {"init/seed_0": 2.0, "a/seed_0": 10.0, "b/seed_0": 30.0}
  assert runner.estimate_seconds(runs, measured, 1) == 42.0
  assert runner.estimate_seconds(runs, measured, 2) == 21.0
  # Only a measured: b at the training mean (10), init at 0.
  assert runner.estimate_seconds(runs, {"a/seed_0": 10.0}, 1) == 30.0
  assert runner.estimate_seconds(runs, {"init/seed_0": 2.0}, 1) is None


def test_estimate_scales_earlier_times_to_this_machine(tmp_path):
  # Committed times from a machine 3x slower: a/seed_0 30 s, b/seed_0 90 s.
  # This invocation runs a/seed_1 in 10 s, a third of what a's mean
  # predicted, so b/seed_1 is projected at 30 s, not 90.
  runs = runner.grid_runs(_grid(), str(tmp_path))
  prior = {"a/seed_0": 30.0, "b/seed_0": 90.0}
  fresh = {"a/seed_1": 10.0}
  assert runner.machine_speed(runs, prior, fresh) == pytest.approx(1 / 3)
  times, speed = runner.calibrated(runs, prior, fresh)
  assert speed == pytest.approx(1 / 3)
  assert times == pytest.approx(
      {"a/seed_0": 10.0, "b/seed_0": 30.0, "a/seed_1": 10.0}
  )
  assert runner.estimate_seconds(runs, times, 1) == pytest.approx(30.0)
  # Nothing fresh, or nothing comparable: the recorded times as they are.
  assert runner.machine_speed(runs, prior, {}) == 1.0
  assert runner.machine_speed(runs, {}, fresh) == 1.0


def test_variant_flags_and_config():
  v = grid_lib.Variant(
      "x", "x", "tsd_kd", {"tsd_kd.gate": False, "tip.rho": 0.2}
  )
  assert v.flags() == [
      "--config.method=tsd_kd",
      "--config.tsd_kd.gate=false",
      "--config.tip.rho=0.2",
  ]
  from opd_jax.trainer.config import default_config

  c = v.apply(default_config())
  assert (c.method, c.tsd_kd.gate, c.tip.rho) == ("tsd_kd", False, 0.2)
  bad = grid_lib.Variant("y", "y", "tip", {"tip.rhoo": 0.2})
  try:
    bad.apply(default_config())
  except KeyError as e:
    assert "config.tip.rhoo" in str(e)
  else:
    raise AssertionError("an unknown field must fail")


def test_results_of_other_inputs_are_stale_and_redone(tmp_path):
  out, grid = str(tmp_path), _grid()
  digest = {"value": "aaa"}
  cmds = dataclasses.replace(_commands(out), inputs=lambda r: digest["value"])
  runner.execute_grid(grid, out, cmds, log=lambda _: 0)
  run = runner.grid_runs(grid, out)[1]  # a/seed_0
  assert run.result()["inputs"] == "aaa" and _calls(run) == 1
  logs = []
  outcomes = runner.execute_grid(grid, out, cmds, log=logs.append)
  assert all(o.status == "skipped" for o in outcomes)
  digest["value"] = "bbb"  # e.g. the student checkpoint was regenerated
  outcomes = runner.execute_grid(grid, out, cmds, log=logs.append)
  assert all(o.status == "done" for o in outcomes if "seed" in o.name)
  assert any(
      "a/seed_0: stale (its inputs changed: aaa -> bbb)" in l for l in logs
  )
  # The old workdir was removed: training restarted, not resumed.
  assert _calls(run) == 1 and run.result()["inputs"] == "bbb"
  assert os.path.isfile(run.result_path.replace(".json", ".stale.json"))


_DIAGNOSE = r"""
import json, os, sys
out, fail = sys.argv[1], sys.argv[2] == "fail"
if fail:
  print("diagnose: no questions"); sys.exit(2)
os.makedirs(out)
json.dump({"objectives": {}}, open(os.path.join(out, "summary.json"), "w"))
"""


def test_the_alignment_measurement_runs_once_after_the_rows(tmp_path):
  out = str(tmp_path)
  grid = dataclasses.replace(
      _grid(), diagnose=grid_lib.DiagnoseSpec(num_questions=2)
  )
  py = sys.executable
  # Not enabled, or no command: nothing to do.
  assert runner.execute_diagnose(_grid(), out, _commands(out)) is None
  assert runner.execute_diagnose(grid, out, _commands(out)) is None
  failing = dataclasses.replace(
      _commands(out), diagnose=lambda d: [py, "-c", _DIAGNOSE, d, "fail"]
  )
  failed = runner.execute_diagnose(grid, out, failing)
  assert failed.status == "failed" and "diagnose: no questions" in failed.error
  commands = dataclasses.replace(
      _commands(out), diagnose=lambda d: [py, "-c", _DIAGNOSE, d, "ok"]
  )
  outcomes = runner.execute_grid(grid, out, commands, log=lambda _: None)
  assert outcomes[-1].name == "diagnose" and outcomes[-1].status == "done"
  assert os.path.isfile(runner.diagnose_summary_path(out))
  again = runner.execute_grid(grid, out, commands, log=lambda _: None)
  assert again[-1].status == "skipped"
