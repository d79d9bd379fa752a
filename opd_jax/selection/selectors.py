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
"""Static-shape token selectors over per-token [batch, seq] score arrays."""

from __future__ import annotations

import fractions
import numbers
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

Array = jax.Array
ArrayLike = Any

# Fractions are rationalised so that floor(rho * L) is exact integer math; a
# float32 product such as 0.3 * 10 can land just below an integer.
_MAX_DENOMINATOR = 10_000


@flax.struct.dataclass
class Selection:
  """Which tokens a selector keeps, densely and as a static gather index.

  Attributes:
    weights: ``[batch, seq]`` float32 loss weights; 0 for dropped and invalid
      tokens, 1 (or a per-class weight) for kept ones.
    index: ``[batch, K]`` int32 positions of the kept tokens (kept ones first,
      in rank order), or None when no index was asked for. Padding slots hold
      some other in-range position.
    index_weights: ``[batch, K]`` float32, ``weights`` gathered at ``index`` for
      real slots and 0 for padding slots, or None.
  """

  weights: Array
  index: Array | None = None
  index_weights: Array | None = None


# ----------------------------------------------------------------- checks.


def check_scores(name: str, x: ArrayLike) -> Array:
  """Returns ``x`` as a float array of rank 2, or raises naming ``name``."""
  x = jnp.asarray(x)
  if x.ndim != 2:
    raise ValueError(f"{name} must be [batch, seq], got shape {x.shape}.")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"{name} must be floating, got dtype {x.dtype}.")
  return x


def check_mask(mask: ArrayLike, shape: tuple[int, ...]) -> Array:
  """Returns ``mask`` as bool of ``shape``, or raises."""
  mask = jnp.asarray(mask)
  if mask.shape != tuple(shape):
    raise ValueError(f"mask must have shape {tuple(shape)}, got {mask.shape}.")
  if mask.dtype != jnp.bool_:
    raise TypeError(f"mask must be bool, got dtype {mask.dtype}.")
  return mask


def check_entropy_divergence(
    entropy: ArrayLike, divergence: ArrayLike, mask: ArrayLike
) -> tuple[Array, Array, Array]:
  """Checks a token-scoring triple: two ``[batch, seq]`` float score arrays of
  the same shape and their bool mask; returns them as arrays."""
  entropy = check_scores("entropy", entropy)
  divergence = check_scores("divergence", divergence)
  if divergence.shape != entropy.shape:
    raise ValueError(
        "entropy and divergence must have the same shape, got"
        f" {entropy.shape} and {divergence.shape}."
    )
  return entropy, divergence, check_mask(mask, entropy.shape)


def check_fraction(name: str, value: Any, *, allow_zero: bool = True) -> float:
  """Returns ``value`` as a Python float in [0, 1] (or (0, 1]), or raises."""
  # Fractions set static shapes, so traced values are refused.
  if isinstance(value, (jax.Array, bool)) or not isinstance(
      value, numbers.Real
  ):
    raise TypeError(f"{name} must be a Python float, got {type(value)}.")
  lo_ok = value >= 0.0 if allow_zero else value > 0.0
  if not (lo_ok and value <= 1.0):
    interval = "[0, 1]" if allow_zero else "(0, 1]"
    raise ValueError(f"{name} must be in {interval}, got {value}.")
  return float(value)


# ------------------------------------------------------------ budgets.


def rational(fraction: float) -> fractions.Fraction:
  """Returns the fraction n / d (d <= 10 000) used for a float fraction."""
  return fractions.Fraction(fraction).limit_denominator(_MAX_DENOMINATOR)


