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
"""Runs a grid: one subprocess per run, skipping finished runs, resuming
killed ones, optionally several at once.

Layout under the output directory:

  runs/NAME/seed_S/train/      the run's training workdir (scripts/train.py)
  runs/NAME/seed_S/eval.json   its final evaluation
  runs/NAME/seed_S/DONE        written last: the run is finished
  runs/NAME/seed_S/run.log     the subprocesses' output
  memory/NAME.json             the variant's step memory at the large shape
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import subprocess
import time
from typing import Callable, Sequence

from opd_jax.results.evaluate_run import write_json
from opd_jax.results.grid import Grid, Variant

DONE = "DONE"


@dataclasses.dataclass(frozen=True)
class Run:
  """One (variant, seed) of a grid and where its files go."""

  variant: Variant
  seed: int
  out: str

  @property
  def dir(self) -> str:
    return os.path.join(self.out, "runs", self.variant.name,
                        f"seed_{self.seed}")

  @property
  def workdir(self) -> str | None:
    """The training workdir; None for a row that trains nothing."""
    return os.path.join(self.dir, "train") if self.variant.trains else None

  @property
  def eval_path(self) -> str:
    return os.path.join(self.dir, "eval.json")

  @property
  def done_path(self) -> str:
    return os.path.join(self.dir, DONE)

  @property
  def log_path(self) -> str:
    return os.path.join(self.dir, "run.log")

  @property
  def name(self) -> str:
    return f"{self.variant.name}/seed_{self.seed}"

  def is_done(self) -> bool:
    return os.path.isfile(self.done_path)

  def seconds(self) -> float | None:
    """Wall seconds the finished run took (None if not finished)."""
    if not self.is_done():
      return None
    with open(self.done_path, encoding="utf-8") as f:
      return float(json.load(f)["seconds"])


def memory_path(out: str, variant: Variant) -> str:
  return os.path.join(out, "memory", f"{variant.name}.json")


def grid_runs(grid: Grid, out: str) -> list[Run]:
  """Every run of the grid, seed-major (seed 0 of every row first)."""
  return [Run(v, s, out) for s in grid.seeds for v in grid.variants]


@dataclasses.dataclass(frozen=True)
class Commands:
  """The subprocess command lines of a grid's jobs.

  Attributes:
    train: `(run) -> argv` of scripts/train.py for a training run.
    evaluate: `(run) -> argv` of the worker evaluating a run.
    memory: `(variant) -> argv` of the worker measuring step memory.
    env: the subprocesses' environment.
  """

  train: Callable[[Run], list[str]]
  evaluate: Callable[[Run], list[str]]
  memory: Callable[[Variant], list[str]]
  env: dict[str, str]


def _call(argv: Sequence[str], log_path: str, env: dict[str, str]) -> int:
  """Runs argv with output appended to log_path; kills it if interrupted."""
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  with open(log_path, "a", encoding="utf-8") as log:
    log.write(f"\n$ {' '.join(argv)}\n")
    log.flush()
    proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT,
                            env=env)
    try:
      return proc.wait()
    finally:
      if proc.poll() is None:  # interrupted: this run resumes next time
        proc.terminate()
        proc.wait()


def _tail(path: str, lines: int = 3) -> str:
  with open(path, encoding="utf-8", errors="replace") as f:
    return " | ".join(line.strip() for line in f.readlines()[-lines:])


@dataclasses.dataclass(frozen=True)
class Outcome:
  """What happened to one job: 'done', 'skipped' or 'failed' (+ why)."""

  name: str
  status: str
  seconds: float = 0.0
  error: str = ""


def execute_run(run: Run, commands: Commands) -> Outcome:
  """Trains (or resumes) and evaluates one run; marks it done last."""
  if run.is_done():
    return Outcome(run.name, "skipped", run.seconds() or 0.0)
  start = time.time()
  steps = [("train", commands.train(run))] if run.variant.trains else []
  steps.append(("evaluate", commands.evaluate(run)))
  for what, argv in steps:
    code = _call(argv, run.log_path, commands.env)
    if code != 0:
      return Outcome(run.name, "failed", time.time() - start,
                     f"{what} exited with {code}: {_tail(run.log_path)}"
                     f" (log: {run.log_path})")
  if not os.path.isfile(run.eval_path):
    return Outcome(run.name, "failed", time.time() - start,
                   f"no {run.eval_path} after evaluation")
  seconds = time.time() - start
  write_json(run.done_path, {"seconds": round(seconds, 1),
                             "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
  return Outcome(run.name, "done", seconds)


def execute_memory(variant: Variant, out: str,
                   commands: Commands) -> Outcome:
  """Measures one variant's step memory unless already measured."""
  path = memory_path(out, variant)
  name = f"memory/{variant.name}"
  if os.path.isfile(path):
    return Outcome(name, "skipped")
  start = time.time()
  log = os.path.join(out, "memory", f"{variant.name}.log")
  code = _call(commands.memory(variant), log, commands.env)
  if code != 0 or not os.path.isfile(path):
    return Outcome(name, "failed", time.time() - start,
                   f"exited with {code}: {_tail(log)} (log: {log})")
  return Outcome(name, "done", time.time() - start)


