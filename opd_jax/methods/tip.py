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
"""TIP: reverse-KL OPD on the tokens selected by entropy and divergence.

References:
  Xu et al., "Token Importance in on-Policy distillation", arXiv 2604.14084.
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

SELECTORS = (
    "soft_or",
    "bottom_soft_or",
    "entropy",
    "divergence",
    "quadrant",
    "random",
    "all",
)
# What each selector keeps (the token map's descriptions).
KEEPS = {
    "soft_or": "top rho of each rollout by Soft-OR score",
    "bottom_soft_or": "bottom rho of each rollout by Soft-OR score",
    "entropy": "top rho of each rollout by H_S",
    "divergence": "top rho of each rollout by divergence",
    "quadrant": "quadrant selector (Q3 = low H_S, high divergence)",
    "random": "rho of each rollout uniformly at random",
    "all": "every valid token",
}


@register("tip")
@dataclasses.dataclass(frozen=True)
class TIP:
  r"""TIP: OPD on the tokens that matter by student entropy and divergence.

  A stop-gradient stats pass gives per-token student entropy :math:`H_S`
  and divergence :math:`d` (``score_divergence``); the selector keeps, per
  rollout, ``floor(rho L_b)`` tokens (or a quadrant); the loss pass runs
  the heads on the ``K = ceil(rho T)`` gathered positions only:

  .. math::
    L = \frac{\sum_{b,t \in S_b} D(p_S \| p_T)_{bt}}{\sum_b |S_b|}.

  Selectors: 'soft_or' (default; :math:`s = \hat h + \hat d - \hat h \hat
  d` after the 0.98-quantile entropy clip and global min–max),
  'bottom_soft_or' (negative control), 'entropy' (top-k or Gumbel sampling
  ∝ :math:`H^\alpha`), 'divergence', 'quadrant' (global quantile cuts;
  ``which=3`` = low-H / high-D), 'random' and 'all' (full-token control).

  Attributes:
    selector: one of :data:`SELECTORS`.
    rho: kept fraction per rollout, in (0, 1] (0.5; the paper also 0.2).
    clip_quantile: Soft-OR entropy clip quantile in (0, 1], or None.
    entropy_mode: 'topk' or 'sample' for the 'entropy' selector.
    entropy_alpha: exponent of the entropy weights when sampling (>= 0).
    which: quadrant label(s) in 1..4 for the 'quadrant' selector (3).
    q_entropy: entropy quantile cut of the quadrants, in [0, 1] (0.5).
    q_divergence: divergence quantile cut of the quadrants (0.8).
    quadrant_budget: static gather size of 'quadrant' as a fraction of T,
      in (0, 1] (a rollout with more quadrant tokens keeps its first ones).
    score_divergence: the selection axis, a name ``divergence`` takes:
      'reverse_kl' (default), 'forward_kl', 'jsd', or 'sampled_logratio'.
    loss_pass: the loss divergence and its head pass (`common.LossPass`:
      divergence, jsd_beta, skew_alpha, temperature, reduction, chunk_size).
  """

  NAME: ClassVar[str] = "tip"
  # Saved runs' old field names and values (`base.renamed_fields`).
  RENAMED, RENAMED_VALUES = common.score_method_renames("tip_divergence")

  selector: str = "soft_or"
  rho: float = 0.5
  clip_quantile: float | None = 0.98
  entropy_mode: str = "topk"
  entropy_alpha: float = 1.0
  which: int | tuple[int, ...] = 3
  q_entropy: float = 0.5
  q_divergence: float = 0.8
  quadrant_budget: float = 1.0
  score_divergence: str = "reverse_kl"
  loss_pass: common.LossPass = common.LossPass()

  def __post_init__(self):
    name = self.NAME
    checks.check_choice(name, "selector", self.selector, SELECTORS)
    checks.check_real(name, "rho", self.rho, lo=0.0, hi=1.0, lo_open=True)
    if self.clip_quantile is not None:
      checks.check_real(
          name,
          "clip_quantile",
          self.clip_quantile,
          lo=0.0,
          hi=1.0,
          lo_open=True,
      )
    checks.check_choice(
        name, "entropy_mode", self.entropy_mode, ("topk", "sample")
    )
    checks.check_real(name, "entropy_alpha", self.entropy_alpha, lo=0.0)
    which = (self.which,) if isinstance(self.which, int) else self.which
    try:
      which = tuple(which)
    except TypeError:
      which = ()
    if not which or any(
        isinstance(w, bool) or w not in (1, 2, 3, 4) for w in which
    ):
      raise ValueError(
          f"config.{name}.which must be a quadrant label in 1..4 or a"
          f" non-empty tuple of them, got {self.which!r}."
      )
    # Frozen: tuples keep the dataclass hashable (a static jit argument).
    object.__setattr__(self, "which", which)
    checks.check_real(name, "q_entropy", self.q_entropy, lo=0.0, hi=1.0)
    checks.check_real(name, "q_divergence", self.q_divergence, lo=0.0, hi=1.0)
    checks.check_real(
        name,
        "quadrant_budget",
        self.quadrant_budget,
        lo=0.0,
        hi=1.0,
        lo_open=True,
    )
    checks.check_choice(
        name, "score_divergence", self.score_divergence, common.token_scores()
    )
    object.__setattr__(self, "loss_pass", checks.check_loss_pass(self))

  def select(
      self, inputs: StepInputs, token_stats: heads.TokenStats
  ) -> selection.Selection:
    """Runs the configured selector; returns weights and a gather index."""
    mask = jnp.asarray(inputs.mask, bool)
    entropy = token_stats.student_entropy
    div = common.axis_divergence(token_stats, self.score_divergence)
    kw = dict(return_index=True)
    if self.selector in ("soft_or", "bottom_soft_or"):
      return selection.soft_or(
          entropy,
          div,
          mask,
          self.rho,
          vocab_size=inputs.student_head.shape[1],
          clip_quantile=self.clip_quantile,
          bottom=self.selector == "bottom_soft_or",
          **kw,
      )
    if self.selector == "entropy":
      return selection.entropy_top(
          entropy,
          mask,
          self.rho,
          mode=self.entropy_mode,
          key=inputs.key,
          alpha=self.entropy_alpha,
          **kw,
      )
    if self.selector == "divergence":
      return selection.divergence_top(div, mask, self.rho, **kw)
    if self.selector == "quadrant":
      return selection.quadrant_select(
          entropy,
          div,
          mask,
          which=self.which,
          q_entropy=self.q_entropy,
          q_divergence=self.q_divergence,
          budget_fraction=self.quadrant_budget,
          **kw,
      )
    if self.selector == "random":
      return selection.uniform_random(inputs.key, mask, self.rho, **kw)
    return selection.all_tokens(mask, **kw)

  def token_sets(self, inputs: StepInputs) -> dict[str, TokenSet]:
    """The selector's tokens, and the Soft-OR score it ranks them by."""
    mask = jnp.asarray(inputs.mask, bool)
    token_stats = self.loss_pass.token_stats(inputs)
    sel = self.select(inputs, token_stats)
    name = self.selector
    out = {name: TokenSet(sel.weights > 0, f"TIP {name}: {KEEPS[name]}")}
    if name in ("soft_or", "bottom_soft_or"):
      out["score"] = TokenSet(
          selection.soft_or_scores(
              token_stats.student_entropy,
              common.axis_divergence(token_stats, self.score_divergence),
              mask,
              vocab_size=inputs.student_head.shape[1],
              clip_quantile=self.clip_quantile,
          ),
          "TIP Soft-OR score 1 - (1 - h)(1 - d), batch min-max",
          (0.0, 1.0),
      )
    return out

  def loss(self, inputs: StepInputs) -> tuple[Array, Metrics]:
    """Stats pass -> selector -> divergence on the gathered positions."""
    mask = jnp.asarray(inputs.mask, bool)
    loss_pass = self.loss_pass
    token_stats = loss_pass.token_stats(inputs)
    sel = self.select(inputs, token_stats)
    loss, metrics = loss_pass.selected_loss(inputs, sel)
    metrics.update(common.stats_metrics(token_stats, mask))
    metrics["div/rkl_selected"] = common.valid_mean(
        token_stats.reverse_kl, sel.weights > 0
    )
    return loss, metrics
