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

  runs/NAME/tune/lr_X/...      a tuning run of a trained row (learning rate
                               X, the tuning seed, the validation split)
  runs/NAME/seed_S/...         a run on the test split (a trained row at
                               its tuned rate)
  .../train/                   the run's training workdir (scripts/train.py)
  .../eval.json                its final evaluation, until result.json
  .../result.json              written last: the final evaluation, the
                               curve (metric rows) and the run's times; a
                               run with it is finished. Small: committing
                               these (and memory/) makes a partly finished
                               grid resumable on another machine.
  .../run.log                  the subprocesses' output
  memory/NAME.json             the variant's step memory at the large shape
  memory/full_logit.json       the papers' baseline step (full logits) at
                               the same shape, when a claim states a
                               memory ratio

A row's tuning runs go first, then its test runs at the chosen rate; the
rows go in grid order (each row complete before the next, with one job).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import platform
import shutil
import signal
import subprocess
import threading
import time
from typing import Callable, Sequence

from opd_jax.results import tuning as tuning_lib
from opd_jax.results.evaluate_run import write_json
from opd_jax.results.grid import Grid, Variant

RESULT = "result.json"
# The metric rows' keys a result keeps (the report's curves, collapse
# detection, selected fractions, step times and the loss terms).
CURVE_PREFIXES = (
    "eval/",
    "rollout/",
    "entropy/",
    "loss/",
    "select/",
    "tsd_kd/",
    "train/step_time",
    "train/grad_norm",
    "train/skipped",
)
# The live subprocesses, so that a killed driver takes them down with it.
_LIVE: set[subprocess.Popen] = set()
_LIVE_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True)
class Run:
  """One run of a grid and where its files go.

  Attributes:
    variant: the row.
    seed: the run's seed.
    out: the grid's output directory.
    lr: the learning rate (None: the config's; a test run's before its row
      is tuned).
    split: the evaluation split for a tuning run (None: the test split).
  """

  variant: Variant
  seed: int
  out: str
  lr: float | None = None
  split: str | None = None

  @property
  def tune(self) -> bool:
    return self.split is not None

  @property
  def dir(self) -> str:
    base = os.path.join(self.out, "runs", self.variant.name)
    if self.tune:
      return os.path.join(base, "tune", f"lr_{self.lr:g}")
    return os.path.join(base, f"seed_{self.seed}")

  @property
  def workdir(self) -> str | None:
    """The training workdir; None for a row that trains nothing."""
    return os.path.join(self.dir, "train") if self.variant.trains else None

  @property
  def eval_path(self) -> str:
    return os.path.join(self.dir, "eval.json")

  @property
  def result_path(self) -> str:
    return os.path.join(self.dir, RESULT)

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
    return os.path.relpath(self.dir, os.path.join(self.out, "runs"))

  def is_done(self) -> bool:
    return os.path.isfile(self.result_path)

  def result(self) -> dict:
    """The finished run's result.json."""
    with open(self.result_path, encoding="utf-8") as f:
      return json.load(f)

  def seconds(self, key: str = "seconds") -> float | None:
    """Wall seconds the finished run took (or another of its times:
    `cpu_seconds`, `load_avg`); None if not finished or absent."""
    if not self.is_done():
      return None
    value = self.result()["done"].get(key)
    return None if value is None else float(value)


def memory_path(out: str, variant: Variant) -> str:
  return os.path.join(out, "memory", f"{variant.name}.json")


# The gradient-alignment measurement's report directory (scripts/
# diagnose.py --out) and its summary, the file RESULTS.md reads.
DIAGNOSE_DIR = "diagnose"


def diagnose_summary_path(out: str) -> str:
  return os.path.join(out, DIAGNOSE_DIR, "summary.json")


def validation_score(run: Run) -> tuple[float, float]:
  """(greedy accuracy, pass@k) of a finished run's evaluation."""
  e = run.result()["eval"]
  greedy = sum(e["greedy"]) / max(len(e["greedy"]), 1)
  samples = e.get("samples") or []
  passed = sum(max(s) for s in samples if s) / max(len(samples), 1)
  return greedy, passed


