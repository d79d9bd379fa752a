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
"""The interface between the jitted training step and a distillation method.

The step runs the student trunk (with gradient) and the teacher trunk
(without) over the rollout, and hands the method the response-aligned hidden
states and both vocabulary heads. The method decides which [., V] tensors to
form (chunked, or on selected positions only) and returns a scalar loss plus
a flat dict of metrics. Methods are frozen dataclasses built from a
config mapping through `REGISTRY`.

A method with a pre-update stage (`StagedMethod`, e.g. TOPD) also defines
`prepare`: run by the loop between sampling and the update, without
gradient, it returns static-shape arrays that ride in the batch into the
step. Batch keys `segment/*` ask the step to teacher-force extra sequences
through both trunks (`StepInputs.segment`); every other extra key reaches
the method as `StepInputs.extras`.

A method that selects or weights tokens also names them
(`TokenSetMethod.token_sets`): the sets its loss takes and the per-token
scores it ranks them by, computed by the same code as its loss. The token
map (`diagnostics.token_map`) shows a run's method and every other
registered method that names token sets, asking each of them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

import flax
import jax

# The batch entries every step gets; a stage's outputs come on top.
BASE_BATCH_KEYS = ("tokens", "mask", "response_mask", "sampler_logprobs")
# Extra sequences for the step to teacher-force: ids and mask [M, L] of
# prefix + window, and the window's mask [M, W] (its last W positions).
SEGMENT_TOKENS = "segment/tokens"
SEGMENT_MASK = "segment/mask"
SEGMENT_RESPONSE_MASK = "segment/response_mask"
# Under a teacher context, the teacher's side of the same segments: its own
# prefix [teacher prompt | response prefix], then the same window [M, Lt].
TEACHER_SEGMENT_TOKENS = "segment/teacher_tokens"
TEACHER_SEGMENT_MASK = "segment/teacher_mask"
SEGMENT_KEYS = (
    SEGMENT_TOKENS,
    SEGMENT_MASK,
    SEGMENT_RESPONSE_MASK,
    TEACHER_SEGMENT_TOKENS,
    TEACHER_SEGMENT_MASK,
)
# The teacher's own sequence [B, Pt + T] (a privileged prompt, then the same
# response ids): the step scores the teacher on it instead of `tokens`.
TEACHER_TOKENS = "teacher/tokens"
TEACHER_MASK = "teacher/mask"
TEACHER_KEYS = (TEACHER_TOKENS, TEACHER_MASK)


@flax.struct.dataclass
class Segment:
  """Extra sequences teacher-forced by the step, aligned with their windows.

  Position w of every [M, W] array refers to window token w (the hidden
  states predict it, as in `StepInputs`).

  Attributes:
    student_hidden: [M, W, Ds] student hidden states (gradient).
    teacher_hidden: [M, W, Dt] teacher hidden states (no gradient).
    ids: int32 [M, W] window tokens.
    mask: bool [M, W] window tokens that count.
  """

  student_hidden: jax.Array
  teacher_hidden: jax.Array
  ids: jax.Array
  mask: jax.Array


@flax.struct.dataclass
class StepInputs:
  """What a method's loss sees, aligned with the response tokens.

  Position t of every [B, T] array refers to response token t: the hidden
  states are those that *predict* it (the model's output at the previous
  position).

  Attributes:
    student_hidden: [B, T, Ds] student final-norm hidden states (gradient).
    student_head: [Ds, V] student vocabulary head (gradient).
    teacher_hidden: [B, T, Dt] teacher hidden states (no gradient).
    teacher_head: [Dt, V] teacher vocabulary head (no gradient).
    ids: int32 [B, T] response tokens.
    mask: bool [B, T] response mask (True up to and including EOS).
    sampler_logprobs: float32 [B, T] log-probs recorded by the sampler (0 on
      dataset responses, which no sampler produced).
    key: PRNG key for stochastic selectors.
    segment: the teacher-forced extra sequences of a staged method, or None.
    extras: the other arrays its `prepare` returned, by batch key, or None.
    divergence_clip: static; when > 0, `LossPass` losses clip each token's
      divergence at it (`config.teacher_context.kl_clip`).
  """

  student_hidden: jax.Array
  student_head: jax.Array
  teacher_hidden: jax.Array
  teacher_head: jax.Array
  ids: jax.Array
  mask: jax.Array
  sampler_logprobs: jax.Array
  key: jax.Array
  segment: Segment | None = None
  extras: dict[str, jax.Array] | None = None
  divergence_clip: float = flax.struct.field(pytree_node=False, default=0.0)

  @property
  def hidden_and_heads(
      self,
  ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """(student_hidden, student_head, teacher_hidden, teacher_head): the
    leading arguments of every `opd_jax.heads` pass over the response."""
    return (
        self.student_hidden,
        self.student_head,
        self.teacher_hidden,
        self.teacher_head,
    )


Metrics = dict[str, jax.Array]


@flax.struct.dataclass
class TokenSet:
  """One named per-token view of a batch, as the method computes it.

  Attributes:
    values: ``[B, T]``: bool for a set of tokens (those the loss takes, or a
      part of them), float32 for a channel (a per-token score the method
      ranks or weights tokens by); False / 0 where the mask is False.
    description: one line, shown in the token map.
    value_range: a channel's natural (lo, hi) colour range, or None (the
      page colours it by its min and max).
  """

  values: jax.Array
  description: str = flax.struct.field(pytree_node=False, default="")
  value_range: tuple[float, float] | None = flax.struct.field(
      pytree_node=False, default=None
  )


class Method(Protocol):
  """A distillation objective."""

  def loss(self, inputs: StepInputs) -> tuple[jax.Array, Metrics]:
    """Returns (scalar float32 loss, flat slash-namespaced metrics)."""


@runtime_checkable
class StagedMethod(Protocol):
  """A method with a non-differentiated stage between sampling and update.

  The loop calls `prepare` (jitted once) on each step's rollout with the
  current student and the teacher; its outputs, of the static shapes
  `prepare_shapes` announces, join the step's batch. `segment/*` entries
  are teacher-forced by the step (`StepInputs.segment`), the others reach
  `loss` as `StepInputs.extras`.
  """

  def loss(self, inputs: StepInputs) -> tuple[jax.Array, Metrics]:
    """Returns (scalar float32 loss, flat slash-namespaced metrics)."""

  def prepare(
      self,
      student,
      teacher,
      rollout,
      key: jax.Array,
      *,
      sampling,
      eos_ids: tuple[int, ...],
      pad_id: int,
      teacher_rollout=None,
  ) -> dict[str, jax.Array]:
    """Measures a rollout (no gradient); returns the batch extras.

    `teacher_rollout`, when given, is the same response after the
    teacher's own prompt (a teacher context): the teacher scores and
    branches from it."""

  def prepare_shapes(
      self, batch_size: int, prompt_len: int, response_len: int
  ) -> dict[str, jax.ShapeDtypeStruct]:
    """The extras' shapes; raises ValueError for a config the shapes
    cannot hold (naming the field)."""

  def sequence_length(self, prompt_len: int, response_len: int) -> int:
    """The longest sequence the stage or its segments run the models on."""


def has_stage(method: Method) -> bool:
  """Whether `method` has a pre-update stage (see `StagedMethod`)."""
  return isinstance(method, StagedMethod)


@runtime_checkable
class LossPassMethod(Protocol):
  """A method whose loss goes through a `common.LossPass` (`loss_pass`):
  its head-pass settings nest under `config.<method>.loss_pass`, and its
  loss takes the step's pointwise clip (`StepInputs.divergence_clip`)."""

  loss_pass: Any

  def loss(self, inputs: StepInputs) -> tuple[jax.Array, Metrics]:
    """Returns (scalar float32 loss, flat slash-namespaced metrics)."""


