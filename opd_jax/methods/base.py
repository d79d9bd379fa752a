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
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Protocol

import flax
import jax


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
  """

  student_hidden: jax.Array
  student_head: jax.Array
  teacher_hidden: jax.Array
  teacher_head: jax.Array
  ids: jax.Array
  mask: jax.Array
  sampler_logprobs: jax.Array
  key: jax.Array


Metrics = dict[str, jax.Array]


class Method(Protocol):
  """A distillation objective."""

  def loss(self, inputs: StepInputs) -> tuple[jax.Array, Metrics]:
    """Returns (scalar float32 loss, flat slash-namespaced metrics)."""


REGISTRY: dict[str, Callable[..., Method]] = {}


def register(name: str):
  """Class decorator adding a method dataclass to `REGISTRY` under `name`."""
  def wrap(cls):
    if name in REGISTRY:
      raise ValueError(f"method {name!r} registered twice")
    REGISTRY[name] = cls
    return cls
  return wrap


def build_method(name: str, args: Mapping[str, Any] | None = None) -> Method:
  """Instantiates the method `name` with keyword `args` (its config block).

  Raises:
    ValueError: unknown method or argument, naming the allowed ones.
  """
  if name not in REGISTRY:
    raise ValueError(
        f"config.method: unknown method {name!r}; expected one of"
        f" {sorted(REGISTRY)}")
  cls = REGISTRY[name]
  args = dict(args or {})
  fields = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(args) - fields)
  if unknown:
    raise ValueError(
        f"config.{name}: unknown field(s) {unknown}; {name} accepts"
        f" {sorted(fields)}")
  return cls(**args)
