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
"""DEAR: OPD on decision anchors and the evidence tokens that support them.

References:
  Xiao et al., "Finding the Evidence: Discovering Decision-Supporting Tokens
  for On-Policy Reasoning Distillation", arXiv 2606.22830.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from opd_jax import heads
from opd_jax import selection
from opd_jax.methods import checks
from opd_jax.methods import common
from opd_jax.methods.base import Metrics, register, StepInputs, TokenSet

Array = jax.Array


@register("dear")
@dataclasses.dataclass(frozen=True)
class DEAR:
  r"""DEAR: OPD on decision tokens D and evidence tokens E only.

  Per rollout, D = the top ``floor(p L_b)`` tokens by student entropy;
  among the other valid tokens the evidence score
  :math:`s_j = \hat a_j (1 + \hat\delta_j)` combines the max cosine of the
  student's last hidden state to the anchors (:math:`a`) and the knowledge
  gap :math:`\delta`; E = the top ``floor(q |N_b|)`` by s. The loss runs on
  the gathered D ∪ E positions (about ``p + q - pq`` = 36% of tokens):

  .. math::
    L = \frac{\sum_{b,t} w_{bt}\, D(p_S \| p_T)_{bt}}{\sum_{b,t} w_{bt}},
    \qquad w = w_D [t \in D] + w_E [t \in E].

  Selection uses ``stop_gradient`` stats and hidden states.

  Attributes:
    p: decision fraction in (0, 1] (0.2).
    q: evidence fraction of non-decision tokens in [0, 1] (0.2).
    score_divergence: the knowledge gap delta, a name ``divergence``
      takes: 'reverse_kl' (default), 'forward_kl', 'jsd', or
      'sampled_logratio'.
    anchor_causal: only anchors before a token count for its relevance.
    anchor_window: only anchors within this many positions count (None:
      all).
    norm_scope: 'sequence' (default) or 'batch' min–max statistics.
    decision_weight: loss weight of D, >= 0 (1).
    evidence_weight: loss weight of E, >= 0 (1).
    loss_pass: the loss divergence and its head pass (`common.LossPass`:
      divergence, jsd_beta, skew_alpha, temperature, reduction, chunk_size).
  """

  NAME: ClassVar[str] = "dear"
  # Saved runs' old field names and values (`base.renamed_fields`).
  RENAMED, RENAMED_VALUES = common.score_method_renames("delta")

  p: float = 0.2
  q: float = 0.2
  score_divergence: str = "reverse_kl"
  anchor_causal: bool = False
  anchor_window: int | None = None
  norm_scope: str = "sequence"
  decision_weight: float = 1.0
  evidence_weight: float = 1.0
  loss_pass: common.LossPass = common.LossPass()

  def __post_init__(self):
    name = self.NAME
    checks.check_real(name, "p", self.p, lo=0.0, hi=1.0, lo_open=True)
    checks.check_real(name, "q", self.q, lo=0.0, hi=1.0)
    checks.check_choice(
        name, "score_divergence", self.score_divergence, common.token_scores()
    )
    checks.check_bool(name, "anchor_causal", self.anchor_causal)
    if self.anchor_window is not None:
      checks.check_int(name, "anchor_window", self.anchor_window, lo=0)
    checks.check_choice(
        name, "norm_scope", self.norm_scope, ("sequence", "batch")
    )
    checks.check_real(name, "decision_weight", self.decision_weight, lo=0.0)
    checks.check_real(name, "evidence_weight", self.evidence_weight, lo=0.0)
    object.__setattr__(self, "loss_pass", checks.check_loss_pass(self))

  def tokens(
      self, inputs: StepInputs, token_stats: heads.TokenStats
  ) -> selection.DearTokens:
    """Decision and evidence tokens of the batch (no gradient)."""
    return selection.dear_tokens(
        token_stats.student_entropy,
        common.axis_divergence(token_stats, self.score_divergence),
        jax.lax.stop_gradient(inputs.student_hidden),
        jnp.asarray(inputs.mask, bool),
        p=self.p,
        q=self.q,
        anchor_causal=self.anchor_causal,
        anchor_window=self.anchor_window,
        norm_scope=self.norm_scope,
    )

  def token_sets(self, inputs: StepInputs) -> dict[str, TokenSet]:
    """The decision anchors D and the evidence tokens E."""
    parts = self.tokens(inputs, self.loss_pass.token_stats(inputs))
    return {
        "decision": TokenSet(
            parts.decision,
            "DEAR decision anchors: top p of each rollout by H_S",
        ),
        "evidence": TokenSet(
            parts.evidence,
            "DEAR evidence: top q of the rest by relevance x gap",
        ),
    }

  def loss(self, inputs: StepInputs) -> tuple[Array, Metrics]:
    """Stats pass -> D ∪ E -> divergence on the gathered positions."""
    mask = jnp.asarray(inputs.mask, bool)
    loss_pass = self.loss_pass
    token_stats = loss_pass.token_stats(inputs)
    parts = self.tokens(inputs, token_stats)
    sel = selection.union_selection(
        parts,
        self.p,
        self.q,
        decision_weight=self.decision_weight,
        evidence_weight=self.evidence_weight,
        return_index=True,
    )
    loss, metrics = loss_pass.selected_loss(inputs, sel)
    valid = jnp.maximum(jnp.sum(mask, dtype=jnp.float32), 1.0)
    metrics.update(common.stats_metrics(token_stats, mask))
    metrics["select/decision_frac"] = (
        jnp.sum(parts.decision, dtype=jnp.float32) / valid
    )
    metrics["select/evidence_frac"] = (
        jnp.sum(parts.evidence, dtype=jnp.float32) / valid
    )
    return loss, metrics
