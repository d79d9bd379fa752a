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
"""TSD-KD: gated JSD, Plackett–Luce re-ranking and entropy minimisation.

The method owns its objective: the indirect (Plackett–Luce over the
opener) and EM (entropy over the EM set) terms and their sum with the gated
JSD, here as :class:`opd_jax.losses.WeightedMean` pairs. The sets are
chosen by :mod:`opd_jax.selection.tsd_kd`; the per-token ranking loss is
:func:`opd_jax.losses.plackett_luce_nll`.

References:
  Kim & Baek, "Explain in Your Own Words: Token-Selective Dual Knowledge
  Distillation", ICLR 2026, arXiv 2603.13260 (code: kmswin1/TSD-KD).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from opd_jax import heads
from opd_jax import losses
from opd_jax import selection
from opd_jax.methods import checks
from opd_jax.methods import common
from opd_jax.methods.base import Metrics, register, StepInputs, TokenSet
from opd_jax.selection import selectors

Array = jax.Array
ArrayLike = Any


class TsdTerms(NamedTuple):
  """Per-token pieces of the TSD-KD objective, from one chunked pass.

  Attributes:
    jsd: ``[B, T]`` generalized JSD, with gradient.
    student_entropy: ``[B, T]`` :math:`H_S`, with gradient.
    teacher_entropy: ``[B, T]`` :math:`H_T`, no gradient.
    student_candidate_logits: ``[B, T, k]`` student logits at the student's
      own top-k ids, with gradient.
    teacher_candidate_logits: ``[B, T, k]`` teacher logits at those ids, no
      gradient.
  """

  jsd: Array
  student_entropy: Array
  teacher_entropy: Array
  student_candidate_logits: Array
  teacher_candidate_logits: Array


def tsd_terms(
    inputs: StepInputs,
    *,
    beta: float,
    top_k: int,
    temperature: float = 1.0,
    chunk_size: int | None = heads.DEFAULT_CHUNK_SIZE,
) -> TsdTerms:
  r"""Every full-vocabulary quantity of TSD-KD in one checkpointed T-pass.

  Per chunk the student and teacher logits :math:`z = h W` (``[B, C, V]``)
  are formed once and reduced to :math:`\mathrm{JSD}_\beta(p_T \| p_S)`,
  :math:`H(p_S)`, :math:`H(p_T)` and the top-k candidate logits; under
  ``jax.checkpoint`` the backward pass recomputes a chunk's logits instead
  of keeping ``[B, T, V]`` residuals. The candidates are
  :math:`\mathrm{top}_k(z_S)` chosen without gradient; the student logits
  there keep theirs. Candidate logits are raw (not divided by the
  temperature): the Plackett–Luce loss divides them.

  Args:
    inputs: the step inputs.
    beta: JSD teacher weight (TRL convention), in [0, 1].
    top_k: candidates per position, in [1, V].
    temperature: softmax temperature of the JSD and the entropies.
    chunk_size: positions per chunk, or None for one dense pass.

  Returns:
    A :class:`TsdTerms`; masked positions hold 0 except the candidates.
  """
  sg = jax.lax.stop_gradient

  def chunk_terms(zs, zt, w):  # zs, zt: [B, C, V]
    kw = dict(where=w, temperature=temperature)
    _, ids = jax.lax.top_k(sg(zs), top_k)  # [B, C, k]
    return TsdTerms(
        jsd=losses.generalized_jsd(zs, zt, beta=beta, **kw),
        student_entropy=losses.entropy(zs, **kw),
        teacher_entropy=losses.entropy(zt, **kw),
        student_candidate_logits=jnp.take_along_axis(zs, ids, axis=-1),
        teacher_candidate_logits=jnp.take_along_axis(zt, ids, axis=-1),
    )

  return heads.head_pass(
      chunk_terms,
      *inputs.hidden_and_heads,
      jnp.asarray(inputs.mask, bool),
      chunk_size=chunk_size,
  )


def entropy_min_loss(
    student_entropy: ArrayLike,
    mask: ArrayLike,
    *,
    ratio: float = 0.1,
    rule: str = "top",
    group_rows: int = 0,
) -> losses.WeightedMean:
  r"""Selective entropy minimisation over the EM set, as a WeightedMean.

  .. math::
    L_{EM} = \frac{\sum_t H^S_t I_t}{\sum_t I_t}

  The set I (:func:`opd_jax.selection.entropy_min_set`) is chosen without
  gradient; :math:`H^S` keeps its gradient so the loss sharpens the student
  on I.

  Args:
    student_entropy: ``[batch, seq]`` :math:`H^S`, differentiable.
    mask: ``[batch, seq]`` bool validity.
    ratio: kept fraction of valid tokens.
    rule: "top" (paper) or "quantile" (released code).
    group_rows: rows per quantile group (0: the whole batch).

  Returns:
    ``(total, count)`` float32 scalars; the loss is ``.value()``.
  """
  hs = selectors.check_scores("student_entropy", student_entropy)
  in_set = selection.entropy_min_set(
      hs, mask, ratio=ratio, rule=rule, group_rows=group_rows
  )
  return losses.token_mean(hs, in_set)


def indirect_loss(
    student_candidate_logits: ArrayLike,
    teacher_candidate_logits: ArrayLike,
    opener: ArrayLike,
    *,
    temperature: float = 1.0,
    code_compat: bool = False,
) -> losses.WeightedMean:
  r"""Plackett–Luce indirect loss over opener tokens.

  .. math::
    L_I = \frac{\sum_t \ell^{PL}_t O_t}{\sum_t O_t},

  with :math:`\ell^{PL}` from :func:`opd_jax.losses.plackett_luce_nll`.

  Args:
    student_candidate_logits: ``[batch, seq, k]``, differentiable.
    teacher_candidate_logits: ``[batch, seq, k]``.
    opener: ``[batch, seq]`` bool from
      :func:`opd_jax.selection.opener_mask`.
    temperature: logit temperature.
    code_compat: reproduce the released code's reversed direction.

  Returns:
    ``(Σ PL·opener, Σ opener)`` float32 scalars.
  """
  nll = losses.plackett_luce_nll(
      student_candidate_logits,
      teacher_candidate_logits,
      temperature=temperature,
      code_compat=code_compat,
  )
  return losses.token_mean(nll, selectors.check_mask(opener, nll.shape))


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
) -> tuple[Array, dict[str, losses.WeightedMean]]:
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
    :class:`~opd_jax.losses.WeightedMean` ``(total, count)`` pairs, for
    exact cross-device averaging.
  """
  hs = selectors.check_scores("student_entropy", student_entropy)
  mask = selectors.check_mask(mask, hs.shape)
  jsd = selectors.check_scores("direct_divergence", direct_divergence)
  if jsd.shape != hs.shape:
    raise ValueError(
        f"direct_divergence must have shape {hs.shape}, got {jsd.shape}."
    )
  gate = selection.confidence_gate(hs, teacher_entropy, tau=gate_tau)
  if not use_gate:
    gate = jnp.ones_like(gate)
  opener = selection.opener_mask(
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
      "direct": losses.token_mean(gate * jsd.astype(jnp.float32), mask),
      "em": entropy_min_loss(
          hs, mask, ratio=em_ratio, rule=em_rule, group_rows=em_group_rows
      ),
  }
  # value() divides by max(count, 1): an empty opener or EM set adds 0.
  mean = {k: t.value() for k, t in terms.items()}
  loss = alpha * mean["indirect"] + mean["direct"] + em_weight * mean["em"]
  return loss, terms


