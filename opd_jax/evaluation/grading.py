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
"""Timeout-bounded math-verify grading in spawn-started CPU worker processes.

sympy can take unbounded time (or never return) on adversarial expressions,
and it cannot be interrupted from another thread. So every grade runs in a
separate process: the parent hands one item at a time to each worker, and a
worker that overruns its per-item deadline is killed and replaced, its item
graded False with `timed_out=True`. Workers also exit after a fixed number of
items, which bounds sympy's cache growth.

This module imports nothing heavy at the top: spawned workers import it to
find their entry point, and must never import jax (they set JAX_PLATFORMS=cpu
and hide accelerators first, in case a grade function pulls it in).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import multiprocessing
from multiprocessing import connection
import os
import sys
import time
from typing import Callable, Iterable, Sequence

GradeFn = Callable[[str, str], bool]

_CPU_ONLY_ENV = {
    "JAX_PLATFORMS": "cpu",
    "CUDA_VISIBLE_DEVICES": "",
    "TPU_VISIBLE_DEVICES": "",
    "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
}


def math_verify_grade(prediction: str, reference: str) -> bool:
  """True iff math-verify finds `prediction` equivalent to `reference`.

  The prediction is parsed as a completion (last `\\boxed{}` or final
  expression). A bare LaTeX reference such as `\\sqrt{8}` is not found by
  math-verify without delimiters, so it is retried wrapped in `$...$`.
  """
  from math_verify import parse, verify  # pylint: disable=g-import-not-at-top

  gold = parse(reference)
  if not gold:
    gold = parse(f"${reference}$")
  pred = parse(prediction)
  if not gold or not pred:
    return False
  return bool(verify(gold, pred))


@dataclasses.dataclass(frozen=True)
class Grade:
  """The outcome of one (prediction, reference) pair.

  Attributes:
    correct: True only when the grade function returned True in time.
    timed_out: the worker overran the per-item timeout and was killed.
    error: the grade function's exception (or a worker crash), if any.
  """

  correct: bool
  timed_out: bool = False
  error: str | None = None


def _worker_main(conn, grade_fn: GradeFn, preload: Sequence[str]) -> None:
  """Worker loop: announce readiness, then grade items until told to stop.

  The parent counts items and retires the worker (sends None) when it has
  done its share, so recycling never races with a queued item.
  """
  os.environ.update(_CPU_ONLY_ENV)
  for module in preload:
    importlib.import_module(module)  # Pay import costs before the clock runs.
  conn.send(("ready", None, None))
  while True:
    try:
      item = conn.recv()
    except EOFError:
      return
    if item is None:
      return
    prediction, reference = item
    try:
      conn.send(("ok", bool(grade_fn(prediction, reference)), None))
    except Exception as e:  # pylint: disable=broad-except
      conn.send(("ok", False, f"{type(e).__name__}: {e}"))


@contextlib.contextmanager
def _no_main_reimport():
  """Keeps spawn from re-importing the parent's `__main__` in workers.

  A training script imports jax at the top; spawn would run those imports
  again in every worker. The worker's entry point lives in this module, so
  the main module is not needed there.
  """
  main = sys.modules["__main__"]
  saved = {
      k: main.__dict__[k]
      for k in ("__file__", "__spec__")
      if k in main.__dict__
  }
  main.__dict__.pop("__file__", None)
  main.__spec__ = None
  try:
    yield
  finally:
    main.__dict__.pop("__spec__", None)
    main.__dict__.update(saved)


@dataclasses.dataclass
class _Worker:
  process: multiprocessing.Process
  conn: connection.Connection
  ready: bool = False
  item: int | None = None  # Index of the item being graded.
  deadline: float = 0.0
  tasks_left: int = 0  # Items before the worker is recycled.


class GradingPool:
  """A small pool of spawn-started processes grading answer pairs.

  Use it as a context manager and reuse it: starting a worker costs a fresh
  interpreter plus the math-verify/sympy import (about a second each).
  Not thread-safe: call `grade` from one thread.

  Examples:
    >>> with GradingPool(num_workers=2, timeout=5.0) as pool:  # doctest: +SKIP
    ...   pool.grade([(r"\\boxed{\\frac{1}{2}}", "0.5")])
    [Grade(correct=True, timed_out=False, error=None)]
  """

  def __init__(
      self,
      num_workers: int = 2,
      *,
      timeout: float = 10.0,
      max_tasks_per_worker: int = 256,
      grade_fn: GradeFn = math_verify_grade,
      preload: Sequence[str] = ("math_verify",),
      start_timeout: float = 120.0,
  ):
    """Configures the pool; workers start on `__enter__` or first `grade`.

    Args:
      num_workers: worker processes (keep small: each holds sympy).
      timeout: seconds one item may take once a worker has it.
      max_tasks_per_worker: items after which a worker is replaced.
      grade_fn: `(prediction, reference) -> bool`, a top-level function of
        an importable module (not `__main__`, which workers do not import).
      preload: modules each worker imports before reporting ready, so that
        import time never counts against an item's timeout.
      start_timeout: seconds to wait for a new worker to become ready.
    """
    for name, value in (
        ("num_workers", num_workers),
        ("max_tasks_per_worker", max_tasks_per_worker),
    ):
      if value < 1:
        raise ValueError(f"GradingPool.{name}: expected >= 1, got {value}")
    if getattr(grade_fn, "__module__", None) == "__main__":
      raise ValueError(
          "GradingPool.grade_fn: expected a function of an importable module,"
          f" got {grade_fn!r} from __main__ (workers never import __main__)"
      )
    if timeout <= 0:
      raise ValueError(f"GradingPool.timeout: expected > 0, got {timeout}")
    self.num_workers = num_workers
    self.timeout = float(timeout)
    self.max_tasks_per_worker = max_tasks_per_worker
    self.grade_fn = grade_fn
    self.preload = tuple(preload)
    self.start_timeout = float(start_timeout)
    self.stats = {"graded": 0, "timed_out": 0, "errors": 0, "restarts": 0}
    self._ctx = multiprocessing.get_context("spawn")
    self._workers: list[_Worker] = []

  def __enter__(self) -> GradingPool:
    self.start()
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def start(self) -> None:
    """Starts the workers (no-op if running)."""
    while len(self._workers) < self.num_workers:
      self._workers.append(self._spawn())

  def close(self) -> None:
    """Stops every worker; the pool can be started again."""
    for w in self._workers:
      self._stop(w, graceful=w.item is None)
    self._workers = []

  def _spawn(self) -> _Worker:
    parent, child = self._ctx.Pipe()
    process = self._ctx.Process(
        target=_worker_main,
        args=(child, self.grade_fn, self.preload),
        daemon=True,
        name="opd-grader",
    )
    with _no_main_reimport():
      process.start()
    child.close()  # So a dead worker shows up as EOF on `parent`.
    return _Worker(
        process,
        parent,
        deadline=time.monotonic() + self.start_timeout,
        tasks_left=self.max_tasks_per_worker,
    )

  def _stop(self, w: _Worker, graceful: bool) -> None:
    if graceful and w.process.is_alive():
      with contextlib.suppress(OSError):
        w.conn.send(None)
      w.process.join(timeout=1.0)
    if w.process.is_alive():
      w.process.kill()
      w.process.join(timeout=5.0)
    w.conn.close()

  def _replace(self, w: _Worker, graceful: bool) -> None:
    self._stop(w, graceful)
    self._workers[self._workers.index(w)] = self._spawn()
    self.stats["restarts"] += 1

  def grade_one(self, prediction: str, reference: str) -> Grade:
    """Grades one pair (see `grade`)."""
    return self.grade([(prediction, reference)])[0]

  def grade(self, pairs: Iterable[tuple[str, str]]) -> list[Grade]:
    """Grades (prediction, reference) pairs, in order.

    Args:
      pairs: (prediction, reference) strings.

    Returns:
      One `Grade` per pair. An item still running `timeout` seconds after
      its worker received it is `Grade(False, timed_out=True)`; its worker is
      killed and replaced, and the other items keep grading.
    """
    pairs = [(str(p), str(r)) for p, r in pairs]
    if not pairs:
      return []
    results: list[Grade | None] = [None] * len(pairs)
    pending = list(range(len(pairs)))[::-1]  # Stack: pop() takes the next.
    self.start()
    while pending or any(w.item is not None for w in self._workers):
      for w in self._workers:
        if w.ready and w.item is None and pending:
          w.item = pending.pop()
          w.conn.send(pairs[w.item])
          w.deadline = time.monotonic() + self.timeout
      self._poll(results)
    self.stats["graded"] += len(pairs)
    return results

  def _poll(self, results: list[Grade | None]) -> None:
    """Waits for one event: a result, a ready worker or a deadline."""
    # Capped so a bookkeeping slip can never block forever.
    wait = min(w.deadline for w in self._workers) - time.monotonic()
    wait = min(max(wait, 0.0), self.start_timeout)
    for conn in connection.wait([w.conn for w in self._workers], wait):
      w = next(w for w in self._workers if w.conn is conn)
      try:
        _, correct, error = conn.recv()
      except (EOFError, OSError):
        self._on_crash(w, results)
        continue
      if not w.ready:
        w.ready, w.deadline = True, float("inf")
        continue
      results[w.item] = Grade(bool(correct), error=error)
      self.stats["errors"] += int(error is not None)
      w.item, w.deadline = None, float("inf")
      w.tasks_left -= 1
      if w.tasks_left <= 0:  # Recycle: bounds sympy's caches.
        self._replace(w, graceful=True)
    now = time.monotonic()
    for w in list(self._workers):
      if w.deadline > now:
        continue
      if not w.ready:
        raise RuntimeError(
            f"GradingPool: worker not ready after {self.start_timeout} s"
        )
      results[w.item] = Grade(False, timed_out=True)
      self.stats["timed_out"] += 1
      self._replace(w, graceful=False)

  def _on_crash(self, w: _Worker, results: list[Grade | None]) -> None:
    w.process.join(timeout=5.0)
    code = w.process.exitcode
    if not w.ready:
      raise RuntimeError(
          f"GradingPool: worker died while starting (exit code {code}); "
          f"check that grade_fn and preload={self.preload} import cleanly"
      )
    if w.item is not None:
      results[w.item] = Grade(False, error=f"worker died (exit code {code})")
      self.stats["errors"] += 1
    self._replace(w, graceful=False)
