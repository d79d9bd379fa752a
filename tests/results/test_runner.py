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

import json
import os
import sys

from opd_jax.results import grid as grid_lib
from opd_jax.results import runner

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
          grid_lib.Variant("b", "b", "gkd", {"gkd.beta": 0.5}),
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
  with open(killed.done_path) as f:
    assert json.load(f)["seconds"] >= 0


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