# The released code's reading (kmswin1/TSD-KD, DistillTrainer.py): config
# overrides of `config.tsd_kd` (see TSDKD).
CODE_FAITHFUL = dict(
    em_ratio=0.9,
    em_rule="quantile",
    em_group_rows=4,
    pl_code_compat=True,
    opener_group_rows=4,
)


@register("tsd_kd")
@dataclasses.dataclass(frozen=True)
class TSDKD:
  r"""Token-selective dual KD: :math:`L = \alpha L_I + L_D + \lambda L_{EM}`.

  .. math::
    L_D = \frac{\sum_t w_t\, \mathrm{JSD}_\beta(p_T \| p_S)_t\, m_t}
      {\sum_t m_t}, \quad
    w_t = \mathrm{sg}\,\sigma\Big(\frac{H^S_t - H^T_t}{\tau_g}\Big),

  .. math::
    L_I = \frac{\sum_{t \in O} -\log P_{PL}(\pi^T_t \mid z_S)}{|O|}, \qquad
    L_{EM} = \frac{\sum_{t \in I} H^S_t}{|I|},

  where O is the opener (the shortest prefix holding the fraction c of each
  sequence's student entropy), :math:`\pi^T_t` the teacher's order of the
  student's top-k tokens, and I the top ``em_ratio`` of valid tokens by
  entropy over the batch. Direct and EM use all valid tokens; JSD and
  :math:`H^S` keep their gradients, the gate and both sets do not.

  The defaults are the paper's reading (docs/methods.md §2). The released code
  (kmswin1/TSD-KD) differs in three places, each a field here:
  ``em_rule="quantile"`` with ``em_ratio=0.9`` (every token at or above
  the 10% entropy quantile of its micro-batch, ``em_group_rows=4``),
  ``pl_code_compat=True`` (its reversed Plackett–Luce direction) and
  ``opener_group_rows=4`` (one opener prefix per micro-batch of 4 rows);
  :data:`CODE_FAITHFUL` holds those overrides. Two differences are kept:
  the code averages each micro-batch's term means over micro-batches where
  this method pools the (sum, count) pairs of the batch (equal for one
  micro-batch), and the code's EM set also takes padded positions above the
  threshold, which this method never does (padding must not change a loss).

  Attributes:
    beta: JSD teacher weight in [0, 1] (0.9).
    top_k: Plackett–Luce candidates per token, >= 1 (10).
    alpha: weight of the indirect term, >= 0 (0.1).
    gate_tau: gate temperature, > 0 (1).
    gate: False drops the confidence gate (w = 1 on every token): the
      paper's "no gate" ablation.
    opener_threshold: cumulative-entropy fraction c in [0, 1] (0.1).
    opener_batch_flat: the released code's one prefix length over the
      whole flattened batch instead of the paper's per-sequence opener.
    opener_group_rows: the released code's prefix length per consecutive
      group of this many rows (its per-device micro-batch: 4), >= 0 (0:
      off); exclusive with ``opener_batch_flat``.
    em_ratio: EM fraction of valid tokens in [0, 1] (0.1, the paper; 0.9
      with ``em_rule="quantile"`` is the released code).
    em_rule: "top" (the top ``em_ratio`` of tokens, the paper) or
      "quantile" (tokens at or above the ``1 - em_ratio`` entropy quantile,
      the code).
    em_group_rows: rows per group of the quantile rule's threshold (the
      code's micro-batch: 4), >= 0 (0: the whole batch); needs
      ``em_rule="quantile"``.
    em_weight: weight of the EM term, >= 0 (1 in the paper and the code).
    pl_code_compat: the released code's reversed Plackett–Luce direction
      (ablations only; it lowers the teacher's favourite).
    temperature: softmax / candidate-logit temperature (1).
    chunk_size: positions per checkpointed chunk, or None for one pass.
  """

  NAME: ClassVar[str] = "tsd_kd"

  beta: float = 0.9
  top_k: int = 10
  alpha: float = 0.1
  gate_tau: float = 1.0
  gate: bool = True
  opener_threshold: float = 0.1
  opener_batch_flat: bool = False
  opener_group_rows: int = 0
  em_ratio: float = 0.1
  em_rule: str = "top"
  em_group_rows: int = 0
  em_weight: float = 1.0
  pl_code_compat: bool = False
  temperature: float = 1.0
  chunk_size: int | None = heads.DEFAULT_CHUNK_SIZE

  def __post_init__(self):
    name = self.NAME
    checks.check_real(name, "beta", self.beta, lo=0.0, hi=1.0)
    checks.check_int(name, "top_k", self.top_k, lo=1)
    checks.check_real(name, "alpha", self.alpha, lo=0.0)
    checks.check_real(name, "gate_tau", self.gate_tau, lo=0.0, lo_open=True)
    checks.check_bool(name, "gate", self.gate)
    checks.check_real(
        name, "opener_threshold", self.opener_threshold, lo=0.0, hi=1.0
    )
    checks.check_bool(name, "opener_batch_flat", self.opener_batch_flat)
    checks.check_int(name, "opener_group_rows", self.opener_group_rows, lo=0)
    if self.opener_batch_flat and self.opener_group_rows:
      raise ValueError(
          f"config.{name}.opener_group_rows: {self.opener_group_rows} with"
          f" config.{name}.opener_batch_flat=True; set one of the two"
          " openers."
      )
    checks.check_real(name, "em_ratio", self.em_ratio, lo=0.0, hi=1.0)
    checks.check_choice(name, "em_rule", self.em_rule, selection.EM_RULES)
    checks.check_int(name, "em_group_rows", self.em_group_rows, lo=0)
    if self.em_group_rows and self.em_rule != "quantile":
      raise ValueError(
          f"config.{name}.em_group_rows: {self.em_group_rows} needs"
          f" config.{name}.em_rule='quantile', got {self.em_rule!r}."
      )
    checks.check_real(name, "em_weight", self.em_weight, lo=0.0)
    checks.check_bool(name, "pl_code_compat", self.pl_code_compat)
    checks.check_common(name, self)

  def loss(self, inputs: StepInputs) -> tuple[Array, Metrics]:
    """Returns the TSD-KD objective and one metric per term."""
    vocab = inputs.student_head.shape[1]
    if self.top_k > vocab:
      raise ValueError(
          f"config.{self.NAME}.top_k must be in [1, V={vocab}], got"
          f" {self.top_k}."
      )
    mask = jnp.asarray(inputs.mask, bool)
    terms = tsd_terms(
        inputs,
        beta=self.beta,
        top_k=self.top_k,
        temperature=self.temperature,
        chunk_size=self.chunk_size,
    )
    loss, parts = tsd_kd_objective(
        student_entropy=terms.student_entropy,
        teacher_entropy=terms.teacher_entropy,
        direct_divergence=terms.jsd,
        student_candidate_logits=terms.student_candidate_logits,
        teacher_candidate_logits=terms.teacher_candidate_logits,
        mask=mask,
        alpha=self.alpha,
        gate_tau=self.gate_tau,
        opener_threshold=self.opener_threshold,
        opener_batch_flat=self.opener_batch_flat,
        opener_group_rows=self.opener_group_rows,
        em_ratio=self.em_ratio,
        em_rule=self.em_rule,
        em_group_rows=self.em_group_rows,
        em_weight=self.em_weight,
        temperature=self.temperature,
        pl_code_compat=self.pl_code_compat,
        use_gate=self.gate,
    )
    valid = jnp.maximum(jnp.sum(mask, dtype=jnp.float32), 1.0)
    sg = jax.lax.stop_gradient
    metrics = {f"loss/{k}": sg(part.value()) for k, part in parts.items()}
    gate = selection.confidence_gate(
        terms.student_entropy, terms.teacher_entropy, tau=self.gate_tau
    )
    if not self.gate:
      gate = jnp.ones_like(gate)
    metrics.update({
        **common.selected_fraction(mask, mask),
        "select/opener_frac": parts["indirect"].count / valid,
        "select/em_frac": parts["em"].count / valid,
        "tsd_kd/gate_mean": common.valid_mean(gate, mask),
        "div/jsd_all": common.valid_mean(terms.jsd, mask),
        "entropy/student": common.valid_mean(terms.student_entropy, mask),
        "entropy/teacher": common.valid_mean(terms.teacher_entropy, mask),
    })
    return loss, metrics

  def token_sets(self, inputs: StepInputs) -> dict[str, TokenSet]:
    """The opener O, the EM set I and the confidence gate of the batch."""
    mask = jnp.asarray(inputs.mask, bool)
    terms = tsd_terms(  # the entropies need no candidates
        inputs,
        beta=self.beta,
        top_k=1,
        temperature=self.temperature,
        chunk_size=self.chunk_size,
    )
    hs = jax.lax.stop_gradient(terms.student_entropy)
    ht = jax.lax.stop_gradient(terms.teacher_entropy)
    gate = selection.confidence_gate(hs, ht, tau=self.gate_tau)
    opener = selection.opener_mask(
        hs,
        mask,
        threshold=self.opener_threshold,
        batch_flat=self.opener_batch_flat,
        group_rows=self.opener_group_rows,
    )
    em = selection.entropy_min_set(
        hs,
        mask,
        ratio=self.em_ratio,
        rule=self.em_rule,
        group_rows=self.em_group_rows,
    )
    return {
        "opener": TokenSet(
            opener, "TSD-KD opener: prefix holding the first c of the entropy"
        ),
        "em": TokenSet(em, f"TSD-KD entropy-min set ({self.em_rule} rule)"),
        "gate": TokenSet(
            jnp.where(mask, gate if self.gate else jnp.ones_like(gate), 0.0),
            "TSD-KD confidence gate sigmoid((H_S - H_T) / tau)",
            (0.0, 1.0),
        ),
    }
