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
"""Orbax checkpointing of the train state and the data iterator, with fallback.

One CheckpointManager in `<workdir>/checkpoints` keeps the last N steps.
Restoring tries the newest step first; a step that cannot be restored
(corrupted or half-written files) is tried quietly (orbax's and
TensorStore's error dumps stay off the console) and the previous step is
tried. When an earlier step restores, the unreadable newer ones are moved
aside to `<workdir>/corrupt_checkpoints/` with one warning line each, never
deleted. When none restores, `CheckpointRestoreError` says so in one line
and nothing is moved: a run must not silently start over from step 0.
Half-written saves of a killed process (`*.orbax-checkpoint-tmp-*`) are
removed when the manager opens.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Iterator

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils


class CheckpointRestoreError(OSError):
  """Checkpoints exist, but none of them can be restored."""


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[list[str]]:
  """Holds back what orbax, TensorStore and absl write to stderr meanwhile.

  Yields a list that receives the held-back text (for a caller that wants
  to show it after all). `OPD_JAX_TRACEBACK=1` leaves stderr alone.
  """
  held: list[str] = []
  if os.environ.get("OPD_JAX_TRACEBACK"):
    yield held
    return
  root = logging.getLogger()
  level = root.level
  root.setLevel(logging.CRITICAL)
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile(mode="w+b") as tmp:
    os.dup2(tmp.fileno(), 2)
    try:
      yield held
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      root.setLevel(level)
      tmp.seek(0)
      held.append(tmp.read().decode("utf-8", "replace"))


def _reason(e: BaseException) -> str:
  """The first line of an orbax / TensorStore error, shortened."""
  lines = [l.strip() for l in str(e).splitlines() if l.strip()]
  text = lines[0] if lines else type(e).__name__
  text = text.split(" See full TensorStore details")[0]
  return (text[:200] + "...") if len(text) > 200 else text


class Checkpointer:
  """Saves and restores {state, data iterator position} at integer steps."""

  def __init__(
      self, workdir: str, *, max_to_keep: int = 3, async_save: bool = True
  ):
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    self.corrupt_directory = os.path.abspath(
        os.path.join(workdir, "corrupt_checkpoints")
    )
    self._options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        enable_async_checkpointing=async_save,
        create=True,
        cleanup_tmp_directories=True,
    )
    self._manager = self._new_manager()

  def _new_manager(self) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(self.directory, options=self._options)

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, data_state: dict[str, Any]) -> None:
    """Starts saving (asynchronously); every process must call it."""
    self._manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_state),
        ),
    )

  def restore_latest(
      self, abstract_state: Any
  ) -> tuple[Any, dict[str, Any], int] | None:
    """Restores the newest readable step into `abstract_state`'s shardings.

    Args:
      abstract_state: pytree of jax.ShapeDtypeStruct with `sharding` set.

    Returns:
      (state, data_state, step), or None if there is no usable checkpoint.
    """
    steps = self.all_steps()
    unreadable: list[tuple[int, str]] = []
    for step in reversed(steps):
      try:
        with _quiet_stderr():
          restored = self._manager.restore(
              step,
              args=ocp.args.Composite(
                  state=ocp.args.StandardRestore(abstract_state),
                  data=ocp.args.JsonRestore(),
              ),
          )
      except Exception as e:  # orbax/tensorstore raise many types
        unreadable.append((step, _reason(e)))
        continue
      for bad, reason in unreadable:  # one line each, on stdout
        print(
            f"WARNING: checkpoint step {bad} is unreadable ({reason}); moved"
            f" to {self.corrupt_directory}, resuming from step {step}"
        )
        self._set_aside(bad)
      return restored["state"], dict(restored["data"]), step
    if unreadable:
      listed = "; ".join(f"step {k}: {r}" for k, r in unreadable[:3])
      raise CheckpointRestoreError(
          f"no checkpoint in {self.directory} can be restored ({listed});"
          " nothing was changed. Move that directory away (or use a new"
          " --workdir) to start over"
      )
    return None

  def _set_aside(self, step: int) -> None:
    if jax.process_index() == 0:
      os.makedirs(self.corrupt_directory, exist_ok=True)
      src = os.path.join(self.directory, str(step))
      dst = os.path.join(
          self.corrupt_directory, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
      )
      if os.path.exists(src):
        shutil.move(src, dst)
    multihost_utils.sync_global_devices(f"opd_jax_set_aside_{step}")
    self._manager.close()
    self._manager = self._new_manager()

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
