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
"""The jitted training step: trunks -> method loss -> guarded optimizer update.

The step's batch: `tokens` int32 [B, P + T], `mask` bool [B, P + T] (False
on padding), `response_mask` bool [B, T], `sampler_logprobs` [B, T]; for a
staged method also its `prepare` outputs: `segment/tokens`, `segment/mask`
[M, L] and `segment/response_mask` [M, W] are teacher-forced through both
trunks (`StepInputs.segment`), the rest reach the method as
`StepInputs.extras`; with a teacher context, `teacher/tokens`,
`teacher/mask` [B, Pt + T]: the teacher's own prompt, then the same
response ids, which the teacher scores instead of `tokens` (the response
is aligned by its end).

Mixed precision (`compute_dtype`, e.g. bfloat16): both trunks and heads run
with parameters cast to it; matmuls accumulate in float32, softmaxes and
the divergence stay float32, and the master parameters, gradients and
optimizer state keep their own dtype.

Micro-batches: both trunks run the rollouts' rows in `micro_batches` groups
of B / micro_batches rows, one group's activations live at a time
(`models.map_row_groups`; the student's groups are rematerialised, so its
backward recomputes one group's forward at a time). The heads, the
selection and the loss still see the whole batch: the step's result is the
same for any value, to float32 rounding. A staged method's segments run in
one group.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from opd_jax.methods import base
from opd_jax.methods.base import Method, Segment, StepInputs
from opd_jax.models import cast_floating, map_row_groups, response_hidden
from opd_jax.models import balance_loss, map_row_groups_with_sums
from opd_jax.models import response_hidden_and_router
from opd_jax.trainer import self_teacher
from opd_jax.trainer.state import TrainState
from opd_jax.trainer.update import guarded_update, jit_train_step

Batch = dict[str, jax.Array]


def train_step(
    state: TrainState,
    teacher_params: Any,
    batch: Batch,
    *,
    student_graphdef,
    teacher_graphdef,
    method: Method,
    optimizer: optax.GradientTransformation,
    eos_ids: Sequence[int] = (),
    learning_rate_fn: Callable[[jax.Array], jax.Array] | None = None,
    compute_dtype=None,
    teacher_weights: str = "external",
    divergence_clip: float = 0.0,
    micro_batches: int = 1,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One update of the student on a batch of rollouts (pure; jit it).

  Args:
    state: the TrainState (donated by the caller's jit).
    teacher_params: the frozen teacher's parameters (pure dict).
    batch: the step's batch (see the module docstring).
    student_graphdef, teacher_graphdef: from `nnx.split` of each model.
    method: the distillation objective (its `loss` on `StepInputs`).
    optimizer: the optax transformation matching `state.opt_state`.
    eos_ids, learning_rate_fn: for the EOS-rate and `train/lr` metrics.
    compute_dtype: the mixed-precision dtype, or None (the params' dtype).
    teacher_weights: 'external', 'live' or 'ema' (`step_teacher_params`).
    divergence_clip: > 0 clips each token's divergence in the methods'
      loss passes (`StepInputs.divergence_clip`).
    micro_batches: the trunks' row groups (see the module docstring).

  Returns:
    The new state and a flat dict of float32 scalar metrics; a non-finite
    loss or gradient leaves the state untouched and counts a skip.
  """
  tokens, mask = batch["tokens"], batch["mask"]
  response_mask = batch["response_mask"].astype(bool)
  t = response_mask.shape[1]  # T
  key = jax.random.fold_in(state.key, state.step)
  cast = lambda tree: cast_floating(tree, compute_dtype)
  trunk = functools.partial(_trunk, response_len=t, micro_batches=micro_batches)
  teacher_params = cast(
      self_teacher.step_teacher_params(teacher_weights, state, teacher_params)
  )
  teacher = _teacher_side(teacher_graphdef, teacher_params, batch, trunk)

  def loss_fn(params):
    params = cast(params)
    student = nnx.merge(student_graphdef, params)
    student_hidden, router = _student_trunk(
        student_graphdef, params, tokens, mask, t, micro_batches
    )
    inputs = StepInputs(
        student_hidden=student_hidden,
        student_head=student.head_matrix(),
        teacher_hidden=teacher.hidden,
        teacher_head=teacher.head,
        ids=tokens[:, -t:],
        mask=response_mask,
        sampler_logprobs=batch["sampler_logprobs"].astype(jnp.float32),
        key=key,
        segment=_segment(student, batch, teacher.segment_hidden),
        extras=_extras(batch) or None,
        divergence_clip=divergence_clip,
    )
    loss, metrics = method.loss(inputs)
    return _with_router_loss(student, router, loss, metrics)

  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params
  )
  new_state, update_metrics = guarded_update(state, loss, grads, optimizer)
  rollout = _rollout_metrics(tokens, response_mask, eos_ids)
  out = {"loss/total": loss, **update_metrics, **rollout, **metrics}
  if learning_rate_fn is not None:
    out["train/lr"] = learning_rate_fn(state.step)
  return new_state, {k: jnp.asarray(v, jnp.float32) for k, v in out.items()}


