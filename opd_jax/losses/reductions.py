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
"""Masked reductions of per-token losses as exactly combinable (sum, count)."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array
ArrayLike = Any


class WeightedMean(NamedTuple):
  r"""A mean kept as numerator and denominator, so that parts add exactly.

  .. math::
    \mathrm{value} = \frac{\mathrm{total}}{\max(\mathrm{count},
      \mathrm{min\_denom})}.

  Micro-batches and data shards each return one; ``a + b`` adds totals and
  counts, and dividing last gives the same mean as the whole batch at once
  (``jax.lax.psum`` of the pair does the same across devices). Being a
  NamedTuple it is a JAX pytree.

  Attributes:
    total: float32 scalar, the weighted sum of the values.
    count: float32 scalar, the sum of the weights (tokens or sequences); 0
      for the ``sum`` reduction, whose value is then the total.
  """

  total: Array
  count: Array

  def value(self, min_denom: float = 1.0) -> Array:
    """Returns total / max(count, min_denom); 0 when nothing is counted.

    Args:
      min_denom: the smallest denominator. The default 1 is right for 0/1
        masks (any non-empty count is >= 1) and makes the ``sum`` reduction
        (count 0) return its total; lower it for fractional weights.
    """
    return self.total / jnp.maximum(self.count, min_denom)

  def __add__(self, other: Any) -> "WeightedMean":
    if not isinstance(other, WeightedMean):
      return NotImplemented
    return WeightedMean(self.total + other.total, self.count + other.count)

  def __radd__(self, other: Any) -> "WeightedMean":
    # Lets the builtin sum() start from 0.
    if isinstance(other, int) and other == 0:
      return self
    return NotImplemented


def _prepare(values: ArrayLike, mask: ArrayLike) -> tuple[Array, Array]:
  """Checks shapes and returns float32 (masked values * weights, weights)."""
  values = jnp.asarray(values)
  mask = jnp.asarray(mask)
  if values.shape != mask.shape:
    raise ValueError(
        f"values and mask must have the same shape, got {values.shape} and"
        f" {mask.shape}."
    )
  if not jnp.issubdtype(values.dtype, jnp.floating):
    raise TypeError(f"values must be floating, got dtype {values.dtype}.")
  weights = mask.astype(jnp.float32)
  # where, not a product: a nan or inf at a masked position must not leak
  # into the sum or its gradient.
  weighted = jnp.where(weights != 0, values.astype(jnp.float32) * weights, 0.0)
  return weighted, weights


def token_mean(values: ArrayLike, mask: ArrayLike) -> WeightedMean:
  r"""Mean over all valid tokens of the batch (TRL's ``batchmean``).

  .. math::
    \frac{\sum_{b,t} m_{bt} x_{bt}}{\sum_{b,t} m_{bt}}.

  Args:
    values: per-token values, e.g. ``[batch, seq]``.
    mask: 0/1 (or boolean, or non-negative weight) array of the same shape.

  Returns:
    A scalar :class:`WeightedMean`.
  """
  weighted, weights = _prepare(values, mask)
  return WeightedMean(jnp.sum(weighted), jnp.sum(weights))


def seq_mean(values: ArrayLike, mask: ArrayLike) -> WeightedMean:
  r"""Mean over the valid tokens of each sequence, then over sequences.

  .. math::
    \frac{1}{|\{b : L_b > 0\}|} \sum_{b : L_b > 0}
      \frac{\sum_t m_{bt} x_{bt}}{L_b}, \qquad L_b = \sum_t m_{bt}.

  Sequences with no valid token are left out of the outer mean.

  Args:
    values: per-token values ``[batch, seq]`` (the last axis is the
      sequence; leading axes are all sequences).
    mask: 0/1 (or boolean, or non-negative weight) array of the same shape.

  Returns:
    A scalar :class:`WeightedMean` whose count is the number of sequences
    with at least one valid token.
  """
  weighted, weights = _prepare(values, mask)
  if weighted.ndim < 1:
    raise ValueError("values must have a sequence axis, got a scalar.")
  row_total = jnp.sum(weighted, axis=-1)
  row_count = jnp.sum(weights, axis=-1)
  has_tokens = row_count > 0
  row_mean = row_total / jnp.where(has_tokens, row_count, 1.0)
  return WeightedMean(
      jnp.sum(jnp.where(has_tokens, row_mean, 0.0)),
      jnp.sum(has_tokens.astype(jnp.float32)),
  )


def sum_reduction(values: ArrayLike, mask: ArrayLike) -> WeightedMean:
  r"""Masked sum; its ``value()`` is the total (the count is 0).

  .. math::
    \sum_{b,t} m_{bt} x_{bt}.

  Args:
    values: per-token values, e.g. ``[batch, seq]``.
    mask: 0/1 (or boolean, or weight) array of the same shape.

  Returns:
    A scalar :class:`WeightedMean` with count 0.
  """
  weighted, _ = _prepare(values, mask)
  return WeightedMean(jnp.sum(weighted), jnp.zeros((), jnp.float32))


REDUCTIONS: dict[str, Callable[[ArrayLike, ArrayLike], WeightedMean]] = {
    "token_mean": token_mean,
    "seq_mean": seq_mean,
    "sum": sum_reduction,
}


def reduce(values: ArrayLike, mask: ArrayLike, mode: str) -> WeightedMean:
  """Reduces per-token values with the named mode.

  Args:
    values: per-token values, e.g. ``[batch, seq]``.
    mask: 0/1 (or boolean, or weight) array of the same shape.
    mode: one of ``'token_mean'``, ``'seq_mean'``, ``'sum'``.

  Returns:
    A scalar :class:`WeightedMean`; call ``.value()`` for the loss.
  """
  if mode not in REDUCTIONS:
    raise ValueError(f"mode must be one of {sorted(REDUCTIONS)}, got {mode!r}.")
  return REDUCTIONS[mode](values, mask)
