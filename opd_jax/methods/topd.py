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
"""TOPD: OPD with non-divergent suppression and near-future guidance.

References:
  Jiang & Ferraro, "Bridging Reasoning Trajectories in On-Policy
  Distillation via Near-Future Guidance", arXiv 2606.00305 (docs/methods.md §5;
  the details beyond the abstract are the resolutions of §5(d)).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from opd_jax import heads
from opd_jax import selection
from opd_jax.methods import base
from opd_jax.methods import checks
from opd_jax.methods import common
from opd_jax.methods import topd_stage
from opd_jax.methods.base import Metrics, register, StepInputs, TokenSet

Array = jax.Array

TRAJ_WINDOWS = ("teacher", "student")


@register("topd")
@dataclasses.dataclass(frozen=True)
class TOPD:
  r"""TOPD: suppress false alarms, guide divergent states along the teacher.

  A pre-update stage (:meth:`prepare`, no gradient) scores every rollout
  token by its OPD loss :math:`\ell_t`, takes the top ``rho_loss`` of each
  rollout (at most ``max_candidates``), continues each candidate's prefix
  :math:`(x, y_{<t})` for ``window`` tokens from the teacher and from the
  student, and measures the OT distance of the two windows (cost
  :math:`1 - \cos` of the student's input embeddings, uniform masses,
  entropic OT). Candidates above the batch's ``ot_quantile`` of OT are
  divergent states :math:`\mathcal{D}`; the others are false alarms
  :math:`\mathcal{F}`. The update minimises

  .. math::
    L = \frac{\sum_t w_t \ell_t}{\sum_t w_t}
      + \lambda \frac{1}{|\mathcal{D}|} \sum_{t \in \mathcal{D}}
        \frac{1}{K_t} \sum_{k < K_t}
        D(p_T \| p_S)(\cdot \mid x, y_{<t}, \tilde y^T_{t:t+k}),

  :math:`w_t = w_{low}` on :math:`\mathcal{F}`, 1 elsewhere, and
  :math:`\tilde y^T` the teacher's window, teacher-forced through both
  models in the step (``traj_window='teacher'``; 'student' spreads the term
  over the rollout's own next ``window`` tokens instead, needing no extra
  pass).

  Ablations: NDS only (``lambda_traj=0``), trajectory only (``w_low=1``),
  soft suppression (``0 < w_low < 1``).

  Attributes:
    rho_loss: candidate fraction of each rollout, in (0, 1] (0.2).
    max_candidates: static cap N of candidates per rollout, 1 <= N <= T (8).
    window: branched continuation length W >= 1 (50).
    score_divergence: the per-token loss that ranks candidates, a name
      ``divergence`` takes: 'reverse_kl' (default), 'forward_kl', 'jsd', or
      'sampled_logratio'.
    ot_epsilon: entropic regularisation of the OT (> 0; 0.05).
    ot_iterations: Sinkhorn iteration cap (>= 1; 100).
    ot_threshold: Sinkhorn marginal-error tolerance (> 0; 1e-3).
    ot_quantile: "high OT" is above this batch quantile, in [0, 1] (0.8).
    w_low: OPD weight of false alarms, in [0, 1] (0: masked).
    lambda_traj: weight of the trajectory term, >= 0 (1; 0 is NDS only).
    traj_divergence: divergence of the trajectory term, a key of
      heads.DIVERGENCES ('forward_kl').
    traj_window: 'teacher' (default) or 'student', see above.
    loss_pass: the loss divergence and its head pass (`common.LossPass`:
      divergence, jsd_beta, skew_alpha, temperature, reduction, chunk_size).
  """

  NAME: ClassVar[str] = "topd"
  # Saved runs' old field names and values (`base.renamed_fields`).
  RENAMED, RENAMED_VALUES = common.score_method_renames("candidate_divergence")

  rho_loss: float = 0.2
  max_candidates: int = 8
  window: int = 50
  score_divergence: str = "reverse_kl"
  ot_epsilon: float = 0.05
  ot_iterations: int = 100
  ot_threshold: float = 1e-3
  ot_quantile: float = 0.8
  w_low: float = 0.0
  lambda_traj: float = 1.0
  traj_divergence: str = "forward_kl"
  traj_window: str = "teacher"
  loss_pass: common.LossPass = common.LossPass()

  def __post_init__(self):
    name = self.NAME
    checks.check_real(
        name, "rho_loss", self.rho_loss, lo=0.0, hi=1.0, lo_open=True
    )
    checks.check_int(name, "max_candidates", self.max_candidates, lo=1)
    checks.check_int(name, "window", self.window, lo=1)
    checks.check_choice(
        name,
        "score_divergence",
        self.score_divergence,
        common.token_scores(),
    )
    checks.check_real(name, "ot_epsilon", self.ot_epsilon, lo=0.0, lo_open=True)
    checks.check_int(name, "ot_iterations", self.ot_iterations, lo=1)
    checks.check_real(
        name, "ot_threshold", self.ot_threshold, lo=0.0, lo_open=True
    )
    checks.check_real(name, "ot_quantile", self.ot_quantile, lo=0.0, hi=1.0)
    checks.check_real(name, "w_low", self.w_low, lo=0.0, hi=1.0)
    checks.check_real(name, "lambda_traj", self.lambda_traj, lo=0.0)
    checks.check_choice(
        name, "traj_divergence", self.traj_divergence, heads.DIVERGENCES
    )
    checks.check_choice(name, "traj_window", self.traj_window, TRAJ_WINDOWS)
    object.__setattr__(self, "loss_pass", checks.check_loss_pass(self))

  # ------------------------------------------------ the pre-update stage.

  @property
  def uses_segments(self) -> bool:
    """Whether the step teacher-forces the teacher's windows."""
    return self.lambda_traj > 0 and self.traj_window == "teacher"

  def check_response_len(self, response_len: int) -> None:
    """Refuses more candidates per rollout than response tokens."""
    if self.max_candidates > response_len:
      raise ValueError(
          f"config.{self.NAME}.max_candidates must be <= the response"
          f" length T = {response_len} (config.max_new_tokens), got"
          f" {self.max_candidates}."
      )

  def prepare_shapes(
      self,
      batch_size: int,
      prompt_len: int,
      response_len: int,
      teacher_prompt_len: int | None = None,
  ) -> dict[str, jax.ShapeDtypeStruct]:
    """Shapes of :meth:`prepare`'s outputs for [B, P] prompts, T tokens
    (and [B, Pt] teacher prompts under a teacher context)."""
    self.check_response_len(response_len)
    bn = (batch_size, self.max_candidates)
    sds = jax.ShapeDtypeStruct
    out = {
        topd_stage.CAND_INDEX: sds(bn, jnp.int32),
        topd_stage.CAND_VALID: sds(bn, jnp.bool_),
        topd_stage.CAND_SCORE: sds(bn, jnp.float32),
        topd_stage.OT: sds(bn, jnp.float32),
        topd_stage.HIGH_OT: sds(bn, jnp.bool_),
    }
    if self.uses_segments:
      m = topd_stage.trajectory_budget(
          batch_size * self.max_candidates, self.ot_quantile
      )
      length = prompt_len + response_len + self.window
      out[base.SEGMENT_TOKENS] = sds((m, length), jnp.int32)
      out[base.SEGMENT_MASK] = sds((m, length), jnp.bool_)
      out[base.SEGMENT_RESPONSE_MASK] = sds((m, self.window), jnp.bool_)
      if teacher_prompt_len is not None:
        length = teacher_prompt_len + response_len + self.window
        out[base.TEACHER_SEGMENT_TOKENS] = sds((m, length), jnp.int32)
        out[base.TEACHER_SEGMENT_MASK] = sds((m, length), jnp.bool_)
    return out

  def sequence_length(self, prompt_len: int, response_len: int) -> int:
    """Prefix (prompt + response, P + T) and a branched window W."""
    return prompt_len + response_len + self.window

  def prepare(
      self,
      student,
      teacher,
      rollout,
      key: Array,
      *,
      sampling,
      eos_ids: tuple[int, ...],
      pad_id: int,
      teacher_rollout=None,
  ) -> dict[str, Array]:
    """Candidates, branched windows, OT tests (see `topd_stage.prepare`)."""
    return topd_stage.prepare(
        self,
        student,
        teacher,
        rollout,
        key,
        sampling=sampling,
        eos_ids=eos_ids,
        pad_id=pad_id,
        teacher_rollout=teacher_rollout,
    )

  # ------------------------------------------------------------ the loss.

  @property
  def traj_pass(self) -> common.LossPass:
    """The head-pass settings of the trajectory term."""
    return dataclasses.replace(self.loss_pass, divergence=self.traj_divergence)

  def _stage_outputs(self, inputs: StepInputs, advice: str) -> dict[str, Array]:
    """``inputs.extras``, or a ValueError (ending in `advice`) naming the
    `prepare` outputs it lacks."""
    extras = inputs.extras or {}
    missing = [k for k in topd_stage.STAGE_KEYS if k not in extras]
    if missing:
      raise ValueError(
          f"{self.NAME}: StepInputs.extras lacks {missing}: run the"
          f" method's prepare() on the rollout {advice}."
      )
    return extras

  def _extras(self, inputs: StepInputs) -> dict[str, Array]:
    extras = self._stage_outputs(
        inputs, "and pass its outputs in the batch (the trainer does)"
    )
    if self.uses_segments and inputs.segment is None:
      raise ValueError(
          f"{self.NAME}: lambda_traj > 0 with traj_window='teacher' needs"
          " StepInputs.segment (the step teacher-forces prepare()'s"
          " segment/* outputs)."
      )
    return extras

  def token_sets(self, inputs: StepInputs) -> dict[str, TokenSet]:
    """The stage's candidates, divergent states, false alarms and OT.

    Reads `prepare`'s outputs from ``inputs.extras`` (not the segments).
    """
    ex = self._stage_outputs(inputs, "first")
    index, valid = ex[topd_stage.CAND_INDEX], ex[topd_stage.CAND_VALID]
    high = ex[topd_stage.HIGH_OT]
    shape = inputs.mask.shape
    rows = jnp.arange(index.shape[0])[:, None]
    scatter = (
        lambda v, init: jnp.full(shape, init, v.dtype).at[rows, index].max(v)
    )
    return {
        "candidate": TokenSet(
            scatter(valid, False),
            "TOPD candidates: top rho_loss of each rollout by loss",
        ),
        "divergent": TokenSet(
            scatter(valid & high, False),
            "TOPD divergent states: candidates above the OT quantile",
        ),
        "false_alarm": TokenSet(
            topd_stage.suppression_mask(index, valid, high, shape[1]),
            "TOPD false alarms: candidates at or below it",
        ),
        "ot": TokenSet(
            scatter(ex[topd_stage.OT], 0.0),
            "TOPD OT distance of a candidate's teacher and student windows"
            " (0 off candidates)",
        ),
    }

  def nds_weights(self, inputs: StepInputs) -> Array:
    """OPD token weights ``[B, T]``: ``w_low`` on false alarms, 1 else."""
    ex = self._extras(inputs)
    mask = jnp.asarray(inputs.mask, bool)
    alarm = topd_stage.suppression_mask(
        ex[topd_stage.CAND_INDEX],
        ex[topd_stage.CAND_VALID],
        ex[topd_stage.HIGH_OT],
        mask.shape[1],
    )
    return jnp.where(mask, jnp.where(alarm, self.w_low, 1.0), 0.0)

  def trajectory_loss(self, inputs: StepInputs) -> Array:
    """The near-future term: mean over divergent states of window means."""
    ex = self._extras(inputs)
    p = self.traj_pass
    if self.traj_window == "teacher":
      seg = inputs.segment
      return p.weighted_loss(
          inputs,
          jnp.asarray(seg.mask, jnp.float32),
          reduction="seq_mean",
          segment=seg,
      )
    weights = topd_stage.student_window_weights(
        ex[topd_stage.CAND_INDEX],
        ex[topd_stage.HIGH_OT],
        jnp.asarray(inputs.mask, bool),
        self.window,
    )
    return p.weighted_loss(inputs, weights, reduction="sum")

  def loss(self, inputs: StepInputs) -> tuple[Array, Metrics]:
    """NDS-weighted OPD term + lambda_traj * trajectory term, both through
    the loss pass (so the pointwise clip applies to them as to every
    loss-pass method's)."""
    self.check_response_len(inputs.mask.shape[1])
    ex = self._extras(inputs)
    mask = jnp.asarray(inputs.mask, bool)
    weights = self.nds_weights(inputs)
    lp = self.loss_pass
    loss = lp.weighted_loss(inputs, weights)
    metrics = {lp.loss_key: loss, **common.selected_fraction(weights > 0, mask)}
    if self.lambda_traj > 0:
      traj = self.trajectory_loss(inputs)
      metrics["loss/traj"] = traj
      loss = loss + self.lambda_traj * traj
    metrics.update(stage_metrics(ex, inputs.segment))
    return loss, metrics


