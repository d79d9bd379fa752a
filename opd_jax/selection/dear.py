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
"""DEAR selection: entropy decision anchors plus hidden-state evidence tokens.

References:
  Xiao et al., "Finding the Evidence: Discovering Decision-Supporting Tokens
  for On-Policy Reasoning Distillation", arXiv 2606.22830.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from opd_jax.selection import selectors

Array = jax.Array
ArrayLike = Any
Selection = selectors.Selection


@flax.struct.dataclass
class DearTokens:
  """DEAR's token classes and scores, for selection and diagnostics.

  Attributes:
    decision: ``[batch, seq]`` bool, the decision anchors D.
    evidence: ``[batch, seq]`` bool, the evidence tokens E (disjoint from D).
    relevance: ``[batch, seq]`` float32 raw relevance ``a`` (max cosine to an
      eligible anchor; -inf where no anchor is eligible).
    score: ``[batch, seq]`` float32 evidence score ``â (1 + δ̂)``; 0 on
      decision and invalid tokens.
  """

  decision: Array
  evidence: Array
  relevance: Array
  score: Array


def anchor_relevance(
    hidden: ArrayLike,
    anchor_index: Array,
    anchor_valid: Array,
    *,
    causal: bool = False,
    window: int | None = None,
) -> Array:
  r"""Max cosine similarity of each position to its eligible anchors.

  .. math::
    a_{b,j} = \max_{i \in D_b,\ \mathrm{eligible}(i, j)}
      \cos(h_{b,i}, h_{b,j})

  computed against the ``K_D`` gathered anchors (a ``[batch, seq, K_D]``
  similarity), never a ``[seq, seq]`` matrix. Eligible: a real anchor slot,
  and with ``causal`` only anchors before j, with ``window`` only anchors
  within W positions of j.

  Args:
    hidden: ``[batch, seq, d]`` last-layer student hidden states.
    anchor_index: ``[batch, K_D]`` int anchor positions.
    anchor_valid: ``[batch, K_D]`` bool, real anchor slots.
    causal: only anchors i < j count.
    window: if set, only anchors with |i - j| <= window count.

  Returns:
    ``[batch, seq]`` float32; -inf where no anchor is eligible.
  """
  hidden = jnp.asarray(hidden)
  if hidden.ndim != 3:
    raise ValueError(f"hidden must be [batch, seq, d], got {hidden.shape}.")
  if anchor_index.shape != anchor_valid.shape or (
      anchor_index.shape[0] != hidden.shape[0]
  ):
    raise ValueError(
        "anchor_index and anchor_valid must both be [batch, K_D], got"
        f" {anchor_index.shape} and {anchor_valid.shape}."
    )
  h = jax.lax.stop_gradient(hidden).astype(jnp.float32)
  norm = jnp.linalg.norm(h, axis=-1, keepdims=True)
  h = h / jnp.maximum(norm, 1e-12)
  anchors = selectors.gather_positions(h, anchor_index)  # [B, K_D, d]
  sim = jnp.einsum("BTD,BKD->BTK", h, anchors)
  eligible = jnp.broadcast_to(anchor_valid[:, None, :], sim.shape)
  pos = jnp.arange(h.shape[1])[None, :, None]  # j
  apos = anchor_index[:, None, :]  # i
  if causal:
    eligible &= apos < pos
  if window is not None:
    if not isinstance(window, int) or window < 0:
      raise ValueError(f"window must be a non-negative int, got {window}.")
    eligible &= jnp.abs(pos - apos) <= window
  return jnp.max(jnp.where(eligible, sim, -jnp.inf), axis=-1)


def dear_tokens(
    entropy: ArrayLike,
    divergence: ArrayLike,
    hidden: ArrayLike,
    mask: ArrayLike,
    *,
    p: float = 0.2,
    q: float = 0.2,
    anchor_causal: bool = False,
    anchor_window: int | None = None,
    norm_scope: str = "sequence",
) -> DearTokens:
  r"""Splits each rollout into decision anchors, evidence and the rest.

  Per rollout b: D = the top ``floor(p L_b)`` tokens by student entropy;
  among the other valid tokens N, the evidence score is

  .. math::
    s_j = \hat a_j (1 + \hat\delta_j),

  with :math:`\hat a, \hat\delta` min–max normalised over N (within the
  sequence, or over the batch with ``norm_scope="batch"``); E = the top
  ``floor(q |N_b|)`` of N by s (earlier position on ties). Evidence is
  similarity to an anchor, so a token with no eligible anchor (every token
  of a rollout with ``|D_b| = 0``; with ``anchor_causal``, those before the
  first anchor) stays out of the statistics and is never evidence, even if
  E then holds fewer than ``floor(q |N_b|)`` tokens.

  Args:
    entropy: ``[batch, seq]`` student entropy.
    divergence: ``[batch, seq]`` knowledge gap δ (default reverse KL).
    hidden: ``[batch, seq, d]`` last-layer student hidden states.
    mask: ``[batch, seq]`` bool validity.
    p: decision fraction.
    q: evidence fraction of the non-decision tokens.
    anchor_causal: only anchors before a token count for its relevance.
    anchor_window: only anchors within this many positions count.
    norm_scope: "sequence" or "batch" min–max statistics.

  Returns:
    A :class:`DearTokens`.
  """
  entropy, divergence, mask = selectors.check_entropy_divergence(
      entropy, divergence, mask
  )
  if jnp.shape(hidden)[:2] != entropy.shape:
    raise ValueError(
        f"hidden must be [{entropy.shape[0]}, {entropy.shape[1]}, d], got"
        f" {jnp.shape(hidden)}."
    )
  if norm_scope not in ("sequence", "batch"):
    raise ValueError(
        f"norm_scope must be 'sequence' or 'batch', got {norm_scope!r}."
    )
  axis = -1 if norm_scope == "sequence" else None
  anchors = selectors.top_fraction_per_sequence(
      entropy, mask, p, return_index=True
  )
  decision = anchors.weights > 0
  relevance = anchor_relevance(
      hidden,
      anchors.index,
      anchors.index_weights > 0,
      causal=anchor_causal,
      window=anchor_window,
  )
  rest = mask & ~decision
  has_anchor = jnp.isfinite(relevance)
  a_hat = selectors.min_max_normalize(relevance, rest & has_anchor, axis)
  d_hat = selectors.min_max_normalize(
      jax.lax.stop_gradient(divergence), rest, axis
  )
  score = jnp.where(rest, a_hat * (1.0 + d_hat), 0.0)
  n_rest = jnp.sum(rest, axis=-1, dtype=jnp.int32)
  # Evidence is similarity to an anchor: a token with none (a rollout too
  # short for any decision token, or before the first anchor when causal)
  # is never evidence, even if that leaves fewer than floor(q |N_b|).
  evidence = (
      selectors.select_top_counts(
          score,
          rest & has_anchor,
          selectors.floor_fraction(q, n_rest),
          entropy.shape[1],
      ).weights
      > 0
  )
  return DearTokens(decision, evidence, relevance, score)


def dear_select(
    entropy: ArrayLike,
    divergence: ArrayLike,
    hidden: ArrayLike,
    mask: ArrayLike,
    *,
    p: float = 0.2,
    q: float = 0.2,
    anchor_causal: bool = False,
    anchor_window: int | None = None,
    norm_scope: str = "sequence",
    decision_weight: float = 1.0,
    evidence_weight: float = 1.0,
    return_index: bool = False,
) -> Selection:
  """DEAR: keep the decision anchors and their evidence, D ∪ E.

  About ``p + q - p q`` of the valid tokens (36% at the defaults). The static
  gather size is ``K = ceil((p + q - p q) * seq)``, which always holds
  ``|D_b| + |E_b|``.

  Args:
    entropy, divergence, hidden, mask, p, q, anchor_causal, anchor_window,
      norm_scope: as in :func:`dear_tokens`.
    decision_weight: loss weight w_D of decision tokens.
    evidence_weight: loss weight w_E of evidence tokens.
    return_index: also return the ``[batch, K]`` gather index.

  Returns:
    A :class:`Selection` with weights ``w_D`` on D and ``w_E`` on E.
  """
  parts = dear_tokens(
      entropy,
      divergence,
      hidden,
      mask,
      p=p,
      q=q,
      anchor_causal=anchor_causal,
      anchor_window=anchor_window,
      norm_scope=norm_scope,
  )
  return union_selection(
      parts,
      p,
      q,
      decision_weight=decision_weight,
      evidence_weight=evidence_weight,
      return_index=return_index,
  )


def union_selection(
    parts: DearTokens,
    p: float,
    q: float,
    *,
    decision_weight: float = 1.0,
    evidence_weight: float = 1.0,
    return_index: bool = False,
) -> Selection:
  """D ∪ E of `dear_tokens` as a Selection (weights w_D on D, w_E on E).

  The static gather size is ``ceil((p + q - p q) * seq)``. Exposed so that a
  caller holding the parts (to report |D| and |E|) builds the same selection.
  """
  pf = selectors.rational(selectors.check_fraction("p", p))
  qf = selectors.rational(selectors.check_fraction("q", q))
  budget = selectors.static_budget(pf + qf - pf * qf, parts.decision.shape[1])
  union = parts.decision | parts.evidence
  weights = jnp.where(parts.decision, decision_weight, 0.0) + jnp.where(
      parts.evidence, evidence_weight, 0.0
  )
  return selectors.select_top_counts(
      union.astype(jnp.float32),
      union,
      jnp.sum(union, axis=-1, dtype=jnp.int32),
      budget,
      return_index=return_index,
      weights=weights,
  )
