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
"""Rebuilds a run's student from its workdir (config + newest checkpoint)."""

from __future__ import annotations

import json
import os

import ml_collections
from flax import nnx

from opd_jax import sharding
from opd_jax.models import Transformer
from opd_jax.trainer.checkpointing import Checkpointer, CheckpointRestoreError
from opd_jax.trainer.config import (
    check_fields,
    ConfigError,
    to_run_config,
    with_defaults,
)
from opd_jax.trainer.plan import plan_run, split_abstract
from opd_jax.trainer.update import train_state_shardings
from opd_jax.trainer.workdir import CONFIG_FILE


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The run config saved in `workdir`, under today's names and defaults.

  A field this version does not know (a run saved by a newer one) is
  refused in one line naming it, not ignored.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"{path} not found: {workdir!r} is not an opd_jax training workdir"
    )
  with open(path) as f:
    c = with_defaults(json.load(f))
  try:
    check_fields(c)
  except ConfigError as e:
    raise ConfigError(
        f"{path}: {e} (a run saved by a newer version of opd_jax?)"
    ) from None
  return c


def _moved_student(workdir: str, c: ml_collections.ConfigDict) -> str:
  return (
      f"the run's student directory {c.student} (config.student) is not on"
      " this machine: restoring reads the model's shapes from its"
      f" config.json. The checkpoints in {os.path.join(workdir, 'checkpoints')}"
      " are unchanged; put the directory back at that path"
  )


def restore_student(
    workdir: str, mesh=None
) -> tuple[Transformer, int, ml_collections.ConfigDict]:
  """The student with the newest restorable checkpoint's parameters.

  Only the student's config is needed (and the teacher's when the run
  padded the student's vocabulary to it); directories that are not on this
  machine fall back to the run's presets.

  Returns:
    (model, step, run config).
  """
  c = load_run_config(workdir)
  moved = bool(c.student) and not os.path.isdir(c.student)
  if moved and not c.student_preset:
    raise FileNotFoundError(_moved_student(workdir, c))
  plan = plan_run(
      to_run_config(c),
      allow_preset_fallback=True,
      need_teacher=False,
      mesh=mesh,
  )
  graphdef, params = split_abstract(plan.abstract_model("student"))
  abstract_state = plan.abstract_state(params)
  target = sharding.with_shardings(
      abstract_state, train_state_shardings(plan.mesh, abstract_state)
  )
  checkpointer = Checkpointer(workdir, async_save=False)
  try:
    restored = checkpointer.restore_latest(target)
  except CheckpointRestoreError:
    if not moved:
      raise
    # The preset's shapes stood in for the student's and do not fit: the
    # checkpoints are not at fault.
    raise FileNotFoundError(
        _moved_student(workdir, c)
        + f" (config.student_preset={c.student_preset!r}, tried in its place,"
        " does not fit the checkpoints)"
    ) from None
  finally:
    checkpointer.close()
  if restored is None:
    raise FileNotFoundError(f"no restorable checkpoint in {workdir}")
  state, _, step = restored
  return nnx.merge(graphdef, state.params), step, c