def estimate_seconds(runs: Sequence[Run], measured: dict[str, float],
                     jobs: int) -> float | None:
  """Projected wall seconds of the runs not yet done.

  Each pending run is costed at the mean of its variant's measured runs,
  else at the mean of every measured training run (a row that trains
  nothing at its own mean, else at 0); divided by the parallel jobs. None
  until a training run has been measured.
  """
  trained = [measured[r.name] for r in runs
             if r.variant.trains and r.name in measured]
  if not trained:
    return None
  by_variant: dict[str, list[float]] = {}
  for run in runs:
    if run.name in measured:
      by_variant.setdefault(run.variant.name, []).append(measured[run.name])
  fallback = sum(trained) / len(trained)
  total = 0.0
  for run in runs:
    if run.name in measured:
      continue
    seen = by_variant.get(run.variant.name)
    if seen:
      total += sum(seen) / len(seen)
    elif run.variant.trains:
      total += fallback
  return total / max(jobs, 1)


def execute_grid(grid: Grid, out: str, commands: Commands, *, jobs: int = 1,
                 log: Callable[[str], None] = print) -> list[Outcome]:
  """Runs every pending run, then every pending memory measurement.

  Prints each outcome and, after each finished run, the projected time of
  what is left. A failed run is reported and left unmarked (the next
  invocation retries it); the others go on.
  """
  runs = grid_runs(grid, out)
  measured = {r.name: r.seconds() for r in runs if r.is_done()}
  pending = [r for r in runs if not r.is_done()]
  log(f"grid {grid.path}: {len(runs)} runs, {len(runs) - len(pending)}"
      f" already done, {len(pending)} to run with {jobs} job(s)")
  outcomes = [Outcome(r.name, "skipped", measured[r.name]) for r in runs
              if r.is_done()]
  with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
    futures = [pool.submit(execute_run, r, commands) for r in pending]
    for future in concurrent.futures.as_completed(futures):
      o = future.result()
      outcomes.append(o)
      if o.status == "done":
        measured[o.name] = o.seconds
      left = estimate_seconds(runs, measured, jobs)
      eta = "" if left is None else f"; about {left / 60:.1f} min left"
      log(f"  {o.name}: {o.status} in {o.seconds:.0f} s{eta}"
          + (f"\n    {o.error}" if o.error else ""))
    futures = [pool.submit(execute_memory, v, out, commands)
               for v in grid.variants if v.trains]
    for future in concurrent.futures.as_completed(futures):
      o = future.result()
      outcomes.append(o)
      log(f"  {o.name}: {o.status} in {o.seconds:.0f} s"
          + (f"\n    {o.error}" if o.error else ""))
  return outcomes
