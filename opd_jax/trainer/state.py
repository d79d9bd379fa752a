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
"""The train state pytree and the optimizer (AdamW, warmup + cosine, clipping)."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from opd_jax import sharding


@flax.struct.dataclass
class TrainState:
  """Everything the step updates; donated to the jitted step.

  Attributes:
    step: int32 [], number of updates taken (skipped ones included).
    params: the student's parameters as a pure dict (`nnx.merge` takes it).
    opt_state: the optax state.
    key: uint32 [2] root PRNG key of the run (raw, so orbax saves it as a
      plain array; per-step keys fold in `step`).
    consecutive_skips: int32 [], steps in a row whose loss or gradient was
      not finite (reset by a good step).
    total_skips: int32 [], all skipped steps.
  """

  step: jax.Array
  params: Any
  opt_state: Any
  key: jax.Array
  consecutive_skips: jax.Array
  total_skips: jax.Array


def learning_rate_schedule(
    *,
    learning_rate: float,
    total_steps: int,
    warmup_steps: int = 0,
    end_lr_fraction: float = 0.1,
) -> optax.Schedule:
  """Linear warmup from 0 to `learning_rate`, then cosine decay.

  Reaches `end_lr_fraction * learning_rate` at `total_steps`; without warmup
  it starts at `learning_rate`.
  """
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0 if warmup_steps else learning_rate,
      peak_value=learning_rate,
      warmup_steps=warmup_steps,
      decay_steps=max(total_steps, warmup_steps + 1),
      end_value=learning_rate * end_lr_fraction,
  )


def make_optimizer(
    *,
    learning_rate: float,
    total_steps: int,
    warmup_steps: int = 0,
    end_lr_fraction: float = 0.1,
    weight_decay: float = 0.0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    clip_norm: float = 1.0,
) -> optax.GradientTransformation:
  """AdamW with linear warmup then cosine decay, after global-norm clipping.

  The schedule rises from 0 to `learning_rate` over `warmup_steps`, then
  decays along a cosine to `end_lr_fraction * learning_rate` at `total_steps`.
  `clip_norm <= 0` disables clipping.
  """
  schedule = learning_rate_schedule(
      learning_rate=learning_rate,
      total_steps=total_steps,
      warmup_steps=warmup_steps,
      end_lr_fraction=end_lr_fraction,
  )
  adamw = optax.adamw(
      schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay
  )
  if clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(clip_norm), adamw)
  return adamw


def init_state(
    params, optimizer: optax.GradientTransformation, key: jax.Array
) -> TrainState:
  """A fresh TrainState at step 0."""
  zero = jnp.zeros((), jnp.int32)
  return TrainState(
      step=zero,
      params=params,
      opt_state=optimizer.init(params),
      key=key,
      consecutive_skips=zero,
      total_skips=zero,
  )


def state_shardings(
    abstract_state: TrainState, param_shardings: Any, replicated
) -> TrainState:
  """Shardings of every TrainState leaf; optimizer moments follow the params.

  An optimizer leaf whose path ends with a parameter's path and has its shape
  (Adam's mu and nu) takes that parameter's sharding; the rest (step counts)
  is replicated.

  Args:
    abstract_state: a TrainState of arrays or ShapeDtypeStructs.
    param_shardings: shardings with the structure of `state.params`.
    replicated: the sharding of scalars and other non-parameter leaves.
  """
  by_path = {
      sharding.path_str(p): (s, x.shape)
      for (p, s), (_, x) in zip(
          jax.tree_util.tree_flatten_with_path(param_shardings)[0],
          jax.tree_util.tree_flatten_with_path(abstract_state.params)[0],
      )
  }

  def opt_leaf(path, x):
    name = sharding.path_str(path)
    for param_path, (s, shape) in by_path.items():
      if name.endswith("/" + param_path) and tuple(x.shape) == tuple(shape):
        return s
    return replicated

  opt = jax.tree_util.tree_map_with_path(opt_leaf, abstract_state.opt_state)
  return TrainState(
      step=replicated,
      params=param_shardings,
      opt_state=opt,
      key=replicated,
      consecutive_skips=replicated,
      total_skips=replicated,
  )
