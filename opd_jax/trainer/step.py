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
"""The jitted training step: trunks -> method loss -> guarded optimizer update."""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from opd_jax.methods import base
from opd_jax.methods.base import Method, Segment, StepInputs
from opd_jax.models import cast_floating, map_row_groups, response_hidden
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
    batch: `tokens` int32 [B, P + T], `mask` bool [B, P + T] (False on
      padding), `response_mask` bool [B, T], `sampler_logprobs` [B, T];
      for a staged method also its `prepare` outputs: `segment/tokens`,
      `segment/mask` [M, L] and `segment/response_mask` [M, W] are
      teacher-forced through both trunks (`StepInputs.segment`), the rest
      reach the method as `StepInputs.extras`; with a teacher context,
      `teacher/tokens`, `teacher/mask` [B, Pt + T]: the teacher's own
      prompt, then the same response ids, which the teacher scores
      instead of `tokens` (the response is aligned by its end).
    student_graphdef, teacher_graphdef: from `nnx.split` of each model.
    method: the distillation objective.
    optimizer: the optax transformation matching `state.opt_state`.
    eos_ids: ids that end a response (for the EOS-rate metric).
    learning_rate_fn: the schedule, for the `train/lr` metric.
    compute_dtype: e.g. `jnp.bfloat16` to run both trunks and heads with
      parameters cast to it (mixed precision: matmuls accumulate in float32,
      softmaxes and the divergence stay float32, the master parameters,
      gradients and optimizer state stay in their own dtype). None (default)
      computes in the parameters' dtype.
    teacher_weights: 'external' (`teacher_params`), or a self-teacher from
      the state: 'live' (the current parameters, no gradient) or 'ema'
      (`self_teacher.ema_params` of the optimizer state).
    divergence_clip: > 0 clips each token's divergence in the methods'
      `LossPass` losses (`StepInputs.divergence_clip`).
    micro_batches: both trunks run the rollouts' rows in this many groups
      of B / micro_batches rows, one group's activations live at a time
      (`models.map_row_groups`; the student's groups are rematerialised, so
      its backward recomputes one group's forward at a time). The heads,
      the selection and the loss still see the whole batch: the step's
      result is the same for any value, to float32 rounding. A staged
      method's segments run in one group.

  Returns:
    The new state and a flat dict of float32 scalar metrics. A step whose
    loss or gradient is not finite leaves params and optimizer state
    untouched and counts a skip.
  """
  tokens, mask = batch["tokens"], batch["mask"]
  response_mask = batch["response_mask"].astype(bool)
  t = response_mask.shape[1]
  key = jax.random.fold_in(state.key, state.step)

  cast = lambda tree: cast_floating(tree, compute_dtype)
  teacher_params = self_teacher.step_teacher_params(
      teacher_weights, state, teacher_params
  )

  def trunk_hidden(graphdef, params, tokens, mask, differentiated):
    """[B, T, D] response hidden states, the rows in `micro_batches` groups."""
    one = lambda x, m: response_hidden(nnx.merge(graphdef, params), x, m, t)
    return map_row_groups(
        one, micro_batches, tokens, mask, remat=differentiated
    )

  teacher_params = cast(teacher_params)
  teacher = nnx.merge(teacher_graphdef, teacher_params)
  teacher_tokens = batch.get(base.TEACHER_TOKENS, tokens)
  teacher_mask = batch.get(base.TEACHER_MASK, mask)
  teacher_hidden = jax.lax.stop_gradient(
      trunk_hidden(
          teacher_graphdef, teacher_params, teacher_tokens, teacher_mask, False
      )
  )
  teacher_head = jax.lax.stop_gradient(teacher.head_matrix())
  extras = {
      k: v
      for k, v in batch.items()
      if k not in base.BASE_BATCH_KEYS
      and k not in base.SEGMENT_KEYS
      and k not in base.TEACHER_KEYS
  }
  # A staged method's extra sequences: the teacher's side is computed once,
  # outside the differentiated function, like the rollout's.
  has_segment = base.SEGMENT_TOKENS in batch
  if has_segment:
    seg_tokens = batch[base.SEGMENT_TOKENS]
    seg_mask = batch[base.SEGMENT_MASK].astype(bool)
    seg_window = batch[base.SEGMENT_RESPONSE_MASK].astype(bool)
    w = seg_window.shape[1]
    # Under a teacher context the teacher's side of each segment follows
    # its own prefix; it ends with the same window ids.
    seg_teacher_hidden = jax.lax.stop_gradient(
        response_hidden(
            teacher,
            batch.get(base.TEACHER_SEGMENT_TOKENS, seg_tokens),
            batch.get(base.TEACHER_SEGMENT_MASK, seg_mask).astype(bool),
            w,
        )
    )

  def loss_fn(params):
    params = cast(params)
    student = nnx.merge(student_graphdef, params)
    segment = None
    if has_segment:
      segment = Segment(
          student_hidden=response_hidden(student, seg_tokens, seg_mask, w),
          teacher_hidden=seg_teacher_hidden,
          ids=seg_tokens[:, -w:],
          mask=seg_window,
      )
    inputs = StepInputs(
        student_hidden=trunk_hidden(
            student_graphdef, params, tokens, mask, True
        ),
        student_head=student.head_matrix(),
        teacher_hidden=teacher_hidden,
        teacher_head=teacher_head,
        ids=tokens[:, -t:],
        mask=response_mask,
        sampler_logprobs=batch["sampler_logprobs"].astype(jnp.float32),
        key=key,
        segment=segment,
        extras=extras or None,
        divergence_clip=divergence_clip,
    )
    return method.loss(inputs)

  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params
  )
  new_state, update_metrics = guarded_update(state, loss, grads, optimizer)
  lengths = response_mask.sum(axis=1)
  ends = jnp.isin(tokens[:, -t:], jnp.asarray(eos_ids, jnp.int32)) & (
      response_mask
  )
  out = {
      "loss/total": loss,
      **update_metrics,
      "rollout/len_mean": lengths.mean(dtype=jnp.float32),
      "rollout/eos_rate": ends.any(axis=1).mean(dtype=jnp.float32),
      **metrics,
  }
  if learning_rate_fn is not None:
    out["train/lr"] = learning_rate_fn(state.step)
  return new_state, {k: jnp.asarray(v, jnp.float32) for k, v in out.items()}


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