def row_schedule(
    grid: Grid, out: str, variant: Variant
) -> tuning_lib.Schedule | None:
  """The row's tuning schedule from its finished tuning runs (None for a
  row that trains nothing, or when the grid does not tune).

  `tuning.schedule` is re-applied as finished extension runs are found
  (an extension is scheduled only once the rates before it are done).
  """
  t = grid.tuning
  if not (t.enabled and variant.trains):
    return None
  scores: dict[float, tuple[float, float]] = {}
  while True:
    sched = tuning_lib.schedule(
        t.learning_rates,
        scores,
        factor=t.edge_factor,
        max_steps=t.edge_steps,
    )
    found = {
        lr: validation_score(run)
        for lr in sched.pending
        if (run := Run(variant, t.seed, out, lr, t.split)).is_done()
    }
    if not found:
      return sched
    scores.update(found)


def tuning_runs(grid: Grid, out: str, variant: Variant) -> list[Run]:
  """The row's tuning runs, the extensions past an edge included (none for
  a row that trains nothing, or when the grid does not tune)."""
  sched = row_schedule(grid, out, variant)
  if sched is None:
    return []
  t = grid.tuning
  return [Run(variant, t.seed, out, lr, t.split) for lr in sched.rates]


def chosen_lr(grid: Grid, out: str, variant: Variant) -> float | None:
  """The row's learning rate for its test runs: the best tuning run (greedy
  accuracy, then pass@k, then the smaller rate); None until every
  scheduled tuning run is finished. Untuned rows: None (the config's)."""
  sched = row_schedule(grid, out, variant)
  return sched.best if sched is not None and sched.complete else None


def same_rate(a: float | None, b: float | None) -> bool:
  """Whether two recorded learning rates are the same (JSON round trips
  are exact; the tolerance only absorbs a rate written as 6e-4 vs
  0.0006000000000000001)."""
  if a is None or b is None:
    return a is b
  return abs(a - b) <= 1e-9 * max(abs(a), abs(b))


def test_runs(grid: Grid, out: str, variant: Variant) -> list[Run]:
  """The row's runs on the test split, one per seed (at its chosen rate
  once it is tuned)."""
  lr = chosen_lr(grid, out, variant)
  return [Run(variant, s, out, lr) for s in grid.seeds]


def row_runs(grid: Grid, out: str, variant: Variant) -> list[Run]:
  return tuning_runs(grid, out, variant) + test_runs(grid, out, variant)


def grid_runs(grid: Grid, out: str) -> list[Run]:
  """Every test-split run of the grid, seed-major (seed 0 of every row
  first)."""
  by_row = [test_runs(grid, out, v) for v in grid.variants]
  return [runs[i] for i in range(len(grid.seeds)) for runs in by_row]


def all_runs(grid: Grid, out: str) -> list[Run]:
  """Every run, tuning ones included, in execution order (row by row)."""
  return [r for v in grid.variants for r in row_runs(grid, out, v)]


@dataclasses.dataclass(frozen=True)
class Commands:
  """The subprocess command lines of a grid's jobs.

  Attributes:
    train: `(run) -> argv` of scripts/train.py for a training run.
    evaluate: `(run) -> argv` of the worker evaluating a run.
    memory: `(variants) -> argv` of the worker measuring their step
      memory.
    env: the subprocesses' environment.
    diagnose: `(report directory) -> argv` of scripts/diagnose.py for the
      grid's alignment measurement (None: not run).
    inputs: `(run) -> str`, a digest of what the run starts from (the
      student and teacher checkpoints), kept in its result: a result whose
      digest differs is stale and the run is redone from scratch. None:
      not checked.
  """

  train: Callable[[Run], list[str]]
  evaluate: Callable[[Run], list[str]]
  memory: Callable[[Sequence[Variant]], list[str]]
  env: dict[str, str]
  inputs: Callable[[Run], str] | None = None
  diagnose: Callable[[str], list[str]] | None = None


def discard_stale(
    runs: Sequence[Run], commands: Commands, log: Callable[[str], None]
) -> None:
  """Moves aside (result.stale.json) the results of runs whose inputs have
  changed since, and removes their training workdirs (a resume would
  continue from the old start)."""
  if commands.inputs is None:
    return
  for run in runs:
    if not run.is_done():
      continue
    had, now = run.result().get("inputs"), commands.inputs(run)
    if had == now:
      continue
    os.replace(
        run.result_path, run.result_path[: -len(".json")] + ".stale.json"
    )
    if run.workdir and os.path.isdir(run.workdir):
      shutil.rmtree(run.workdir)
    log(f"  {run.name}: stale (its inputs changed: {had} -> {now}); redone")


