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

import jax
import ml_collections
from flax import nnx

from opd_jax import sharding
from opd_jax.models import Transformer
from opd_jax.trainer import builders
from opd_jax.trainer.checkpointing import Checkpointer
from opd_jax.trainer.loop import CONFIG_FILE, optimizer_from_config
from opd_jax.trainer.state import init_state, state_shardings


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"{path} not found: {workdir!r} is not an opd_jax training workdir")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def restore_student(workdir: str, mesh=None) -> tuple[Transformer, int,
                                                      ml_collections.ConfigDict]:
  """The student with the newest restorable checkpoint's parameters.

  Returns:
    (model, step, run config).
  """
  c = load_run_config(workdir)
  mesh = mesh or builders.mesh_from_config(c)
  scfg, _ = builders.model_config(c, "student", allow_preset_fallback=True)
  if c.get("pad_student_vocab", False):
    tcfg, _ = builders.model_config(c, "teacher", allow_preset_fallback=True)
    scfg = scfg.replace(vocab_size=max(scfg.vocab_size, tcfg.vocab_size))
  dtype = builders._DTYPES[c.dtype]  # pylint: disable=protected-access
  graphdef, abstract = nnx.split(builders.abstract_model(scfg, dtype))
  optimizer, _ = optimizer_from_config(c)
  params = abstract.to_pure_dict()
  abstract_state = jax.eval_shape(
      lambda p: init_state(p, optimizer, jax.random.PRNGKey(0)), params)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  shardings = state_shardings(
      abstract_state, sharding.param_shardings(params, mesh), replicated)
  target = sharding.with_shardings(abstract_state, shardings)
  checkpointer = Checkpointer(workdir, async_save=False)
  try:
    restored = checkpointer.restore_latest(target)
  finally:
    checkpointer.close()
  if restored is None:
    raise FileNotFoundError(f"no restorable checkpoint in {workdir}")
  state, _, step = restored
  return nnx.merge(graphdef, state.params), step, c