def _with_router_loss(student, router, loss, metrics):
  """A MoE student's loss plus transformers' router load-balancing term over
  the whole batch, weighted by its config's `router_aux_loss_coef`, and
  `loss/router_aux` reported; a dense student's (`router` None) as is."""
  if router is None:
    return loss, metrics
  aux = balance_loss(router)
  coef = student.config.router_aux_loss_coef
  return loss + coef * aux, {**metrics, "loss/router_aux": aux}


def _extras(batch: Batch) -> Batch:
  """A staged method's `prepare` outputs that reach it as
  `StepInputs.extras` (not the segments the step teacher-forces)."""
  return {
      k: v
      for k, v in batch.items()
      if k not in base.BASE_BATCH_KEYS
      and k not in base.SEGMENT_KEYS
      and k not in base.TEACHER_KEYS
  }


def _rollout_metrics(tokens, response_mask, eos_ids) -> dict[str, jax.Array]:
  """Mean response length and the share of responses that end (EOS)."""
  t = response_mask.shape[1]
  lengths = response_mask.sum(axis=1)
  ends = jnp.isin(tokens[:, -t:], jnp.asarray(eos_ids, jnp.int32)) & (
      response_mask
  )
  return {
      "rollout/len_mean": lengths.mean(dtype=jnp.float32),
      "rollout/eos_rate": ends.any(axis=1).mean(dtype=jnp.float32),
  }


def _trunk(
    graphdef,
    params,
    tokens,
    mask,
    differentiated,
    *,
    response_len,
    micro_batches,
):
  """[B, T, D] response hidden states, the rows in `micro_batches` groups
  (a differentiated trunk's groups rematerialised)."""
  one = lambda x, m: response_hidden(
      nnx.merge(graphdef, params), x, m, response_len
  )
  return map_row_groups(one, micro_batches, tokens, mask, remat=differentiated)


def _student_trunk(graphdef, params, tokens, mask, response_len, groups):
  """`_trunk` of the student (rematerialised groups) and its router sums
  over the whole batch (`models.moe.RouterStats`; None if dense)."""
  one = lambda x, m: response_hidden_and_router(
      nnx.merge(graphdef, params), x, m, response_len
  )
  return map_row_groups_with_sums(one, groups, tokens, mask, remat=True)


class TeacherSide(NamedTuple):
  """The teacher's side of a step, computed once without gradient."""

  hidden: jax.Array  # [B, T, Dt]
  head: jax.Array  # [Dt, V]
  segment_hidden: jax.Array | None  # [M, W, Dt], a staged method's windows


def _teacher_side(
    teacher_graphdef, teacher_params, batch: Batch, trunk
) -> TeacherSide:
  """The teacher's hidden states, head and segment hidden states.

  The teacher scores its own sequence (`teacher/tokens`) when the batch has
  one; a segment follows the teacher's own prefix (`teacher/segment/...`)
  and ends with the same window ids. Computed once, outside the
  differentiated function.
  """
  tokens, mask = batch["tokens"], batch["mask"]
  teacher = nnx.merge(teacher_graphdef, teacher_params)
  hidden = jax.lax.stop_gradient(
      trunk(
          teacher_graphdef,
          teacher_params,
          batch.get(base.TEACHER_TOKENS, tokens),
          batch.get(base.TEACHER_MASK, mask),
          False,
      )
  )
  head = jax.lax.stop_gradient(teacher.head_matrix())
  segment_hidden = None
  if base.SEGMENT_TOKENS in batch:
    seg_tokens = batch[base.SEGMENT_TOKENS]
    seg_mask = batch[base.SEGMENT_MASK].astype(bool)
    segment_hidden = jax.lax.stop_gradient(
        response_hidden(
            teacher,
            batch.get(base.TEACHER_SEGMENT_TOKENS, seg_tokens),
            batch.get(base.TEACHER_SEGMENT_MASK, seg_mask).astype(bool),
            batch[base.SEGMENT_RESPONSE_MASK].shape[1],
        )
    )
  return TeacherSide(hidden, head, segment_hidden)


def _segment(student, batch: Batch, teacher_hidden) -> Segment | None:
  """A staged method's teacher-forced windows (`StepInputs.segment`), the
  student's side under its gradient; None without segments."""
  if teacher_hidden is None:
    return None
  seg_tokens = batch[base.SEGMENT_TOKENS]
  seg_mask = batch[base.SEGMENT_MASK].astype(bool)
  seg_window = batch[base.SEGMENT_RESPONSE_MASK].astype(bool)
  w = seg_window.shape[1]
  return Segment(
      student_hidden=response_hidden(student, seg_tokens, seg_mask, w),
      teacher_hidden=teacher_hidden,
      ids=seg_tokens[:, -w:],
      mask=seg_window,
  )


def compile_step(
    mesh,
    abstract_state: TrainState,
    abstract_teacher: Any,
    abstract_batch: Batch,
    **step_kwargs,
):
  """`train_step` jitted once with explicit in/out shardings and donation.

  Returns:
    (jitted step, state shardings, teacher shardings, batch shardings).
  """
  return jit_train_step(
      functools.partial(train_step, **step_kwargs),
      mesh,
      abstract_state,
      abstract_batch,
      frozen=abstract_teacher,
  )
