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
"""TIP token selectors: entropy, divergence, Soft-OR and quadrant variants.

References:
  Xu et al., "Token Importance in on-Policy distillation", arXiv 2604.14084.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp

from opd_jax.selection import selectors

Array = jax.Array
ArrayLike = Any
Selection = selectors.Selection

# Quadrant labels (0 marks invalid tokens).
Q1_HIGH_H_HIGH_D = 1
Q2_HIGH_H_LOW_D = 2
Q3_LOW_H_HIGH_D = 3
Q4_LOW_H_LOW_D = 4


def _check_pair(entropy: ArrayLike, divergence: ArrayLike, mask: ArrayLike):
  entropy, divergence, mask = selectors.check_entropy_divergence(
      entropy, divergence, mask
  )
  sg = jax.lax.stop_gradient
  return (
      sg(entropy).astype(jnp.float32),
      sg(divergence).astype(jnp.float32),
      mask,
  )


def normalized_entropy(entropy: ArrayLike, vocab_size: int) -> Array:
  r"""Returns :math:`h = H / \log V` in [0, 1] for [batch, seq] entropies."""
  if not isinstance(vocab_size, int) or vocab_size < 2:
    raise ValueError(f"vocab_size must be an int >= 2, got {vocab_size}.")
  return jnp.asarray(entropy, jnp.float32) / math.log(vocab_size)


def soft_or_scores(
    entropy: ArrayLike,
    divergence: ArrayLike,
    mask: ArrayLike,
    *,
    vocab_size: int,
    clip_quantile: float | None = 0.98,
) -> Array:
  r"""TIP Soft-OR importance score of each token.

  .. math::
    h = \min(H / \log V,\; Q_{c}(h)), \qquad
    \hat h = \frac{h - \min h}{\max h - \min h}, \qquad
    s = \hat h + \hat d - \hat h \hat d = 1 - (1 - \hat h)(1 - \hat d)

  where the clip quantile :math:`Q_c` (c = 0.98) and the min–max statistics
  are global over the valid tokens of the batch, the clip comes before the
  min–max, and an axis with max = min normalises to 0. Under data
  parallelism, pass the all-gathered global batch.

  Args:
    entropy: ``[batch, seq]`` student entropy :math:`H_S` in nats.
    divergence: ``[batch, seq]`` teacher–student divergence (default reverse
      KL per token).
    mask: ``[batch, seq]`` bool validity.
    vocab_size: V, for the log-vocab normalisation of the entropy.
    clip_quantile: quantile at which the entropy is clipped; None disables.

  Returns:
    ``[batch, seq]`` float32 scores in [0, 1]; 0 on invalid tokens.
  """
  entropy, divergence, mask = _check_pair(entropy, divergence, mask)
  h = normalized_entropy(entropy, vocab_size)
  if clip_quantile is not None:
    h = jnp.minimum(h, selectors.masked_quantile(h, mask, clip_quantile))
  h_hat = selectors.min_max_normalize(h, mask)
  d_hat = selectors.min_max_normalize(divergence, mask)
  return jnp.where(mask, h_hat + d_hat - h_hat * d_hat, 0.0)


def soft_or(
    entropy: ArrayLike,
    divergence: ArrayLike,
    mask: ArrayLike,
    rho: float,
    *,
    vocab_size: int,
    clip_quantile: float | None = 0.98,
    bottom: bool = False,
    return_index: bool = False,
) -> Selection:
  """Keeps the top (or, as a negative control, bottom) ρ of Soft-OR scores.

  Per rollout b, ``floor(rho * L_b)`` tokens with the earlier-position
  tie-break; static gather size ``ceil(rho * seq)``. See
  :func:`soft_or_scores` for the score.

  Args:
    entropy: ``[batch, seq]`` student entropy in nats.
    divergence: ``[batch, seq]`` teacher–student divergence.
    mask: ``[batch, seq]`` bool validity.
    rho: kept fraction, Python float in [0, 1].
    vocab_size: V.
    clip_quantile: entropy clip quantile (None: no clip).
    bottom: keep the lowest-scoring tokens instead.
    return_index: also return the ``[batch, K]`` gather index.

  Returns:
    A :class:`Selection`.
  """
  scores = soft_or_scores(
      entropy,
      divergence,
      mask,
      vocab_size=vocab_size,
      clip_quantile=clip_quantile,
  )
  if bottom:
    scores = -scores
  return selectors.top_fraction_per_sequence(
      scores, mask, rho, return_index=return_index
  )


def entropy_top(
    entropy: ArrayLike,
    mask: ArrayLike,
    rho: float,
    *,
    mode: str = "topk",
    key: Array | None = None,
    alpha: float = 1.0,
    return_index: bool = False,
) -> Selection:
  r"""TIP entropy-only selection of ``floor(rho * L_b)`` tokens per rollout.

  ``mode="topk"`` keeps the highest-entropy tokens; ``mode="sample"`` draws
  them without replacement with probability ∝ :math:`H^\alpha` (Gumbel-top-k;
  dividing by :math:`\log V` does not change these probabilities).

  Args:
    entropy: ``[batch, seq]`` student entropy (non-negative).
    mask: ``[batch, seq]`` bool validity.
    rho: kept fraction, Python float in [0, 1].
    mode: "topk" or "sample".
    key: PRNG key, required for "sample".
    alpha: weight exponent for "sample".
    return_index: also return the ``[batch, K]`` gather index.

  Returns:
    A :class:`Selection`.
  """
  entropy = selectors.check_scores("entropy", entropy)
  if mode == "topk":
    return selectors.top_fraction_per_sequence(
        entropy, mask, rho, return_index=return_index
    )
  if mode == "sample":
    if key is None:
      raise ValueError("entropy_top(mode='sample') needs key, got None.")
    weights = jnp.maximum(entropy.astype(jnp.float32), 0.0)
    return selectors.gumbel_top_fraction(
        key, weights, mask, rho, alpha=alpha, return_index=return_index
    )
  raise ValueError(f"mode must be 'topk' or 'sample', got {mode!r}.")


def divergence_top(
    divergence: ArrayLike,
    mask: ArrayLike,
    rho: float,
    *,
    return_index: bool = False,
) -> Selection:
  """TIP divergence-only selection: top ``floor(rho * L_b)`` per rollout."""
  return selectors.top_fraction_per_sequence(
      divergence, mask, rho, return_index=return_index
  )


def quadrants(
    entropy: ArrayLike,
    divergence: ArrayLike,
    mask: ArrayLike,
    *,
    q_entropy: float = 0.5,
    q_divergence: float = 0.8,
) -> Array:
  r"""Labels each valid token with its TIP quadrant, 1..4 (0 if invalid).

  Cuts are global-batch quantiles over valid tokens: low entropy is
  :math:`H < Q_{q_H}(H)`, high divergence is :math:`d > Q_{q_D}(d)`. Then
  Q1 = high-H/high-D, Q2 = high-H/low-D, Q3 = low-H/high-D ("overconfident
  and wrong"), Q4 = low-H/low-D; the four partition the valid tokens. The
  cuts are scale-free, so the entropy need not be normalised by log V.

  Args:
    entropy: ``[batch, seq]`` student entropy.
    divergence: ``[batch, seq]`` teacher–student divergence.
    mask: ``[batch, seq]`` bool validity.
    q_entropy: quantile for the entropy cut.
    q_divergence: quantile for the divergence cut.

  Returns:
    ``[batch, seq]`` int32 labels.
  """
  entropy, divergence, mask = _check_pair(entropy, divergence, mask)
  low_h = entropy < selectors.masked_quantile(entropy, mask, q_entropy)
  d_cut = selectors.masked_quantile(divergence, mask, q_divergence)
  high_d = divergence > d_cut
  label = jnp.where(
      low_h,
      jnp.where(high_d, Q3_LOW_H_HIGH_D, Q4_LOW_H_LOW_D),
      jnp.where(high_d, Q1_HIGH_H_HIGH_D, Q2_HIGH_H_LOW_D),
  )
  return jnp.where(mask, label, 0).astype(jnp.int32)


def quadrant_select(
    entropy: ArrayLike,
    divergence: ArrayLike,
    mask: ArrayLike,
    *,
    which: int | Sequence[int] = Q3_LOW_H_HIGH_D,
    q_entropy: float = 0.5,
    q_divergence: float = 0.8,
    budget_fraction: float = 1.0,
    return_index: bool = False,
) -> Selection:
  """Keeps the tokens of the chosen quadrant(s), e.g. Q3-only training.

  Quadrant sizes are data dependent, so the static gather size is
  ``K = ceil(budget_fraction * seq)``; a rollout with more than K quadrant
  tokens keeps its first K (earliest positions), in both ``weights`` and
  ``index``, so the two always agree.

  Args:
    entropy: ``[batch, seq]`` student entropy.
    divergence: ``[batch, seq]`` teacher–student divergence.
    mask: ``[batch, seq]`` bool validity.
    which: quadrant label or labels to keep (1..4).
    q_entropy: quantile for the entropy cut.
    q_divergence: quantile for the divergence cut.
    budget_fraction: static gather budget as a fraction of ``seq``.
    return_index: also return the ``[batch, K]`` gather index.

  Returns:
    A :class:`Selection`.
  """
  which = (which,) if isinstance(which, int) else tuple(which)
  if not which or any(w not in (1, 2, 3, 4) for w in which):
    raise ValueError(f"which must be labels in 1..4, got {which}.")
  labels = quadrants(
      entropy,
      divergence,
      mask,
      q_entropy=q_entropy,
      q_divergence=q_divergence,
  )
  member = jnp.isin(labels, jnp.asarray(which, jnp.int32))
  budget = selectors.static_budget(budget_fraction, labels.shape[1])
  counts = jnp.sum(member, axis=-1, dtype=jnp.int32)
  return selectors.select_top_counts(
      member.astype(jnp.float32),
      member,
      counts,
      budget,
      return_index=return_index,
  )
