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
"""The guarded optimizer update and the one jit of a training step.

The distillation step and the SFT step differ only in their loss; both
apply the update here (skipping non-finite steps) and are compiled by
`jit_train_step` with explicit shardings and the state donated.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from opd_jax import sharding
from opd_jax.trainer.state import TrainState, state_shardings

Batch = dict[str, jax.Array]


def guarded_update(
    state: TrainState,
    loss: jax.Array,
    grads: Any,
    optimizer: optax.GradientTransformation,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """Applies `grads` unless the loss or the gradient is not finite.

  A non-finite step leaves the parameters and optimizer state untouched,
  still advances `step`, and counts a skip (`consecutive_skips` resets on
  the next good step), so one bad batch cannot poison a run.

  Returns:
    The new state and `train/grad_norm`, `train/skipped` metrics.
  """
  grad_norm = optax.global_norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

  def apply(params, opt_state):
    updates, new_opt = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new_opt

  params, opt_state = jax.lax.cond(
      finite, apply, lambda p, o: (p, o), state.params, state.opt_state
  )
  skipped = (~finite).astype(jnp.int32)
  new_state = TrainState(
      step=state.step + 1,
      params=params,
      opt_state=opt_state,
      key=state.key,
      consecutive_skips=(state.consecutive_skips + 1) * skipped,
      total_skips=state.total_skips + skipped,
  )
  return new_state, {
      "train/grad_norm": grad_norm,
      "train/skipped": skipped.astype(jnp.float32),
  }


def train_state_shardings(mesh, abstract_state: TrainState) -> TrainState:
  """Shardings of a TrainState on `mesh`: parameters by the partition
  rules, optimizer moments like their parameters, the rest replicated."""
  return state_shardings(
      abstract_state,
      sharding.param_shardings(abstract_state.params, mesh),
      NamedSharding(mesh, P()),
  )


def batch_shardings(mesh, batch: Batch) -> Batch:
  """Batch-split NamedShardings for every entry of `batch`."""
  return {
      k: NamedSharding(
          mesh, sharding.fit_spec(sharding.batch_spec(v.ndim), v.shape, mesh)
      )
      for k, v in batch.items()
  }


def jit_train_step(
    step_fn: Callable[..., tuple[TrainState, dict[str, jax.Array]]],
    mesh,
    abstract_state: TrainState,
    abstract_batch: Batch,
    *,
    frozen: Any = None,
):
  """Jits ``step_fn(state, [frozen,] batch)`` once for `mesh`.

  The state is donated and keeps its shardings (optimizer moments follow
  their parameters); `frozen` (e.g. the teacher's parameters) is sharded by
  the parameter rules and passed between state and batch when given; the
  batch is split over the data axes; metrics come back replicated.

  Returns:
    (jitted step, state shardings, frozen shardings or None, batch
    shardings).
  """
  replicated = NamedSharding(mesh, P())
  state_sh = train_state_shardings(mesh, abstract_state)
  batch_sh = batch_shardings(mesh, abstract_batch)
  frozen_sh = None if frozen is None else sharding.param_shardings(frozen, mesh)
  in_shardings = (
      (state_sh, batch_sh)
      if frozen is None
      else (state_sh, frozen_sh, batch_sh)
  )
  jitted = jax.jit(
      step_fn,
      in_shardings=in_shardings,
      out_shardings=(state_sh, replicated),
      donate_argnums=0,
  )
  return jitted, state_sh, frozen_sh, batch_sh


def compile_ahead(jitted, *abstract_args):
  """Lowers and compiles `jitted` for abstract (sharded) args; no data runs.

  Returns:
    (compiled function, its memory analysis or None where the backend
    gives none).
  """
  compiled = jitted.lower(*abstract_args).compile()
  return compiled, compiled.memory_analysis()
