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
import signal
import subprocess
import threading
import time
from typing import Callable, Sequence

from opd_jax.results.evaluate_run import write_json
from opd_jax.results.grid import Grid, Variant

DONE = "DONE"
# The live subprocesses, so that a killed driver takes them down with it.
_LIVE: set[subprocess.Popen] = set()
_LIVE_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True)
class Run:
  """One (variant, seed) of a grid and where its files go."""

  variant: Variant
  seed: int
  out: str

  @property
  def dir(self) -> str:
    return os.path.join(
        self.out, "runs", self.variant.name, f"seed_{self.seed}"
    )

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
  def failed_path(self) -> str:
    return os.path.join(self.dir, "FAILED")

  def failure(self) -> str | None:
    """Why the last attempt failed, if it did and the run is not done."""
    if self.is_done() or not os.path.isfile(self.failed_path):
      return None
    with open(self.failed_path, encoding="utf-8") as f:
      return json.load(f)["error"]

  @property
  def log_path(self) -> str:
    return os.path.join(self.dir, "run.log")

  @property
  def name(self) -> str:
    return f"{self.variant.name}/seed_{self.seed}"

  def is_done(self) -> bool:
    return os.path.isfile(self.done_path)

  def seconds(self, key: str = "seconds") -> float | None:
    """Wall seconds the finished run took (or another number of its DONE
    marker: `cpu_seconds`, `load_avg`); None if not finished or absent."""
    if not self.is_done():
      return None
    with open(self.done_path, encoding="utf-8") as f:
      value = json.load(f).get(key)
    return None if value is None else float(value)


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
    memory: `(variants) -> argv` of the worker measuring their step
      memory.
    env: the subprocesses' environment.
  """

  train: Callable[[Run], list[str]]
  evaluate: Callable[[Run], list[str]]
  memory: Callable[[Sequence[Variant]], list[str]]
  env: dict[str, str]


def _call(
    argv: Sequence[str], log_path: str, env: dict[str, str]
) -> tuple[int, float]:
  """Runs argv with output appended to log_path.

  Returns:
    (exit code, CPU seconds the process used: user + system).
  """
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  with open(log_path, "a", encoding="utf-8") as log:
    log.write(f"\n$ {' '.join(argv)}\n")
    log.flush()
    proc = subprocess.Popen(
        list(argv), stdout=log, stderr=subprocess.STDOUT, env=env
    )
    with _LIVE_LOCK:
      _LIVE.add(proc)
    try:
      # wait4 rather than wait: the child's own CPU time, even with
      # several runs at once (an idle machine's wall time is about it).
      _, status, usage = os.wait4(proc.pid, 0)
      proc.returncode = os.waitstatus_to_exitcode(status)
      return proc.returncode, usage.ru_utime + usage.ru_stime
    finally:
      with _LIVE_LOCK:
        _LIVE.discard(proc)
      if proc.returncode is None:  # interrupted: the run resumes next time
        proc.terminate()
        proc.wait()


def stop_on_signals() -> None:
  """On SIGTERM / SIGINT, terminates the live runs and exits (128 + signal).

  A killed run keeps its checkpoints and no DONE marker: the next
  invocation resumes it.
  """

  def handler(signum, frame):
    del frame
    with _LIVE_LOCK:
      procs = list(_LIVE)
    for proc in procs:
      proc.terminate()
    for proc in procs:
      proc.wait()
    os._exit(128 + signum)  # pylint: disable=protected-access

  for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, handler)


def _tail(path: str, lines: int = 3) -> str:
  with open(path, encoding="utf-8", errors="replace") as f:
    return " | ".join(line.strip() for line in f.readlines()[-lines:])


@dataclasses.dataclass(frozen=True)
class Outcome:
  """What happened to one job: 'done', 'skipped' or 'failed' (+ why), in
  how many wall seconds and CPU seconds (its processes' user + system)."""

  name: str
  status: str
  seconds: float = 0.0
  error: str = ""
  cpu_seconds: float = 0.0

  def line(self, note: str = "") -> str:
    """A console line: name, status, times, `note`; the error below."""
    times = (
        f" in {self.seconds:.0f} s (CPU {self.cpu_seconds:.0f} s)"
        if self.status != "skipped"
        else ""
    )
    return f"  {self.name}: {self.status}{times}{note}" + (
        f"\n    {self.error}" if self.error else ""
    )


def execute_run(run: Run, commands: Commands) -> Outcome:
  """Trains (or resumes) and evaluates one run; marks it done last.

  A failure is recorded in the run's FAILED file (the report lists it)
  and leaves no DONE marker, so the next invocation retries the run.
  """
  if run.is_done():
    return Outcome(run.name, "skipped", run.seconds() or 0.0)
  start, cpu = time.time(), 0.0
  steps = [("train", commands.train(run))] if run.variant.trains else []
  steps.append(("evaluate", commands.evaluate(run)))
  error = ""
  for what, argv in steps:
    code, used = _call(argv, run.log_path, commands.env)
    cpu += used
    if code != 0:
      error = (
          f"{what} exited with {code}: {_tail(run.log_path)}"
          f" (log: {run.log_path})"
      )
      break
  if not error and not os.path.isfile(run.eval_path):
    error = f"no {run.eval_path} after evaluation"
  seconds = time.time() - start
  if error:
    write_json(run.failed_path, {"error": error})
    return Outcome(run.name, "failed", seconds, error, cpu)
  write_json(
      run.done_path,
      {
          "seconds": round(seconds, 1),
          "cpu_seconds": round(cpu, 1),
          # How busy the machine was (timings depend on it).
          "load_avg": round(os.getloadavg()[0], 2),
          "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
      },
  )
  return Outcome(run.name, "done", seconds, cpu_seconds=cpu)


def execute_memory(grid: Grid, out: str, commands: Commands) -> list[Outcome]:
  """Measures the step memory of every trained variant not yet measured.

  One worker process measures them in turn (each JSON written as soon as
  it is known, so a crash keeps the finished ones and a rerun goes on).
  """
  pending = [
      v
      for v in grid.variants
      if v.trains and not os.path.isfile(memory_path(out, v))
  ]
  outcomes = [
      Outcome(f"memory/{v.name}", "skipped")
      for v in grid.variants
      if v.trains and v not in pending
  ]
  if not pending:
    return outcomes
  start = time.time()
  log = os.path.join(out, "memory", "memory.log")
  code, cpu = _call(commands.memory(pending), log, commands.env)
  seconds, cpu = (time.time() - start) / len(pending), cpu / len(pending)
  for v in pending:
    if os.path.isfile(memory_path(out, v)):
      outcomes.append(
          Outcome(f"memory/{v.name}", "done", seconds, cpu_seconds=cpu)
      )
    else:
      outcomes.append(
          Outcome(
              f"memory/{v.name}",
              "failed",
              seconds,
              f"exited with {code}: {_tail(log)} (log: {log})",
          )
      )
  return outcomes


def estimate_seconds(
    runs: Sequence[Run], measured: dict[str, float], jobs: int
) -> float | None:
  """Projected wall seconds of the runs not yet done.

  Each pending run is costed at the mean of its variant's measured runs,
  else at the mean of every measured training run (a row that trains
  nothing at its own mean, else at 0); divided by the parallel jobs. None
  until a training run has been measured.
  """
  trained = [
      measured[r.name] for r in runs if r.variant.trains and r.name in measured
  ]
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


def _eta(runs, measured, cpu, jobs) -> str:
  """'; about W min left (C CPU-min)': at this machine's current speed,
  and the CPU time of what is left (on idle cores, about the wall time of
  one job per core)."""
  left = estimate_seconds(runs, measured, jobs)
  left_cpu = estimate_seconds(runs, cpu, 1)
  if left is None or left_cpu is None:
    return ""
  return f"; about {left / 60:.1f} min left ({left_cpu / 60:.1f} CPU-min)"


def execute_grid(
    grid: Grid,
    out: str,
    commands: Commands,
    *,
    jobs: int = 1,
    log: Callable[[str], None] = print,
) -> list[Outcome]:
  """Runs every pending run, then every pending memory measurement.

  Prints each outcome and, after each finished run, the projected time of
  what is left. A failed run is reported and left unmarked (the next
  invocation retries it); the others go on.
  """
  runs = grid_runs(grid, out)
  measured = {r.name: r.seconds() for r in runs if r.is_done()}
  cpu = {r.name: r.seconds("cpu_seconds") or 0.0 for r in runs if r.is_done()}
  pending = [r for r in runs if not r.is_done()]
  log(
      f"grid {grid.path}: {len(runs)} runs, {len(runs) - len(pending)}"
      f" already done, {len(pending)} to run with {jobs} job(s)"
      + _eta(runs, measured, cpu, jobs)
  )
  outcomes = [
      Outcome(r.name, "skipped", measured[r.name]) for r in runs if r.is_done()
  ]
  with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
    futures = [pool.submit(execute_run, r, commands) for r in pending]
    for future in concurrent.futures.as_completed(futures):
      o = future.result()
      outcomes.append(o)
      if o.status == "done":
        measured[o.name], cpu[o.name] = o.seconds, o.cpu_seconds
      log(o.line(_eta(runs, measured, cpu, jobs)))
  for o in execute_memory(grid, out, commands):
    outcomes.append(o)
    log(o.line())
  return outcomes
