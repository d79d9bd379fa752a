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
"""Metric writers (JSONL, TensorBoard) and the console progress bar."""

from __future__ import annotations

import abc
import datetime
import json
import math
import numbers
import os
import sys
import time
from typing import Any, Mapping, Sequence, TextIO

from absl import logging
import numpy as np

JSONL_NAME = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
# Keys every JSONL line owns; a metric of the same name would overwrite them.
_RESERVED = ("step", "time", "hparams")


def to_float(name: str, value: Any) -> float:
  """Converts a Python, numpy or jax scalar (or size-1 array) to a float.

  Args:
    name: the metric name, for the error message.
    value: the value; a jax array is fetched from the device.

  Raises:
    TypeError: the value is not a number or has more than one element.
  """
  if isinstance(value, numbers.Number):
    return float(value)
  try:
    array = np.asarray(value)
  except Exception as e:  # pylint: disable=broad-except
    raise TypeError(f"metric {name!r}: expected a scalar, got {value!r}") from e
  if array.size != 1 or not (
      np.issubdtype(array.dtype, np.number) or array.dtype == bool
  ):
    raise TypeError(
        f"metric {name!r}: expected a numeric scalar, got dtype {array.dtype}"
        f" shape {array.shape}"
    )
  return float(array.reshape(()))


def flatten(
    tree: Mapping[str, Any], sep: str = "/", prefix: str = ""
) -> dict[str, Any]:
  """Flattens nested mappings (e.g. a config dict) into `sep`-joined keys."""
  out = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, Mapping):
      out.update(flatten(value, sep, name + sep))
    else:
      out[name] = value
  return out


def _hparam_value(value: Any) -> bool | int | float | str:
  """Keeps JSON/TensorBoard-friendly scalars; anything else as its repr."""
  if isinstance(value, (bool, int, float, str)):
    return value
  return str(value)


def _check_names(names: Sequence[str]) -> None:
  for name in names:
    if not isinstance(name, str) or not name or name in _RESERVED:
      raise ValueError(
          f"metric name: expected a non-empty string other than {_RESERVED},"
          f" got {name!r}"
      )


class MetricWriter(abc.ABC):
  """Writes slash-named metrics (`loss/total`, `select/frac`) by step."""

  @abc.abstractmethod
  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Writes numbers; jax/numpy scalars are converted to floats."""

  @abc.abstractmethod
  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    """Writes strings, e.g. sampled completions."""

  @abc.abstractmethod
  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    """Writes the run's hyperparameters (nested mappings are flattened)."""

  def flush(self) -> None:
    """Makes everything written so far durable."""

  def close(self) -> None:
    """Flushes and releases files; the writer is unusable afterwards."""

  def __enter__(self) -> MetricWriter:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


class NoOpWriter(MetricWriter):
  """Discards everything: the writer of processes other than 0."""

  def write_scalars(self, step, scalars):
    del step, scalars

  def write_texts(self, step, texts):
    del step, texts

  def write_hparams(self, hparams):
    del hparams