def static_budget(fraction: float | fractions.Fraction, seq_len: int) -> int:
  """Returns the static gather size ``K = ceil(fraction * seq_len)``.

  A ``fractions.Fraction`` is used exactly; a float is rationalised as in
  :func:`floor_fraction`.
  """
  if isinstance(fraction, fractions.Fraction):
    if not 0 <= fraction <= 1:
      raise ValueError(f"fraction must be in [0, 1], got {fraction}.")
    frac = fraction
  else:
    frac = rational(check_fraction("fraction", fraction))
  return -(-frac.numerator * seq_len // frac.denominator)


def floor_fraction(fraction: float, counts: ArrayLike) -> Array:
  """Returns ``floor(fraction * counts)`` exactly, as int32 of counts' shape.

  ``fraction`` is rationalised to ``n / d`` (denominator at most 10 000), then
  the floor is computed in int32 as ``(c // d) * n + (c % d) * n // d``,
  which cannot overflow.
  """
  frac = rational(check_fraction("fraction", fraction))
  n, d = frac.numerator, frac.denominator
  counts = jnp.asarray(counts, jnp.int32)
  return (counts // d) * n + (counts % d) * n // d


def ceil_fraction(fraction: float, counts: ArrayLike) -> Array:
  """Returns ``ceil(fraction * counts)`` exactly, as int32 of counts' shape."""
  counts = jnp.asarray(counts, jnp.int32)
  frac = rational(check_fraction("fraction", fraction))
  floor = floor_fraction(fraction, counts)
  exact = (counts % frac.denominator) * frac.numerator % frac.denominator == 0
  return floor + jnp.where(exact, 0, 1).astype(jnp.int32)


def rollout_budget(fraction: float, mask: ArrayLike) -> Array:
  """Returns ``floor(fraction * L_b)`` per rollout, int32 ``[batch]``."""
  mask = jnp.asarray(mask)
  return floor_fraction(fraction, jnp.sum(mask, axis=-1, dtype=jnp.int32))


# -------------------------------------------------------- ranks / top-k.


def sequence_order(scores: Array, mask: Array) -> Array:
  """Positions sorted by descending score within each row, valid ones first.

  Ties keep the earlier position first (a stable sort), so the order is
  deterministic. Invalid positions come after every valid one, whatever
  their score (including -inf valid scores).

  Args:
    scores: ``[batch, seq]`` float scores.
    mask: ``[batch, seq]`` bool validity.

  Returns:
    ``[batch, seq]`` int32 positions; ``order[b, r]`` has rank ``r``.
  """
  invalid = (~mask).astype(jnp.int32)
  iota = jax.lax.broadcasted_iota(jnp.int32, scores.shape, scores.ndim - 1)
  # Two keys: validity first, then the negated score; stability settles ties.
  _, _, order = jax.lax.sort(
      (invalid, -scores, iota), dimension=-1, num_keys=2, is_stable=True
  )
  return order


def ranks_from_order(order: Array) -> Array:
  """Inverts ``order`` [batch, seq]: ``ranks[b, order[b, r]] = r``."""
  rows = jnp.arange(order.shape[0])[:, None]
  iota = jnp.broadcast_to(
      jnp.arange(order.shape[1], dtype=jnp.int32), order.shape
  )
  return jnp.zeros_like(order).at[rows, order].set(iota)


def select_top_counts(
    scores: ArrayLike,
    mask: ArrayLike,
    counts: ArrayLike,
    budget: int,
    *,
    return_index: bool = False,
    weights: ArrayLike | None = None,
) -> Selection:
  r"""Keeps the ``counts[b]`` highest-scoring valid tokens of each rollout.

  .. math::
    \mathrm{sel}_{b,t} = m_{b,t}\,[\mathrm{rank}_b(t) < \min(k_b, K)]

  with ranks by descending score and ties broken toward earlier positions.

  Args:
    scores: ``[batch, seq]`` float scores (stop-gradient is applied).
    mask: ``[batch, seq]`` bool validity.
    counts: ``[batch]`` int number of tokens to keep per rollout (traced).
    budget: static gather size ``K``; counts above it are clipped to it.
    return_index: also return the ``[batch, K]`` gather index.
    weights: optional ``[batch, seq]`` per-token weights of kept tokens
      (default 1).

  Returns:
    A :class:`Selection`.
  """
  scores = jax.lax.stop_gradient(check_scores("scores", scores))
  mask = check_mask(mask, scores.shape)
  if not isinstance(budget, int) or not 0 <= budget <= scores.shape[1]:
    raise ValueError(
        f"budget must be an int in [0, {scores.shape[1]}], got {budget}."
    )
  counts = jnp.minimum(jnp.asarray(counts, jnp.int32), budget)
  order = sequence_order(scores, mask)
  ranks = ranks_from_order(order)
  keep = mask & (ranks < counts[:, None])
  if weights is None:
    weights = keep.astype(jnp.float32)
  else:
    weights = jnp.where(keep, jax.lax.stop_gradient(weights), 0.0)
    weights = weights.astype(jnp.float32)
  if not return_index:
    return Selection(weights=weights)
  index = order[:, :budget]
  real = jnp.arange(budget)[None, :] < counts[:, None]
  gathered = jnp.take_along_axis(weights, index, axis=1)
  return Selection(weights, index, jnp.where(real, gathered, 0.0))


def top_fraction_per_sequence(
    scores: ArrayLike,
    mask: ArrayLike,
    fraction: float,
    *,
    return_index: bool = False,
) -> Selection:
  """Keeps the top ``floor(fraction * L_b)`` valid tokens of each rollout.

  Deterministic top-k by score with the earlier-position tie-break; the
  static gather size is ``K = ceil(fraction * seq)``.

  Args:
    scores: ``[batch, seq]`` float scores.
    mask: ``[batch, seq]`` bool validity.
    fraction: Python float in [0, 1].
    return_index: also return the ``[batch, K]`` gather index.

  Returns:
    A :class:`Selection`.
  """
  scores = check_scores("scores", scores)
  mask = check_mask(mask, scores.shape)
  budget = static_budget(fraction, scores.shape[1])
  counts = rollout_budget(fraction, mask)
  return select_top_counts(
      scores, mask, counts, budget, return_index=return_index
  )


def all_tokens(mask: ArrayLike, *, return_index: bool = False) -> Selection:
  """The full-token control: weights = m, index over all ``seq`` positions."""
  mask = jnp.asarray(mask)
  if mask.ndim != 2:
    raise ValueError(f"mask must be [batch, seq], got shape {mask.shape}.")
  mask = check_mask(mask, mask.shape)
  counts = jnp.sum(mask, axis=-1, dtype=jnp.int32)
  zeros = jnp.zeros(mask.shape, jnp.float32)
  return select_top_counts(
      zeros, mask, counts, mask.shape[1], return_index=return_index
  )


def gumbel_top_fraction(
    key: Array,
    weights: ArrayLike,
    mask: ArrayLike,
    fraction: float,
    *,
    alpha: float = 1.0,
    return_index: bool = False,
) -> Selection:
  r"""Samples ``floor(fraction * L_b)`` tokens per rollout ∝ ``weights**alpha``.

  Gumbel-top-k: :math:`\arg\mathrm{top}_k(\alpha\log w_t + G_t)`,
  :math:`G_t \sim \mathrm{Gumbel}(0, 1)`, is exactly sequential sampling
  without replacement with probabilities proportional to :math:`w^\alpha`.
  Tokens of zero weight come only after every positive-weight one.

  Args:
    key: a PRNG key.
    weights: ``[batch, seq]`` non-negative float weights.
    mask: ``[batch, seq]`` bool validity.
    fraction: Python float in [0, 1].
    alpha: exponent on the weights.
    return_index: also return the ``[batch, K = ceil(fraction * seq)]`` index.

  Returns:
    A :class:`Selection` with unit weights on the sampled tokens.
  """
  weights = jax.lax.stop_gradient(check_scores("weights", weights))
  mask = check_mask(mask, weights.shape)
  weights = weights.astype(jnp.float32)
  gumbel = jax.random.gumbel(key, weights.shape, jnp.float32)
  # Zero weights skip the log so that alpha = 0 cannot make 0 * -inf = nan.
  logw = jnp.log(jnp.where(weights > 0, weights, 1.0))
  keys = jnp.where(weights > 0, alpha * logw + gumbel, -jnp.inf)
  return top_fraction_per_sequence(
      keys, mask, fraction, return_index=return_index
  )


def uniform_random(
    key: Array,
    mask: ArrayLike,
    fraction: float,
    *,
    return_index: bool = False,
) -> Selection:
  """The random control: ``floor(fraction * L_b)`` uniform tokens per row."""
  mask = jnp.asarray(mask)
  if mask.ndim != 2:
    raise ValueError(f"mask must be [batch, seq], got shape {mask.shape}.")
  ones = jnp.ones(mask.shape, jnp.float32)
  return gumbel_top_fraction(
      key, ones, mask, fraction, return_index=return_index
  )


# ------------------------------------------------- global statistics.


def masked_quantile(x: ArrayLike, mask: ArrayLike, q: float) -> Array:
  """Exact ``q``-quantile of the valid entries of ``x`` (all axes).

  Matches ``numpy.quantile(x[mask], q)`` (linear interpolation) through a
  masked sort and a traced index, so shapes stay static. Returns 0 when no
  entry is valid.

  Args:
    x: float array.
    mask: bool array of the same shape.
    q: Python float in [0, 1].

  Returns:
    A float32 scalar.
  """
  q = check_fraction("q", q)
  x = jnp.asarray(x, jnp.float32).reshape(-1)
  mask = jnp.asarray(mask).reshape(-1)
  n = jnp.sum(mask, dtype=jnp.int32)
  ordered = jnp.sort(jnp.where(mask, x, jnp.inf))
  pos = q * jnp.maximum(n - 1, 0).astype(jnp.float32)
  lo = jnp.floor(pos).astype(jnp.int32)
  hi = jnp.minimum(lo + 1, jnp.maximum(n - 1, 0))
  x_lo, x_hi = jnp.take(ordered, lo), jnp.take(ordered, hi)
  frac = pos - lo.astype(jnp.float32)
  # Written as lerp from both ends so that frac = 0 never touches x_hi = inf.
  value = jnp.where(frac > 0, x_lo + frac * (x_hi - x_lo), x_lo)
  return jnp.where(n > 0, value, 0.0)


def masked_min_max(
    x: ArrayLike, mask: ArrayLike, axis: int | None = None
) -> tuple[Array, Array]:
  """Min and max of the valid entries over ``axis`` (None: all), keepdims."""
  x = jnp.asarray(x, jnp.float32)
  lo = jnp.min(jnp.where(mask, x, jnp.inf), axis=axis, keepdims=True)
  hi = jnp.max(jnp.where(mask, x, -jnp.inf), axis=axis, keepdims=True)
  return lo, hi


def min_max_normalize(
    x: ArrayLike, mask: ArrayLike, axis: int | None = None
) -> Array:
  r"""Min–max normalises ``x`` over its valid entries.

  .. math::
    \hat x = \frac{x - \min_{m} x}{\max_{m} x - \min_{m} x}

  with the statistics taken over valid entries along ``axis`` (None: the
  whole batch). Where max = min (or nothing is valid) the result is 0, and
  invalid entries are 0.

  Args:
    x: float array, e.g. ``[batch, seq]``.
    mask: bool array of the same shape.
    axis: reduction axis; None for global (per-batch) statistics.

  Returns:
    float32 array of ``x``'s shape, in [0, 1] on valid entries.
  """
  x = jnp.asarray(x, jnp.float32)
  mask = jnp.asarray(mask)
  lo, hi = masked_min_max(x, mask, axis)
  span = hi - lo
  ok = mask & jnp.isfinite(span) & (span > 0)
  safe_span = jnp.where(ok, span, 1.0)
  return jnp.where(ok, (jnp.where(mask, x, lo) - lo) / safe_span, 0.0)


def global_top_fraction(
    scores: ArrayLike, mask: ArrayLike, fraction: float
) -> Array:
  """Marks the top ``ceil(fraction * N_valid)`` valid tokens of the batch.

  Exact budget: ranks come from a stable sort of the flattened ``[B * T]``
  scores, so ties go to the earlier (row-major) position.

  Args:
    scores: ``[batch, seq]`` float scores (stop-gradient is applied).
    mask: ``[batch, seq]`` bool validity.
    fraction: Python float in [0, 1].

  Returns:
    ``[batch, seq]`` bool.
  """
  scores = jax.lax.stop_gradient(check_scores("scores", scores))
  mask = check_mask(mask, scores.shape)
  n_keep = ceil_fraction(fraction, jnp.sum(mask, dtype=jnp.int32))
  flat_order = sequence_order(scores.reshape(1, -1), mask.reshape(1, -1))
  ranks = ranks_from_order(flat_order).reshape(scores.shape)
  return mask & (ranks < n_keep)


def gather_positions(x: Array, index: Array) -> Array:
  """Gathers sequence positions per row: ``out[b, k] = x[b, index[b, k]]``.

  Out-of-range indices are clipped (padded slots should carry weight 0).
  The gradient scatters back into ``[B, T, ...]``, which is cheap: no
  vocabulary axis is involved.

  Args:
    x: ``[batch, seq, ...]`` array, e.g. hidden states ``[B, T, D]``.
    index: integer ``[batch, k]`` positions.

  Returns:
    ``[batch, k, ...]`` array.
  """
  if x.ndim < 2:
    raise ValueError(f"x must be [batch, seq, ...], got shape {x.shape}.")
  if index.ndim != 2 or index.shape[0] != x.shape[0]:
    raise ValueError(
        f"index must be [batch={x.shape[0]}, k], got shape {index.shape}."
    )
  if not jnp.issubdtype(index.dtype, jnp.integer):
    raise TypeError(f"index must be integer, got dtype {index.dtype}.")
  return jax.vmap(lambda xb, ib: jnp.take(xb, ib, axis=0, mode="clip"))(
      x, index
  )


def mask_to_index(mask: Array, k: int) -> tuple[Array, Array]:
  """Turns a [B, T] selection mask into a static-size gather index.

  Positions are ranked by ``(mask != 0) * T - t`` with ``lax.top_k``, so the
  selected positions come first, earliest first; if a row has more than
  ``k`` selected positions only its earliest ``k`` are kept. Slots beyond a
  row's selection point at unselected positions and get weight 0.

  Args:
    mask: ``[batch, seq]`` 0/1 (boolean or weight) selection mask.
    k: static number of slots per row.

  Returns:
    ``(index, index_weights)``: int32 ``[batch, k]`` positions and float32
    ``[batch, k]`` mask values at those positions (0 for padded slots).
  """
  if mask.ndim != 2:
    raise ValueError(f"mask must be [batch, seq], got shape {mask.shape}.")
  t = mask.shape[1]
  if not 1 <= k <= t:
    raise ValueError(f"k must be in [1, seq={t}], got {k}.")
  # Integer scores are exact for any T; selected rows score in [1, T],
  # unselected in [1 - T, 0].
  score = (mask != 0).astype(jnp.int32) * t - jnp.arange(t, dtype=jnp.int32)
  _, index = jax.lax.top_k(score, k)
  index = index.astype(jnp.int32)
  weights = jnp.take_along_axis(mask.astype(jnp.float32), index, axis=1)
  return index, weights
