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
r"""Runs a results grid and writes RESULTS.md (table, curves, claims).

  python scripts/reproduce.py --grid=configs/grids/default.py \
      --out=results/default [--methods=rkl,gkd] [--jobs=2] [--quick]

Every (variant, seed) trains through `scripts/train.py --config=GRID
--workdir=OUT/runs/NAME/seed_S/train --config.*=...` in its own process
(a crash or a kill loses one run; rerunning resumes it from its newest
checkpoint), then is evaluated in another process on the same held-out
questions; a run is finished once its result.json exists (its final
evaluation and curve, a few tens of KB) and is skipped from then on. With
the grid's TUNING rates, each trained row first runs once per rate on the
validation split (OUT/runs/NAME/tune/lr_X/) and its seeds then run on the
test split at its best rate. Each variant's step memory at the grid's large
shape is compiled last (OUT/memory/), then the grid's DIAGNOSE measurement
(scripts/diagnose.py on its pair, OUT/diagnose/). RESULTS.md, curves.png and
summary.json go to --out. --quick runs the grid's QUICK settings (a smoke
test). Committing OUT's result.json and memory/*.json files (not train/)
lets another machine resume a partly finished grid.
"""

import dataclasses
import os
import shlex
import sys

from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(REPO, "scripts", "train.py")
DIAGNOSE = os.path.join(REPO, "scripts", "diagnose.py")

_GRID = flags.DEFINE_string("grid", None, "Grid file (configs/grids/*.py).")
_OUT = flags.DEFINE_string("out", None, "Output directory.")
_METHODS = flags.DEFINE_list("methods", [], "Variants to run (default all).")
_SEEDS = flags.DEFINE_list("seeds", [], "Seeds to run (default: the grid's).")
_JOBS = flags.DEFINE_integer("jobs", 1, "Runs at once.")
_QUICK = flags.DEFINE_bool("quick", False, "The grid's QUICK smoke test.")
_REPORT_ONLY = flags.DEFINE_bool(
    "report_only",
    False,
    "Write RESULTS.md from the finished runs; run nothing.",
)
# Internal: the worker processes this script starts for one run.
_WORKER = flags.DEFINE_enum(
    "worker",
    None,
    ["evaluate", "memory"],
    "(internal) evaluate one run / measure memory.",
)
_VARIANTS = flags.DEFINE_list("variants", [], "(internal) variant names.")
_SEED = flags.DEFINE_integer("seed", 0, "(internal) seed.")
_LR = flags.DEFINE_float("lr", None, "(internal) the run's learning rate.")
_SPLIT = flags.DEFINE_string("split", None, "(internal) a tuning run's split.")


def _env():
  env = dict(os.environ)
  path = env.get("PYTHONPATH", "")
  env["PYTHONPATH"] = REPO + (os.pathsep + path if path else "")
  env.setdefault(
      "JAX_COMPILATION_CACHE_DIR", os.path.join(REPO, ".cache", "jax")
  )
  env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  return env


def _commands(grid, out):
  from opd_jax.results import runner  # pylint: disable=g-import-not-at-top

  me = [
      sys.executable,
      os.path.abspath(__file__),
      f"--grid={grid.path}",
      f"--out={out}",
  ] + (["--quick"] if _QUICK.value else [])
  return runner.Commands(
      train=lambda r: [
          sys.executable,
          TRAIN,
          f"--config={grid.path}",
          f"--workdir={r.workdir}",
          *grid.run_flags(r.variant, r.seed, lr=r.lr, split=r.split),
      ],
      evaluate=lambda r: me
      + [
          "--worker=evaluate",
          f"--variants={r.variant.name}",
          f"--seed={r.seed}",
      ]
      + ([f"--lr={r.lr!r}"] if r.lr is not None else [])
      + ([f"--split={r.split}"] if r.split else []),
      memory=lambda vs: me
      + ["--worker=memory", "--variants=" + ",".join(v.name for v in vs)],
      env=_env(),
      inputs=lambda r: _inputs_digest(grid.config(r.variant, r.seed)),
      diagnose=lambda d: [sys.executable, DIAGNOSE, *grid.diagnose_flags(d)],
  )