def truncate_jsonl(path: str | os.PathLike[str], step: int) -> int:
  """Drops the lines of `path` with a step greater than `step`.

  A resumed run re-executes the steps after its checkpoint, so their old
  lines would be duplicates. Lines that do not parse (a write cut short by
  a crash) are dropped too. The file is replaced atomically.

  Args:
    path: the JSONL file; nothing happens when it does not exist.
    step: the restored step; lines with `step <= step` (and lines without a
      step, such as hparams) are kept.

  Returns:
    The number of lines dropped.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    return 0
  kept, dropped = [], 0
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        dropped += 1
        continue
      if isinstance(record, dict) and record.get("step", step) > step:
        dropped += 1
        continue
      kept.append(line if line.endswith("\n") else line + "\n")
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.writelines(kept)
  os.replace(tmp, path)
  return dropped


class JsonlWriter(MetricWriter):
  """One JSON object per line: `{"step": s, "time": t, "loss/total": x, ...}`.

  Texts go on their own lines in the same shape (string values); hparams on
  a line `{"time": t, "hparams": {...}}`. Non-finite floats are written as
  `null`, so every line is valid JSON. The file is opened in append mode:
  a resumed run continues it, after `resume_step` dropped the lines of the
  steps it will redo.
  """

  def __init__(
      self, path: str | os.PathLike[str], *, resume_step: int | None = None
  ):
    """Opens `path` for appending.

    Args:
      path: the JSONL file (its directory is created).
      resume_step: the restored step of a resumed run: lines with a larger
        step are dropped first (see `truncate_jsonl`). None keeps the file.
    """
    self.path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
    if resume_step is not None:
      dropped = truncate_jsonl(self.path, resume_step)
      if dropped:
        logging.info(
            "%s: dropped %d lines after step %d",
            self.path,
            dropped,
            resume_step,
        )
    self._file = open(self.path, "a", encoding="utf-8")

  def _write(self, record: dict[str, Any]) -> None:
    # Flushed line by line: a killed run keeps every line it wrote, and the
    # resumed run (which truncates to its checkpoint) rewrites the rest.
    self._file.write(json.dumps(record, allow_nan=False) + "\n")
    self._file.flush()

  def write_scalars(self, step, scalars):
    _check_names(list(scalars))
    record = {"step": int(step), "time": time.time()}
    for name, value in scalars.items():
      value = to_float(name, value)
      record[name] = value if math.isfinite(value) else None
    self._write(record)

  def write_texts(self, step, texts):
    _check_names(list(texts))
    self._write({
        "step": int(step),
        "time": time.time(),
        **{k: str(v) for k, v in texts.items()},
    })

  def write_hparams(self, hparams):
    flat = {k: _hparam_value(v) for k, v in flatten(hparams).items()}
    flat = {
        k: v if not isinstance(v, float) or math.isfinite(v) else None
        for k, v in flat.items()
    }
    self._write({"time": time.time(), "hparams": flat})

  def flush(self):
    self._file.flush()

  def close(self):
    if not self._file.closed:
      self._file.close()


class TensorBoardWriter(MetricWriter):
  """TensorBoard event files through `tensorboardX.SummaryWriter`.

  Non-finite scalars are skipped (TensorBoard plots them as gaps at best);
  texts become text summaries; hparams go to the HParams plugin and, as a
  JSON text, to the text tab.
  """

  def __init__(
      self, logdir: str | os.PathLike[str], *, resume_step: int | None = None
  ):
    """Opens a new event file in `logdir`.

    Args:
      logdir: the run directory.
      resume_step: the restored step of a resumed run: TensorBoard then
        hides the older files' events after it (`purge_step`).
    """
    # Imported here: only process 0 of a run with TensorBoard needs it.
    import tensorboardX

    purge = None if resume_step is None else int(resume_step) + 1
    self._writer = tensorboardX.SummaryWriter(
        logdir=os.fspath(logdir), purge_step=purge, flush_secs=30
    )

  def write_scalars(self, step, scalars):
    _check_names(list(scalars))
    for name, value in scalars.items():
      value = to_float(name, value)
      if math.isfinite(value):
        self._writer.add_scalar(name, value, int(step))

  def write_texts(self, step, texts):
    _check_names(list(texts))
    for name, text in texts.items():
      self._writer.add_text(name, str(text), int(step))

  def write_hparams(self, hparams):
    from tensorboardX import summary  # pylint: disable=g-import-not-at-top

    flat = {k: _hparam_value(v) for k, v in flatten(hparams).items()}
    for proto in summary.hparams(flat, {}):
      self._writer.file_writer.add_summary(proto)
    self._writer.add_text("hparams", json.dumps(flat, indent=2, default=str))

  def flush(self):
    self._writer.flush()

  def close(self):
    self._writer.close()


class MultiWriter(MetricWriter):
  """Fans every call out to several writers."""

  def __init__(self, writers: Sequence[MetricWriter]):
    self.writers = tuple(writers)

  def write_scalars(self, step, scalars):
    for w in self.writers:
      w.write_scalars(step, scalars)

  def write_texts(self, step, texts):
    for w in self.writers:
      w.write_texts(step, texts)

  def write_hparams(self, hparams):
    for w in self.writers:
      w.write_hparams(hparams)

  def flush(self):
    for w in self.writers:
      w.flush()

  def close(self):
    for w in self.writers:
      w.close()


def create_writer(
    workdir: str | os.PathLike[str],
    *,
    is_main_process: bool,
    resume_step: int | None = None,
    tensorboard: bool = True,
) -> MetricWriter:
  """The run's writer: JSONL (+ TensorBoard) on process 0, a no-op elsewhere.

  Args:
    workdir: the run directory; writes `metrics.jsonl` and `tensorboard/`.
    is_main_process: `jax.process_index() == 0`; other processes must not
      write to the shared workdir.
    resume_step: the restored step when resuming (see `JsonlWriter`).
    tensorboard: also write TensorBoard event files.
  """
  if not is_main_process:
    return NoOpWriter()
  workdir = os.fspath(workdir)
  writers = [
      JsonlWriter(os.path.join(workdir, JSONL_NAME), resume_step=resume_step)
  ]
  if tensorboard:
    writers.append(
        TensorBoardWriter(
            os.path.join(workdir, TENSORBOARD_DIR), resume_step=resume_step
        )
    )
  return MultiWriter(writers)


def _format_value(value: Any) -> str:
  try:
    value = to_float("", value)
  except TypeError:
    return str(value)
  return f"{value:.4g}"


class ProgressBar:
  """Console progress: a tqdm bar on a TTY, plain lines otherwise.

  On a terminal, tqdm shows steps/s and the ETA, and the postfix shows
  tokens/s and the given metrics. When the output is not a terminal (CI,
  a pod's log file) a bar would print carriage returns, so a plain line is
  printed every `log_every` steps instead (and at most `PLAIN_LINES` over
  the run: the demo's 300 steps logged one by one would be 300 lines),
  with the same numbers measured over the steps since the previous line.
  Processes other than 0 print nothing.
  """

  PLAIN_LINES = 25

  def __init__(
      self,
      total_steps: int,
      initial_step: int = 0,
      *,
      is_main_process: bool = True,
      log_every: int = 10,
      file: TextIO | None = None,
  ):
    """Starts the bar at `initial_step` (a resumed run starts there).

    Args:
      total_steps: the last step of the run.
      initial_step: the step already done.
      is_main_process: print only when True.
      log_every: steps between plain lines (non-TTY only; more when the
        run would print over `PLAIN_LINES` of them).
      file: the output stream; `sys.stderr` when None.
    """
    if log_every < 1:
      raise ValueError(f"ProgressBar.log_every: expected >= 1, got {log_every}")
    self._file = file if file is not None else sys.stderr
    self._total = int(total_steps)
    self._every = max(int(log_every), -(-self._total // self.PLAIN_LINES))
    self._enabled = is_main_process
    isatty = getattr(self._file, "isatty", None)
    self._tty = bool(is_main_process and isatty and isatty())
    self._last = (time.monotonic(), int(initial_step), 0)
    self._tokens = 0
    self._bar = None
    if self._tty:
      from tqdm import auto as tqdm  # pylint: disable=g-import-not-at-top

      self._bar = tqdm.tqdm(
          total=self._total,
          initial=int(initial_step),
          unit="step",
          file=self._file,
          dynamic_ncols=True,
      )

  def update(
      self,
      step: int,
      metrics: Mapping[str, Any] | None = None,
      *,
      tokens: int | None = None,
  ) -> None:
    """Records that `step` is done.

    Args:
      step: the step just finished.
      metrics: a few metrics to show (e.g. `loss/total`).
      tokens: tokens processed since the previous update, for tokens/s.
    """
    if not self._enabled:
      return
    self._tokens += int(tokens or 0)
    shown = {k: _format_value(v) for k, v in (metrics or {}).items()}
    if self._bar is not None:
      now, last_step, last_tokens = self._last
      elapsed = max(time.monotonic() - now, 1e-9)
      if tokens is not None:
        shown["tok/s"] = f"{(self._tokens - last_tokens) / elapsed:.4g}"
      self._bar.set_postfix(shown, refresh=False)
      self._bar.update(int(step) - self._bar.n)
      self._last = (time.monotonic(), int(step), self._tokens)
      return
    if step % self._every and step != self._total:
      return
    print(
        self._line(int(step), shown, tokens is not None),
        file=self._file,
        flush=True,
    )

  def _line(self, step: int, shown: dict[str, str], has_tokens: bool) -> str:
    """`step 20/100 (20%) | 3.1 steps/s | 812 tok/s | eta 0:00:26 | ...`."""
    now = time.monotonic()
    then, last_step, last_tokens = self._last
    elapsed = max(now - then, 1e-9)
    rate = (step - last_step) / elapsed
    percent = 100 * step / self._total if self._total else 100.0
    parts = [
        f"step {step}/{self._total} ({percent:.0f}%)",
        f"{rate:.3g} steps/s",
    ]
    if has_tokens:
      parts.append(f"{(self._tokens - last_tokens) / elapsed:.4g} tok/s")
    if rate > 0:
      eta = datetime.timedelta(seconds=round((self._total - step) / rate))
      parts.append(f"eta {eta}")
    parts += [f"{k}={v}" for k, v in shown.items()]
    self._last = (now, step, self._tokens)
    return " | ".join(parts)

  def write(self, message: str) -> None:
    """Prints a line (e.g. the eval scores) without breaking the bar."""
    if not self._enabled:
      return
    if self._bar is not None:
      self._bar.write(message, file=self._file)
    else:
      print(message, file=self._file, flush=True)

  def close(self) -> None:
    """Closes the tqdm bar, if any."""
    if self._bar is not None:
      self._bar.close()
      self._bar = None

  def __enter__(self) -> ProgressBar:
    return self

  def __exit__(self, *exc) -> None:
    self.close()