def has_loss_pass(method: Method) -> bool:
  """Whether `method`'s loss goes through a loss pass (`LossPassMethod`)."""
  return isinstance(method, LossPassMethod)


@runtime_checkable
class TokenSetMethod(Protocol):
  """A method that names the tokens it trains on.

  `token_sets` runs on the step's inputs (a staged method's `prepare`
  outputs in `extras`; `segment` may be None) and returns, by name, the
  token sets its loss takes and its per-token scores (`TokenSet`), with
  the config's settings, through the code its `loss` runs (no gradient).
  The token map shows them as ``<method>_<name>``.
  """

  def loss(self, inputs: StepInputs) -> tuple[jax.Array, Metrics]:
    """Returns (scalar float32 loss, flat slash-namespaced metrics)."""

  def token_sets(self, inputs: StepInputs) -> dict[str, TokenSet]:
    """The method's token sets and channels [B, T] of a batch."""


def has_token_sets(method: Method) -> bool:
  """Whether `method` names its token sets (see `TokenSetMethod`)."""
  return isinstance(method, TokenSetMethod)


REGISTRY: dict[str, Callable[..., Method]] = {}
# The method a config runs unless it sets `config.method`.
DEFAULT_METHOD = "tip"


def register(name: str):
  """Class decorator adding a method dataclass to `REGISTRY` under `name`."""

  def wrap(cls):
    if name in REGISTRY:
      raise ValueError(f"method {name!r} registered twice")
    REGISTRY[name] = cls
    return cls

  return wrap


def method_name(method: Method) -> str:
  """The name `method`'s class is registered under.

  Raises:
    ValueError: the class is not registered.
  """
  for name, cls in REGISTRY.items():
    if type(method) is cls:  # pylint: disable=unidiomatic-typecheck
      return name
  raise ValueError(f"{type(method).__name__} is not a registered method")


def renamed_fields(name: str) -> dict[str, tuple[str, Mapping[str, Any]]]:
  """{old field: (new field, {old value: new value})} of method `name`.

  A method class lists the fields its saved configs may hold under an old
  name as `RENAMED` (`{'tip_divergence': 'score_divergence'}`, dotted
  within its block) and their old values as `RENAMED_VALUES`; the trainer
  reads saved runs and refuses old flags through this table.
  """
  cls = REGISTRY[name]
  values = getattr(cls, "RENAMED_VALUES", {})
  return {
      old: (new, values.get(old, {}))
      for old, new in getattr(cls, "RENAMED", {}).items()
  }


def build_method(name: str, args: Mapping[str, Any] | None = None) -> Method:
  """Instantiates the method `name` with keyword `args` (its config block).

  Raises:
    ValueError: unknown method or argument, naming the allowed ones.
  """
  if name not in REGISTRY:
    raise ValueError(
        f"config.method: unknown method {name!r}; expected one of"
        f" {sorted(REGISTRY)}"
    )
  cls = REGISTRY[name]
  args = dict(args or {})
  fields = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(args) - fields)
  if unknown:
    raise ValueError(
        f"config.{name}: unknown field(s) {unknown}; {name} accepts"
        f" {sorted(fields)}"
    )
  return cls(**args)
