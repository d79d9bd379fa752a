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
"""Self-distillation: the student's own weights as teacher, and its own prompt.

`config.teacher = 'self'` makes the student's model the teacher, with the
weights of `config.self_teacher.weights`: 'initial' (the frozen theta_0,
loaded like any teacher), 'live' (the current parameters under
stop-gradient) or 'ema' (an exponential moving average of them, kept in
the optimizer state so that a resumed run continues it exactly).
`config.teacher_context` gives the teacher a prompt of its own
(`data.context`); the step then scores `[teacher prompt | response]`
through the teacher (batch keys `teacher/tokens`, `teacher/mask`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from opd_jax import sharding
from opd_jax import methods
from opd_jax.methods.base import TEACHER_MASK, TEACHER_TOKENS
from opd_jax.trainer.run_config import RunConfig, Teacher


class SelfTeacherError(ValueError):
  """A self-teacher or teacher-context setting that cannot run."""


def _fail(field: str, message: str):
  raise SelfTeacherError(f"config.{field}: {message}")


def check_lengths(run: RunConfig, teacher_config) -> None:
  """The teacher's sequence fits its position table (a staged method's
  sequences, which continue it, too: `method.sequence_length`)."""
  ctx = run.teacher_context
  if ctx is None or teacher_config is None:
    return
  t = run.data.max_new_tokens
  length = ctx.max_prompt_len + t
  stage = ""
  if methods.has_stage(run.method):
    length = run.method.sequence_length(ctx.max_prompt_len, t)
    stage = (
        f" + the {run.method_name} stage's"
        f" {length - ctx.max_prompt_len - t} branched tokens"
    )
  if length > teacher_config.max_position_embeddings:
    _fail(
        "teacher_context.max_prompt_len",
        f"{ctx.max_prompt_len} + config.max_new_tokens={t}{stage} = {length}"
        " exceeds the teacher's max_position_embeddings"
        f" ({teacher_config.max_position_embeddings})",
    )


def abstract_teacher_batch(run: RunConfig) -> dict[str, Any]:
  """The teacher-side batch entries' shapes ({} without a context)."""
  ctx = run.teacher_context
  if ctx is None:
    return {}
  shape = (run.data.batch_size, ctx.max_prompt_len + run.data.max_new_tokens)
  return {
      TEACHER_TOKENS: jax.ShapeDtypeStruct(shape, jnp.int32),
      TEACHER_MASK: jax.ShapeDtypeStruct(shape, jnp.bool_),
  }


def teacher_sequences(
    host: dict[str, Any], batch: dict[str, Any], mesh, *, check: bool = False
):
  """`[teacher prompt | response]` ids and mask for the step ({} if none).

  The response ids and mask are the batch's last T columns, copied: both
  sequences end with the same tokens, at the same offsets from the end.
  `check` verifies that on the host (`check_response_ids`; one process
  only: it reads the whole batch).
  """
  if "teacher_prompt" not in host:
    return {}
  prompt, prompt_mask = sharding.global_batch(
      (host["teacher_prompt"], host["teacher_prompt_mask"]), mesh
  )
  t = batch["response_mask"].shape[1]
  tokens, mask = batch["tokens"][:, -t:], batch["mask"][:, -t:]
  out = {
      TEACHER_TOKENS: jnp.concatenate([prompt, tokens.astype(jnp.int32)], 1),
      TEACHER_MASK: jnp.concatenate([prompt_mask, mask.astype(bool)], 1),
  }
  if check and jax.process_count() == 1:
    check_response_ids(
        batch["tokens"], out[TEACHER_TOKENS], batch["response_mask"]
    )
  return out


def check_response_ids(tokens, teacher_tokens, response_mask) -> None:
  """Refuses a batch whose two sequences end with different response ids."""
  t = np.asarray(response_mask).shape[1]
  s, th = np.asarray(tokens)[:, -t:], np.asarray(teacher_tokens)[:, -t:]
  bad = np.argwhere((s != th) & np.asarray(response_mask, bool))
  if bad.size:
    b, i = bad[0]
    raise SelfTeacherError(
        f"teacher/tokens: response token {i} of row {b} is id {th[b, i]} in"
        f" the teacher's sequence but {s[b, i]} in the student's; both must"
        " end with the same response ids"
    )


def frozen_params(teacher: Teacher, teacher_params: Any) -> Any:
  """The step's teacher argument: {} when the teacher comes from the state."""
  return {} if teacher.step_weights != "external" else teacher_params


class EmaState(NamedTuple):
  """The EMA of the parameters (after each update), like the params."""

  ema: Any


def ema_tracker(decay: float) -> optax.GradientTransformation:
  """An optax stage that leaves updates alone and tracks EMA(params + updates).

  Chained last, it sees the final updates: its state is the EMA of the
  parameters each update produces, starting at the initial parameters. In
  the optimizer state it is checkpointed, sharded like the parameters and
  left untouched by a skipped (non-finite) step, like the Adam moments.
  """

  def init(params):
    return EmaState(ema=jax.tree.map(jnp.copy, params))

  def update(updates, state, params=None):
    new = optax.apply_updates(params, updates)
    ema = jax.tree.map(
        lambda e, p: (decay * e + (1.0 - decay) * p).astype(e.dtype),
        state.ema,
        new,
    )
    return updates, EmaState(ema=ema)

  return optax.GradientTransformation(init, update)


def wrap_optimizer(teacher: Teacher, optimizer):
  """The optimizer, with the EMA tracker chained last for an EMA teacher."""
  if teacher.step_weights != "ema":
    return optimizer
  return optax.chain(optimizer, ema_tracker(teacher.ema_decay))


def step_teacher_params(weights: str, state: Any, teacher_params: Any) -> Any:
  """The parameters a step's teacher scores with: the loaded ones
  (`weights='external'`), or a self-teacher's from TrainState `state`: the
  current parameters ('live') or their EMA ('ema'). The one place that
  choice is made (the step, the stage, sampling and token maps)."""
  if weights == "live":
    return state.params
  if weights == "ema":
    return ema_params(state.opt_state)
  if weights != "external":
    raise ValueError(f"teacher_weights: unknown {weights!r}")
  return teacher_params


def ema_params(opt_state: Any) -> Any:
  """The EMA parameters inside `wrap_optimizer`'s state."""
  if not (isinstance(opt_state, tuple) and isinstance(opt_state[-1], EmaState)):
    raise SelfTeacherError(
        "self_teacher.weights='ema': the optimizer state holds no EMA (was"
        " the optimizer built without self_teacher.wrap_optimizer?)"
    )
  return opt_state[-1].ema