def discard_other_rate(
    runs: Sequence[Run], lr: float, log: Callable[[str], None]
) -> None:
  """Moves aside (result.stale.json) the finished test runs trained at
  another rate than `lr` (the row's best changed when a tuning run past an
  edge finished), and removes their training workdirs."""
  for run in runs:
    if not run.is_done():
      continue
    had = run.result().get("lr")
    if same_rate(had, lr):
      continue
    os.replace(
        run.result_path, run.result_path[: -len(".json")] + ".stale.json"
    )
    if run.workdir and os.path.isdir(run.workdir):
      shutil.rmtree(run.workdir)
    log(
        f"  {run.name}: trained at lr {had:g}, the row's best is now {lr:g};"
        " redone"
    )


def cpu_model() -> str:
  """This machine's CPU: /proc/cpuinfo's model name, else the platform's
  processor string, else 'unknown CPU'."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine() or UNKNOWN_CPU


# What the report says of a run whose result.json predates the CPU field.
UNKNOWN_CPU = "unknown CPU"


def median_step_time(rows: Sequence[dict]) -> float | None:
  """Median `train/step_time` of a run's metric rows (step 1, with the
  sampler's compile, left out); None without one."""
  values = sorted(
      r["train/step_time"]
      for r in rows
      if r.get("train/step_time") is not None and r["step"] > 1
  )
  if not values:
    return None
  n = len(values)
  return (values[(n - 1) // 2] + values[n // 2]) / 2


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

  A killed run keeps its checkpoints and no result.json: the next
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


def curve(workdir: str | None) -> list[dict]:
  """The metric rows of a run's metrics.jsonl, with the kept keys only and
  floats to 5 significant digits (a result stays a few tens of KB)."""
  path = os.path.join(workdir, "metrics.jsonl") if workdir else ""
  if not path or not os.path.isfile(path):
    return []
  rows = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      row = json.loads(line)
      if "step" not in row:
        continue
      kept = {
          k: float(f"{v:.5g}")
          for k, v in row.items()
          if k.startswith(CURVE_PREFIXES) and isinstance(v, (int, float))
      }
      if kept:
        rows.append({"step": row["step"], **kept})
  return rows


def execute_run(run: Run, commands: Commands) -> Outcome:
  """Trains (or resumes) and evaluates one run; writes its result last.

  A failure is recorded in the run's FAILED file (the report lists it)
  and leaves no result.json, so the next invocation retries the run.
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
  with open(run.eval_path, encoding="utf-8") as f:
    evaluation = json.load(f)
  rows = curve(run.workdir)
  step_time = median_step_time(rows)
  write_json(
      run.result_path,
      {
          "variant": run.variant.name,
          "seed": run.seed,
          "lr": run.lr,
          "split": run.split or "test",
          "inputs": commands.inputs(run) if commands.inputs else None,
          "eval": evaluation,
          "curve": rows,
          "done": {
              "seconds": round(seconds, 1),
              "cpu_seconds": round(cpu, 1),
              # Timings compare like with like only on one CPU model.
              "cpu": cpu_model(),
              "step_time": None if step_time is None else round(step_time, 4),
              # How busy the machine was (timings depend on it).
              "load_avg": round(os.getloadavg()[0], 2),
              "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
          },
      },
  )
  os.remove(run.eval_path)
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


# The papers' memory baseline (the full-logit step, `memory.
# FullLogitReverseKL`) at the grid's large shape: OUT/memory/full_logit.json.
FULL_LOGIT = "full_logit"


def baseline_memory_path(out: str) -> str:
  return os.path.join(out, "memory", f"{FULL_LOGIT}.json")


def needs_baseline_memory(grid: Grid) -> bool:
  """Whether a claim of the grid states a memory ratio (against the full-
  logit step)."""
  return any(c.memory_ratio is not None for c in grid.claims)


def execute_baseline_memory(grid: Grid, out: str) -> Outcome | None:
  """Measures the full-logit step's memory unless measured or not needed.

  In this process (one compile, no run; the memory workers' subprocess is
  for the grid's own rows): the grid's base config with plain reverse KL,
  its loss replaced by `memory.FullLogitReverseKL`.
  """
  if not needs_baseline_memory(grid):
    return None
  path = baseline_memory_path(out)
  if os.path.isfile(path):
    return Outcome(f"memory/{FULL_LOGIT}", "skipped")
  # pylint: disable-next=g-import-not-at-top
  from opd_jax.results import memory as memory_lib

  start = time.time()
  try:
    c = grid.config(Variant(FULL_LOGIT, "", "rkl"), grid.seeds[0])
    write_json(path, memory_lib.full_logit_step_memory(c, grid.memory))
  except Exception as e:  # pylint: disable=broad-except
    return Outcome(
        f"memory/{FULL_LOGIT}", "failed", time.time() - start, repr(e)
    )
  return Outcome(f"memory/{FULL_LOGIT}", "done", time.time() - start)


def execute_diagnose(
    grid: Grid, out: str, commands: Commands
) -> Outcome | None:
  """Runs the grid's gradient-alignment measurement unless it is done
  (OUT/diagnose/summary.json exists) or the grid has none (None)."""
  if not grid.diagnose.enabled or commands.diagnose is None:
    return None
  if os.path.isfile(diagnose_summary_path(out)):
    return Outcome(DIAGNOSE_DIR, "skipped")
  start = time.time()
  log = os.path.join(out, f"{DIAGNOSE_DIR}.log")
  code, cpu = _call(
      commands.diagnose(os.path.join(out, DIAGNOSE_DIR)), log, commands.env
  )
  seconds = time.time() - start
  if os.path.isfile(diagnose_summary_path(out)):
    return Outcome(DIAGNOSE_DIR, "done", seconds, cpu_seconds=cpu)
  return Outcome(
      DIAGNOSE_DIR,
      "failed",
      seconds,
      f"exited with {code}: {_tail(log)} (log: {log})",
      cpu,
  )


def _expected_seconds(
    run: Run, runs: Sequence[Run], measured: dict[str, float]
) -> float | None:
  """What `run` should take: the mean of its variant's measured runs, else
  (a training run) the mean of every measured training run; None when
  nothing comparable was measured, 0 for a row that trains nothing."""
  seen = [
      measured[r.name]
      for r in runs
      if r.variant.name == run.variant.name and r.name in measured
  ]
  if seen:
    return sum(seen) / len(seen)
  if not run.variant.trains:
    return 0.0
  trained = [
      measured[r.name] for r in runs if r.variant.trains and r.name in measured
  ]
  return sum(trained) / len(trained) if trained else None


def estimate_seconds(
    runs: Sequence[Run], measured: dict[str, float], jobs: int
) -> float | None:
  """Projected wall seconds of the runs not yet done.

  Each pending run is costed at the mean of its variant's measured runs,
  else at the mean of every measured training run (a row that trains
  nothing at its own mean, else at 0); divided by the parallel jobs. None
  until a training run has been measured.
  """
  if not any(r.variant.trains and r.name in measured for r in runs):
    return None
  total = 0.0
  for run in runs:
    if run.name not in measured:
      total += _expected_seconds(run, runs, measured) or 0.0
  return total / max(jobs, 1)


def machine_speed(
    runs: Sequence[Run], prior: dict[str, float], fresh: dict[str, float]
) -> float:
  """This machine's time for a run relative to the earlier measurements.

  `prior` holds the times read from the results directory (runs that may
  have finished on another machine, 3x slower or faster); `fresh` the runs
  finished by this invocation. The ratio is the fresh runs' total over what
  `prior` predicted for them (`_expected_seconds`); 1 until one of them is
  comparable.
  """
  observed = predicted = 0.0
  for run in runs:
    if run.name in fresh:
      expected = _expected_seconds(run, runs, prior)
      if expected:
        observed += fresh[run.name]
        predicted += expected
  return observed / predicted if predicted else 1.0


def calibrated(
    runs: Sequence[Run], prior: dict[str, float], fresh: dict[str, float]
) -> tuple[dict[str, float], float]:
  """The earlier measurements scaled to this machine (`machine_speed`),
  with the fresh ones beside them (the two never share a run: a run done
  at the start is skipped), and the speed factor."""
  speed = machine_speed(runs, prior, fresh)
  return {**{name: t * speed for name, t in prior.items()}, **fresh}, speed


def _eta(runs, prior, fresh, jobs) -> str:
  """'; about W min left (C CPU-min)': the runs left at this machine's
  speed (the earlier runs' times scaled by what this invocation's runs
  took against them), and their CPU time (on idle cores, about the wall
  time of one job per core). `prior` and `fresh` are (wall, cpu) dicts."""
  wall, speed = calibrated(runs, prior[0], fresh[0])
  cpu, _ = calibrated(runs, prior[1], fresh[1])
  left = estimate_seconds(runs, wall, jobs)
  left_cpu = estimate_seconds(runs, cpu, 1)
  if left is None or left_cpu is None:
    return ""
  pace = f", runs at {speed:.2f}x the recorded times" if speed != 1.0 else ""
  return f"; about {left / 60:.1f} min left ({left_cpu / 60:.1f} CPU-min{pace})"


def execute_grid(
    grid: Grid,
    out: str,
    commands: Commands,
    *,
    jobs: int = 1,
    log: Callable[[str], None] = print,
) -> list[Outcome]:
  """Runs every pending run, then every pending memory measurement, then
  the grid's alignment measurement (`execute_diagnose`) if pending.

  Row by row (up to `jobs` rows at once): its tuning runs, then its test
  runs at the chosen rate. Prints each outcome and, after each finished
  run, what is left and its projected time. A failed run is reported and
  left unmarked (the next invocation retries it); a row with a failed
  tuning run skips its test runs; the other rows go on.
  """
  discard_stale(all_runs(grid, out), commands, log)
  runs = all_runs(grid, out)
  # Times read back (perhaps from another machine) and this invocation's.
  prior = (
      {r.name: r.seconds() for r in runs if r.is_done()},
      {r.name: r.seconds("cpu_seconds") or 0.0 for r in runs if r.is_done()},
  )
  fresh: tuple[dict[str, float], dict[str, float]] = ({}, {})
  done = len(prior[0])
  log(
      f"grid {grid.path}: {len(runs)} runs"
      f" ({sum(r.tune for r in runs)} tuning), {done} already done,"
      f" {len(runs) - done} to run with {jobs} job(s)"
      + _eta(runs, prior, fresh, jobs)
  )
  outcomes = [
      Outcome(r.name, "skipped", prior[0][r.name]) for r in runs if r.is_done()
  ]
  lock = threading.Lock()

  def finish(o: Outcome) -> None:
    with lock:
      outcomes.append(o)
      if o.status == "done":
        fresh[0][o.name], fresh[1][o.name] = o.seconds, o.cpu_seconds or 0.0
      left = len(runs) - len(prior[0]) - len(fresh[0])
      log(o.line(f"; {left} run(s) left" + _eta(runs, prior, fresh, jobs)))

  def row(variant: Variant) -> None:
    # The grid's rates, then any past an edge the finished ones call for
    # (row_schedule), until none is pending; a failed run is not retried
    # by this invocation.
    t, tried = grid.tuning, set()
    while (sched := row_schedule(grid, out, variant)) and sched.pending:
      todo = [lr for lr in sched.pending if lr not in tried]
      if not todo:
        log(f"  {variant.name}: not tuned (a tuning run failed); no test runs")
        return
      for lr in todo:
        tried.add(lr)
        finish(execute_run(Run(variant, t.seed, out, lr, t.split), commands))
    lr = chosen_lr(grid, out, variant)
    if lr is not None:
      discard_other_rate(test_runs(grid, out, variant), lr, log)
    for run in test_runs(grid, out, variant):
      if not run.is_done():
        finish(execute_run(run, commands))

  with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
    for future in [pool.submit(row, v) for v in grid.variants]:
      future.result()
  for o in execute_memory(grid, out, commands):
    outcomes.append(o)
    log(o.line())
  baseline = execute_baseline_memory(grid, out)
  if baseline is not None:
    outcomes.append(baseline)
    log(baseline.line())
  diagnosed = execute_diagnose(grid, out, commands)
  if diagnosed is not None:
    outcomes.append(diagnosed)
    log(diagnosed.line())
  return outcomes
