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
"""TSD-KD pieces: confidence gate, opener, entropy-min set, Plackett–Luce.

References:
  Kim & Baek, "Explain in Your Own Words: Token-Selective Dual Knowledge
  Distillation", ICLR 2026, arXiv 2603.13260 (code: kmswin1/TSD-KD).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from opd_jax.selection import selectors

Array = jax.Array
ArrayLike = Any
SumCount = tuple[Array, Array]


def _check_like(name: str, x: ArrayLike, shape: tuple[int, ...]) -> Array:
  x = selectors.check_scores(name, x)
  if x.shape != shape:
    raise ValueError(f"{name} must have shape {shape}, got {x.shape}.")
  return x


def confidence_gate(
    student_entropy: ArrayLike,
    teacher_entropy: ArrayLike,
    *,
    tau: float = 1.0,
) -> Array:
  r"""Relative-confidence gate of the direct (JSD) term.

  .. math::
    w_t = \mathrm{sg}\big(\sigma((H^S_t - H^T_t) / \tau)\big)

  Near 1 where the student is uncertain and the teacher confident.

  Args:
    student_entropy: ``[batch, seq]`` :math:`H^S`.
    teacher_entropy: ``[batch, seq]`` :math:`H^T`.
    tau: gate temperature (the code uses 1).

  Returns:
    ``[batch, seq]`` float32 gate, without gradient.
  """
  hs = selectors.check_scores("student_entropy", student_entropy)
  ht = _check_like("teacher_entropy", teacher_entropy, hs.shape)
  if not tau > 0:
    raise ValueError(f"tau must be > 0, got {tau}.")
  diff = hs.astype(jnp.float32) - ht.astype(jnp.float32)
  return jax.lax.stop_gradient(jax.nn.sigmoid(diff / tau))


def _flat_opener(e: Array, mask: Array, c: float) -> Array:
  """The code's opener of one group ``[rows, T]``: positions ``t < n*``."""
  flat, flat_mask = e.reshape(-1), mask.reshape(-1)
  total = jnp.sum(flat)
  frac = jnp.cumsum(flat) / jnp.where(total > 0, total, 1.0)
  reached = flat_mask & (frac >= c) & (total > 0)
  # The cumulative fraction is non-decreasing, so the valid entries below c
  # are exactly those before the first reaching one: their count is its
  # index among valid entries. The code's argmax gives 0 when none reaches.
  n_star = jnp.where(
      jnp.any(reached),
      jnp.sum(flat_mask & (frac < c), dtype=jnp.int32),
      0,
  )
  return mask & (jnp.arange(e.shape[-1])[None, :] < n_star)


