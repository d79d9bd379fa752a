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
"""A staged method's pre-update stage, jitted once: rollout -> batch extras."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from opd_jax.methods.base import StagedMethod, TEACHER_MASK, TEACHER_TOKENS
from opd_jax.models import cast_floating
from opd_jax.rollouts import Rollout, Sampling

Batch = dict[str, jax.Array]


def stage_key(seed: int, step: int) -> jax.Array:
  """The stage's PRNG key for `step` (apart from the rollout's, fold 1)."""
  return jax.random.fold_in(
      jax.random.fold_in(jax.random.PRNGKey(seed), step), 2
  )


def compile_prepare(
    method: StagedMethod,
    student_graphdef,
    teacher_graphdef,
    *,
    sampling: Sampling,
    eos_ids: Sequence[int],
    pad_id: int,
    compute_dtype=None,
) -> Callable[..., Batch]:
  """`method.prepare` as one jitted function of parameters and a batch.

  The returned function takes `(params, teacher_params, batch, key)` with
  the step's batch (`tokens` [B, P + T], `mask`, `response_mask` [B, T])
  and returns the extras to add to it. It runs no gradient; both models
  run in `compute_dtype` when given, like the step and the sampler.
  """
  eos_ids = tuple(int(e) for e in eos_ids)

  def prepare(
      params: Any, teacher_params: Any, batch: Batch, key: jax.Array
  ) -> Batch:
    cast = lambda tree: cast_floating(tree, compute_dtype)
    student = nnx.merge(student_graphdef, cast(params))
    teacher = nnx.merge(teacher_graphdef, cast(teacher_params))
    t = batch["response_mask"].shape[1]
    tokens, mask = batch["tokens"], batch["mask"].astype(bool)
    zeros = jnp.zeros(batch["response_mask"].shape, jnp.float32)
    rollout = Rollout(
        prompt=tokens[:, :-t],
        prompt_mask=mask[:, :-t],
        response=tokens[:, -t:],
        response_mask=batch["response_mask"].astype(bool),
        logprobs=zeros,
    )
    teacher_rollout = None
    if TEACHER_TOKENS in batch:  # a teacher context: its own prompt
      t_tokens = batch[TEACHER_TOKENS]
      t_mask = batch[TEACHER_MASK].astype(bool)
      teacher_rollout = rollout.replace(
          prompt=t_tokens[:, :-t], prompt_mask=t_mask[:, :-t]
      )
    return method.prepare(
        student,
        teacher,
        rollout,
        key,
        sampling=sampling,
        eos_ids=eos_ids,
        pad_id=int(pad_id),
        teacher_rollout=teacher_rollout,
    )

  return jax.jit(prepare)
