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
(corrupted or half-written files) is moved aside to
`<workdir>/corrupt_checkpoints/` with a warning, never deleted, and the
previous step is tried.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils


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
    for step in reversed(self.all_steps()):
      try:
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                data=ocp.args.JsonRestore(),
            ),
        )
        return restored["state"], dict(restored["data"]), step
      except Exception as e:  # orbax/tensorstore raise many types
        logging.warning(
            "Checkpoint step %d in %s cannot be restored (%s: %s); moving it"
            " to %s and trying the previous one.",
            step,
            self.directory,
            type(e).__name__,
            str(e)[:300],
            self.corrupt_directory,
        )
        print(
            f"WARNING: checkpoint step {step} is unreadable"
            f" ({type(e).__name__}); falling back to an earlier one"
        )
        self._set_aside(step)
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