def _per_group(fn, x: Array, mask: Array, rows: int) -> Array:
  """``fn(x_g, mask_g)`` on each consecutive group of ``rows`` rows of
  ``[B, T]`` arrays, results stacked back to ``[B, ...]``; the last group is
  padded with invalid rows (no entropy, no validity: they change nothing)."""
  b, t = x.shape
  groups = -(-b // rows)
  pad = ((0, groups * rows - b), (0, 0))
  xg = jnp.pad(x, pad).reshape(groups, rows, t)
  mg = jnp.pad(mask, pad).reshape(groups, rows, t)
  out = jax.vmap(fn)(xg, mg)
  return out.reshape(groups * rows, *out.shape[2:])[:b]


def _check_group_rows(group_rows: Any) -> int:
  if isinstance(group_rows, bool) or not isinstance(group_rows, int):
    raise TypeError(f"group_rows must be an int, got {group_rows!r}.")
  if group_rows < 0:
    raise ValueError(f"group_rows must be >= 0, got {group_rows}.")
  return group_rows


def opener_mask(
    student_entropy: ArrayLike,
    mask: ArrayLike,
    *,
    threshold: float = 0.1,
    batch_flat: bool = False,
    group_rows: int = 0,
) -> Array:
  r"""The opener: the prefix holding the first ``threshold`` of the entropy.

  Per sequence (paper, default), with :math:`c_b[t] = \sum_{u \le t} H_u m_u /
  \sum_u H_u m_u`:

  .. math::
    \mathrm{opener}_{b,t} = m_{b,t}\,[c_b[t - 1] < c], \quad c_b[-1] = 0,

  which includes the first position reaching c. A sequence whose entropy sums
  to 0 is all opener.

  ``batch_flat=True`` is the released code's rule on the whole batch: the
  valid entropies are flattened row-major, ``n*`` = the (0-based) index of
  the first one whose cumulative fraction reaches c (0 if none does), and
  every sequence keeps its valid positions ``t < n*``. ``group_rows=G``
  applies that rule to each consecutive group of G rows, as the code does to
  each micro-batch it is given (4 rows per device in its launch script):
  one ``n*`` per group.

  Args:
    student_entropy: ``[batch, seq]`` :math:`H^S` (stop-gradient is applied).
    mask: ``[batch, seq]`` bool validity.
    threshold: the cumulative-entropy fraction c, in [0, 1].
    batch_flat: the code's rule over the whole batch.
    group_rows: the code's rule per group of this many rows (0: off).

  Returns:
    ``[batch, seq]`` bool.
  """
  hs = selectors.check_scores("student_entropy", student_entropy)
  mask = selectors.check_mask(mask, hs.shape)
  c = selectors.check_fraction("threshold", threshold)
  if _check_group_rows(group_rows) and batch_flat:
    raise ValueError(
        "batch_flat and group_rows are two openers: set one, got"
        f" batch_flat=True and group_rows={group_rows}."
    )
  e = jnp.where(mask, jax.lax.stop_gradient(hs).astype(jnp.float32), 0.0)
  if batch_flat:
    return _flat_opener(e, mask, c)
  if group_rows:
    return _per_group(lambda x, m: _flat_opener(x, m, c), e, mask, group_rows)
  total = jnp.sum(e, axis=-1, keepdims=True)
  cum = jnp.cumsum(e, axis=-1) / jnp.where(total > 0, total, 1.0)
  before = jnp.pad(cum[:, :-1], ((0, 0), (1, 0)))
  return mask & (before < c)


EM_RULES = ("top", "quantile")


def entropy_min_set(
    student_entropy: ArrayLike,
    mask: ArrayLike,
    *,
    ratio: float = 0.1,
    rule: str = "top",
    group_rows: int = 0,
) -> Array:
  """The EM set, chosen under stop-gradient over the valid tokens of the batch.

  ``rule="top"`` (the paper's text): the top ``ceil(ratio * N_valid)``
  entropies, exact in size (ties go to the earlier row-major position).
  ``rule="quantile"`` (the released code): every valid token whose entropy
  is at least the ``1 - ratio`` quantile of the valid entropies (linear
  interpolation, as ``torch.quantile``); the code passes its threshold 0.1
  as that quantile, i.e. ``ratio = 0.9``, and keeps ties. ``group_rows=G``
  takes that quantile per consecutive group of G rows, as the code does per
  micro-batch (quantile rule only). ``ratio = 0`` is the empty set under
  both rules.

  Args:
    student_entropy: ``[batch, seq]`` :math:`H^S`.
    mask: ``[batch, seq]`` bool validity.
    ratio: kept fraction of valid tokens, in [0, 1].
    rule: "top" or "quantile".
    group_rows: rows per quantile group (0: the whole batch).

  Returns:
    ``[batch, seq]`` bool.
  """
  if rule not in EM_RULES:
    raise ValueError(f"rule must be one of {EM_RULES}, got {rule!r}.")
  if _check_group_rows(group_rows) and rule != "quantile":
    raise ValueError(
        f"group_rows={group_rows} needs rule='quantile', got {rule!r}."
    )
  if rule == "top":
    return selectors.global_top_fraction(student_entropy, mask, ratio)
  hs = selectors.check_scores("student_entropy", student_entropy)
  mask = selectors.check_mask(mask, hs.shape)
  ratio = selectors.check_fraction("ratio", ratio)
  if ratio == 0:
    return jnp.zeros(hs.shape, bool)
  hs = jax.lax.stop_gradient(hs).astype(jnp.float32)

  def above(x, m):
    return m & (x >= selectors.masked_quantile(x, m, 1.0 - ratio))

  return (
      _per_group(above, hs, mask, group_rows) if group_rows else above(hs, mask)
  )


def entropy_min_loss(
    student_entropy: ArrayLike,
    mask: ArrayLike,
    *,
    ratio: float = 0.1,
    rule: str = "top",
    group_rows: int = 0,
) -> SumCount:
  r"""Selective entropy minimisation as a ``(sum, count)`` pair.

  .. math::
    L_{EM} = \frac{\sum_t H^S_t I_t}{\sum_t I_t}

  The set I (:func:`entropy_min_set`) is chosen without gradient;
  :math:`H^S` keeps its gradient so the loss sharpens the student on I.

  Args:
    student_entropy: ``[batch, seq]`` :math:`H^S`, differentiable.
    mask: ``[batch, seq]`` bool validity.
    ratio: kept fraction of valid tokens.
    rule: "top" (paper) or "quantile" (released code).
    group_rows: rows per quantile group (0: the whole batch).

  Returns:
    ``(total, count)`` float32 scalars; the loss is ``total / count``.
  """
  hs = selectors.check_scores("student_entropy", student_entropy)
  in_set = entropy_min_set(
      hs, mask, ratio=ratio, rule=rule, group_rows=group_rows
  )
  total = jnp.sum(jnp.where(in_set, hs.astype(jnp.float32), 0.0))
  return total, jnp.sum(in_set, dtype=jnp.float32)


def plackett_luce_nll(
    student_candidate_logits: ArrayLike,
    teacher_candidate_logits: ArrayLike,
    *,
    temperature: float = 1.0,
    code_compat: bool = False,
) -> Array:
  r"""Per-token ListMLE loss of the teacher's ranking under student worths.

  The k candidates (the student's top-k tokens) are sorted by teacher logit,
  descending (stable), giving student worths :math:`s_1..s_k`, divided by
  the temperature and centred over the k candidates as in the code:

  .. math::
    \ell_t = -\sum_{j=1}^{k} \Big(s_j - \log \sum_{l \ge j} e^{s_l}\Big).

  Its gradient raises the teacher's favourite: with equal worths and k = 4
  it is (-0.75, -0.42, +0.08, +1.08) by teacher rank. ``code_compat=True``
  uses the released code's prefix sum :math:`\sum_{l \le j}` (the likelihood
  of the reversed order), whose gradient is the exact mirror.

  Args:
    student_candidate_logits: ``[batch, seq, k]`` student logits at the
      candidates, differentiable.
    teacher_candidate_logits: ``[batch, seq, k]`` teacher logits at the same
      candidates (stop-gradient is applied).
    temperature: logit temperature.
    code_compat: reproduce the released code's reversed direction.

  Returns:
    ``[batch, seq]`` float32 negative log-likelihoods.
  """
  zs = jnp.asarray(student_candidate_logits)
  zt = jnp.asarray(teacher_candidate_logits)
  if zs.ndim != 3 or zt.shape != zs.shape:
    raise ValueError(
        "candidate logits must both be [batch, seq, k], got"
        f" {zs.shape} and {zt.shape}."
    )
  if not temperature > 0:
    raise ValueError(f"temperature must be > 0, got {temperature}.")
  zs = zs.astype(jnp.float32) / temperature
  zt = jax.lax.stop_gradient(zt.astype(jnp.float32)) / temperature
  order = jnp.argsort(-zt, axis=-1, stable=True)
  s = jnp.take_along_axis(zs, order, axis=-1)
  s = s - jnp.mean(s, axis=-1, keepdims=True)
  lse = jax.lax.cumlogsumexp(s, axis=s.ndim - 1, reverse=not code_compat)
  return jnp.sum(lse - s, axis=-1)


def indirect_loss(
    student_candidate_logits: ArrayLike,
    teacher_candidate_logits: ArrayLike,
    opener: ArrayLike,
    *,
    temperature: float = 1.0,
    code_compat: bool = False,
) -> SumCount:
  """Plackett–Luce indirect loss over opener tokens, as ``(sum, count)``.

  Args:
    student_candidate_logits: ``[batch, seq, k]``, differentiable.
    teacher_candidate_logits: ``[batch, seq, k]``.
    opener: ``[batch, seq]`` bool from :func:`opener_mask`.
    temperature: logit temperature.
    code_compat: reproduce the released code's reversed direction.

  Returns:
    ``(Σ PL·opener, Σ opener)`` float32 scalars.
  """
  nll = plackett_luce_nll(
      student_candidate_logits,
      teacher_candidate_logits,
      temperature=temperature,
      code_compat=code_compat,
  )
  opener = selectors.check_mask(opener, nll.shape)
  total = jnp.sum(jnp.where(opener, nll, 0.0))
  return total, jnp.sum(opener, dtype=jnp.float32)


def tsd_kd_objective(
    *,
    student_entropy: ArrayLike,
    teacher_entropy: ArrayLike,
    direct_divergence: ArrayLike,
    student_candidate_logits: ArrayLike,
    teacher_candidate_logits: ArrayLike,
    mask: ArrayLike,
    alpha: float = 0.1,
    gate_tau: float = 1.0,
    opener_threshold: float = 0.1,
    opener_batch_flat: bool = False,
    opener_group_rows: int = 0,
    em_ratio: float = 0.1,
    em_rule: str = "top",
    em_group_rows: int = 0,
    em_weight: float = 1.0,
    temperature: float = 1.0,
    pl_code_compat: bool = False,
    use_gate: bool = True,
) -> tuple[Array, dict[str, SumCount]]:
  r"""The full TSD-KD objective from per-token pieces.

  .. math::
    L = \alpha\,\frac{\sum PL \cdot O}{\sum O}
      + \frac{\sum w\,\mathrm{JSD}_\beta\,m}{\sum m}
      + \lambda_{EM} \frac{\sum H^S I}{\sum I}

  The JSD (β = 0.9 in the paper, e.g. ``losses.generalized_jsd(beta=0.9)``)
  is computed by the caller and passed as ``direct_divergence``; the direct
  and EM terms use all valid tokens, the indirect term the opener only.

  Args:
    student_entropy: ``[batch, seq]`` :math:`H^S`, differentiable (EM term).
    teacher_entropy: ``[batch, seq]`` :math:`H^T`.
    direct_divergence: ``[batch, seq]`` per-token :math:`JSD_\beta`,
      differentiable.
    student_candidate_logits: ``[batch, seq, k]``, differentiable.
    teacher_candidate_logits: ``[batch, seq, k]``.
    mask: ``[batch, seq]`` bool validity.
    alpha: weight of the indirect term.
    gate_tau: gate temperature.
    opener_threshold: opener cumulative-entropy fraction c.
    opener_batch_flat: use the code's batch-flattened opener.
    opener_group_rows: the code's opener per group of this many rows (0:
      the paper's per-sequence opener).
    em_ratio: EM set fraction of valid tokens.
    em_rule: EM set rule, "top" (paper) or "quantile" (released code).
    em_group_rows: rows per EM quantile group (0: the whole batch).
    em_weight: :math:`\lambda_{EM}`, the EM term's weight (1 in both).
    temperature: PL logit temperature.
    pl_code_compat: the released code's reversed PL direction.
    use_gate: False sets :math:`w = 1` (the "no gate" ablation: the direct
      term is the plain mean JSD).

  Returns:
    ``(loss, terms)`` where terms maps "indirect", "direct" and "em" to their
    ``(sum, count)`` pairs, for exact cross-device averaging.
  """
  hs = selectors.check_scores("student_entropy", student_entropy)
  mask = selectors.check_mask(mask, hs.shape)
  jsd = _check_like("direct_divergence", direct_divergence, hs.shape)
  gate = confidence_gate(hs, teacher_entropy, tau=gate_tau)
  if not use_gate:
    gate = jnp.ones_like(gate)
  direct = jnp.sum(jnp.where(mask, gate * jsd.astype(jnp.float32), 0.0))
  opener = opener_mask(
      hs,
      mask,
      threshold=opener_threshold,
      batch_flat=opener_batch_flat,
      group_rows=opener_group_rows,
  )
  terms = {
      "indirect": indirect_loss(
          student_candidate_logits,
          teacher_candidate_logits,
          opener,
          temperature=temperature,
          code_compat=pl_code_compat,
      ),
      "direct": (direct, jnp.sum(mask, dtype=jnp.float32)),
      "em": entropy_min_loss(
          hs, mask, ratio=em_ratio, rule=em_rule, group_rows=em_group_rows
      ),
  }
  mean = {k: t / jnp.maximum(n, 1.0) for k, (t, n) in terms.items()}
  loss = alpha * mean["indirect"] + mean["direct"] + em_weight * mean["em"]
  return loss, terms
