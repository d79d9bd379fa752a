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


def opener_mask(
    student_entropy: ArrayLike,
    mask: ArrayLike,
    *,
    threshold: float = 0.1,
    batch_flat: bool = False,
) -> Array:
  r"""The opener: the prefix holding the first ``threshold`` of the entropy.

  Per sequence (paper, default), with :math:`c_b[t] = \sum_{u \le t} H_u m_u /
  \sum_u H_u m_u`:

  .. math::
    \mathrm{opener}_{b,t} = m_{b,t}\,[c_b[t - 1] < c], \quad c_b[-1] = 0,

  which includes the first position reaching c. A sequence whose entropy sums
  to 0 is all opener.

  ``batch_flat=True`` reproduces the released code: the valid entropies of
  the whole batch are flattened row-major, ``n*`` = the (0-based) index of
  the first one whose cumulative fraction reaches c (0 if none does), and
  every sequence keeps its valid positions ``t < n*``.

  Args:
    student_entropy: ``[batch, seq]`` :math:`H^S` (stop-gradient is applied).
    mask: ``[batch, seq]`` bool validity.
    threshold: the cumulative-entropy fraction c, in [0, 1].
    batch_flat: use the code's batch-flattened rule.

  Returns:
    ``[batch, seq]`` bool.
  """
  hs = selectors.check_scores("student_entropy", student_entropy)
  mask = selectors.check_mask(mask, hs.shape)
  c = selectors.check_fraction("threshold", threshold)
  e = jnp.where(mask, jax.lax.stop_gradient(hs).astype(jnp.float32), 0.0)
  if batch_flat:
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
    positions = jnp.arange(hs.shape[1])[None, :]
    return mask & (positions < n_star)
  total = jnp.sum(e, axis=-1, keepdims=True)
  cum = jnp.cumsum(e, axis=-1) / jnp.where(total > 0, total, 1.0)
  before = jnp.pad(cum[:, :-1], ((0, 0), (1, 0)))
  return mask & (before < c)


def entropy_min_set(
    student_entropy: ArrayLike, mask: ArrayLike, *, ratio: float = 0.1
) -> Array:
  """The EM set: the top ``ceil(ratio * N_valid)`` entropies of the batch.

  Chosen under stop-gradient, exact in size (ties go to the earlier
  row-major position). ``ratio=0.9`` approximates the released code, which
  keeps tokens above the 10th percentile.

  Args:
    student_entropy: ``[batch, seq]`` :math:`H^S`.
    mask: ``[batch, seq]`` bool validity.
    ratio: kept fraction of valid tokens, in [0, 1].

  Returns:
    ``[batch, seq]`` bool.
  """
  return selectors.global_top_fraction(student_entropy, mask, ratio)


def entropy_min_loss(
    student_entropy: ArrayLike, mask: ArrayLike, *, ratio: float = 0.1
) -> SumCount:
  r"""Selective entropy minimisation as a ``(sum, count)`` pair.

  .. math::
    L_{EM} = \frac{\sum_t H^S_t I_t}{\sum_t I_t}

  The set I is chosen without gradient; :math:`H^S` keeps its gradient so the
  loss sharpens the student on I.

  Args:
    student_entropy: ``[batch, seq]`` :math:`H^S`, differentiable.
    mask: ``[batch, seq]`` bool validity.
    ratio: kept fraction of valid tokens.

  Returns:
    ``(total, count)`` float32 scalars; the loss is ``total / count``.
  """
  hs = selectors.check_scores("student_entropy", student_entropy)
  in_set = entropy_min_set(hs, mask, ratio=ratio)
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
    em_ratio: float = 0.1,
    temperature: float = 1.0,
    pl_code_compat: bool = False,
    use_gate: bool = True,
) -> tuple[Array, dict[str, SumCount]]:
  r"""The full TSD-KD objective from per-token pieces.

  .. math::
    L = \alpha\,\frac{\sum PL \cdot O}{\sum O}
      + \frac{\sum w\,\mathrm{JSD}_\beta\,m}{\sum m}
      + \frac{\sum H^S I}{\sum I}

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
    em_ratio: EM set fraction of valid tokens.
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
      hs, mask, threshold=opener_threshold, batch_flat=opener_batch_flat
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
      "em": entropy_min_loss(hs, mask, ratio=em_ratio),
  }
  mean = {k: t / jnp.maximum(n, 1.0) for k, (t, n) in terms.items()}
  loss = alpha * mean["indirect"] + mean["direct"] + mean["em"]
  return loss, terms