def _masked_corr(x: Array, y: Array, mask: Array) -> Array:
  """Pearson correlation of the valid entries (0 if undefined)."""
  m = mask.astype(jnp.float32)
  n = jnp.maximum(m.sum(), 1.0)
  dx = (x - jnp.sum(x * m) / n) * m
  dy = (y - jnp.sum(y * m) / n) * m
  den = jnp.sqrt(jnp.sum(dx * dx) * jnp.sum(dy * dy))
  return jnp.where(
      den > 0, jnp.sum(dx * dy) / jnp.where(den > 0, den, 1.0), 0.0
  )


def stage_metrics(ex: dict[str, Array], segment) -> Metrics:
  """`topd/...`: candidates, false alarms, OT quantiles, loss-OT corr."""
  sg = jax.lax.stop_gradient
  valid = ex[topd_stage.CAND_VALID]
  high = ex[topd_stage.HIGH_OT]
  ot = sg(ex[topd_stage.OT])
  count = jnp.sum(valid, dtype=jnp.float32)
  out = {
      "topd/candidates": count,
      "topd/divergent": jnp.sum(high, dtype=jnp.float32),
      "topd/false_alarm_frac": (
          jnp.sum(valid & ~high, dtype=jnp.float32) / jnp.maximum(count, 1.0)
      ),
      "topd/loss_ot_corr": _masked_corr(
          sg(ex[topd_stage.CAND_SCORE]), ot, valid
      ),
  }
  for q in (10, 50, 90):
    out[f"topd/ot_q{q}"] = selection.masked_quantile(ot, valid, q / 100)
  if segment is not None:
    out["topd/traj_rows"] = jnp.sum(segment.mask.any(axis=1), dtype=jnp.float32)
  return out