_DIGESTS = {}


def _inputs_digest(c):
  """sha256 (12 hex digits) of the student's and teacher's checkpoint files:
  a run started from other weights is stale."""
  import hashlib  # pylint: disable=g-import-not-at-top

  dirs = [c.student] + ([c.teacher] if c.teacher not in ("", "self") else [])
  key = tuple(dirs)
  if key not in _DIGESTS:
    h = hashlib.sha256()
    for d in dirs:
      for name in sorted(os.listdir(d)):
        path = os.path.join(d, name)
        if os.path.isfile(path):
          h.update(name.encode())
          with open(path, "rb") as f:
            h.update(hashlib.sha256(f.read()).digest())
      h.update(b"|")
    _DIGESTS[key] = h.hexdigest()[:12]
  return _DIGESTS[key]


def _worker(grid, out):
  # pylint: disable=g-import-not-at-top
  from opd_jax.results import evaluate_run, memory, runner

  if _WORKER.value == "evaluate":
    variant = grid.variants[0]
    run = runner.Run(variant, _SEED.value, out, _LR.value, _SPLIT.value)
    config = grid.config(variant, _SEED.value, lr=_LR.value, split=_SPLIT.value)
    result = evaluate_run.evaluate_run(config, run.workdir, grid.evaluation)
    evaluate_run.write_json(run.eval_path, result)
    print(
        f"{run.name}: greedy accuracy"
        f" {sum(result['greedy']) / result['questions']:.3f}"
    )
    return
  for variant in grid.variants:  # each written as soon as it is known
    result = memory.step_memory(
        grid.config(variant, grid.seeds[0]), grid.memory
    )
    evaluate_run.write_json(runner.memory_path(out, variant), result)
    print(
        f"memory/{variant.name}: {result['temp_bytes'] / 2**30:.2f} GiB"
        f" temporaries ({result['compile_seconds']} s)",
        flush=True,
    )


def main(argv):
  if _JOBS.value < 1:
    raise ValueError(f"--jobs: expected >= 1, got {_JOBS.value}")
  # pylint: disable=g-import-not-at-top
  from opd_jax.results import grid as grid_lib, report, runner

  out = os.path.abspath(_OUT.value)
  if _WORKER.value:
    grid = grid_lib.load_grid(
        _GRID.value, names=_VARIANTS.value, quick=_QUICK.value
    )
    _worker(grid, out)
    return
  grid = grid_lib.load_grid(
      _GRID.value, names=_METHODS.value, quick=_QUICK.value
  )
  if _SEEDS.value:
    grid = dataclasses.replace(grid, seeds=tuple(int(s) for s in _SEEDS.value))
  outcomes = []
  if not _REPORT_ONLY.value:
    runner.stop_on_signals()
    outcomes = runner.execute_grid(
        grid, out, _commands(grid, out), jobs=_JOBS.value
    )
  # The command that regenerates everything (finished runs are reused),
  # whether or not this invocation only rewrote the report.
  args = [
      a
      for a in sys.argv[1:]
      if a not in ("--report_only", "--report_only=true")
  ]
  command = " ".join(
      shlex.quote(a) for a in ["python", "scripts/reproduce.py", *args]
  )
  path = report.write_results(grid, out, command)
  failed = [o for o in outcomes if o.status == "failed"]
  print(f"wrote {path}" + (f"; {len(failed)} job(s) failed" if failed else ""))
  if failed:
    sys.exit(1)


if __name__ == "__main__":
  flags.mark_flags_as_required(["grid", "out"])
  from opd_jax import cli  # pylint: disable=g-import-not-at-top

  cli.run(main)
