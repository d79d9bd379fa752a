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
"""What methods share: the loss-pass settings as a type, masked means, metrics.

No method imports another; what two methods need lives here (and the
config checks in `checks.py`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from opd_jax import heads
from opd_jax import losses
from opd_jax import selection
from opd_jax.methods.base import Metrics, Segment, StepInputs

Array = jax.Array

# What a selector can score tokens by (``score_divergence`` of TIP, DEAR and
# TOPD), read off one stats pass: every divergence with a `token_stat`, under
# the name ``divergence`` takes, and the sampled-token proxy.
SAMPLED_LOGRATIO = "sampled_logratio"


def token_scores() -> tuple[str, ...]:
  """The names `axis_divergence` takes (from `heads.DIVERGENCES`)."""
  scored = [d.name for d in heads.DIVERGENCES.values() if d.token_stat]
  return (*scored, SAMPLED_LOGRATIO)


def valid_mean(x: Array, mask: Array) -> Array:
  """Mean of ``x`` [B, T] over the valid tokens (0 if there is none)."""
  return losses.token_mean(jax.lax.stop_gradient(x), mask).value()


def selected_fraction(kept: Array, mask: Array) -> Metrics:
  """`select/count` and `select/frac` of a [B, T] kept-token mask."""
  count = jnp.sum(kept & jnp.asarray(mask, bool), dtype=jnp.float32)
  valid = jnp.sum(mask, dtype=jnp.float32)
  return {"select/count": count, "select/frac": count / jnp.maximum(valid, 1.0)}


def nested_loss_pass_fields(*names: str) -> dict[str, str]:
  """A method's `RENAMED` entries for loss-pass fields saved before the
  pass nested (`divergence` -> `loss_pass.divergence`; all when none)."""
  names = names or tuple(f.name for f in dataclasses.fields(LossPass))
  return {name: f"loss_pass.{name}" for name in names}


def score_method_renames(old_score_field: str):
  """(`RENAMED`, `RENAMED_VALUES`) of a method that scores tokens (TIP,
  DEAR, TOPD): its score field's old name, whose values were short
  divergence names then ('rkl', 'fkl'), and its loss-pass fields from
  before the pass nested."""
  return (
      {
          old_score_field: "score_divergence",
          **nested_loss_pass_fields(),
      },
      {old_score_field: {"rkl": "reverse_kl", "fkl": "forward_kl"}},
  )


@dataclasses.dataclass(frozen=True)
class LossPass:
  r"""How a method forms its ``[., V]`` tensors: the loss-pass settings.

  Every method whose loss is a divergence through the heads (GKD, rkl, TIP,
  DEAR, TOPD) holds one as its ``loss_pass`` field, so each of their config
  blocks nests the same fields under the same names
  (``config.<method>.loss_pass.divergence``, ...), declared here once; the
  method differs only in the default it gives (GKD: JSD at temperature 0.9,
  TRL's). The method's ``__post_init__`` checks them
  (`checks.check_loss_pass`), so an error names the method's field.

  Attributes:
    divergence: the loss divergence, a key of ``heads.DIVERGENCES``.
    jsd_beta: beta of 'jsd' (stats pass and loss), in [0, 1] (TRL's GKD
      ``beta``: 0 is forward KL, 1 reverse KL).
    skew_alpha: alpha of the skew KL losses, in [0, 1].
    temperature: softmax temperature of both heads, stats and loss.
    reduction: 'token_mean' (mean over the weighted tokens), 'seq_mean' or
      'sum'.
    chunk_size: positions per chunk of the head pass, or None for one pass.
  """

  divergence: str = "reverse_kl"
  jsd_beta: float = 0.5
  skew_alpha: float = 0.1
  temperature: float = 1.0
  reduction: str = "token_mean"
  chunk_size: int | None = heads.DEFAULT_CHUNK_SIZE

  @property
  def divergence_kwargs(self) -> dict[str, float]:
    """The extra keyword arguments of the loss divergence (its record's
    `params`, read off these settings)."""
    return heads.divergence_record(self.divergence).kwargs(self)

  @property
  def loss_key(self) -> str:
    """The metric key of the divergence term, e.g. `loss/rkl`."""
    return f"loss/{heads.divergence_record(self.divergence).short}"

  def token_stats(self, inputs: StepInputs) -> heads.TokenStats:
    """The stop-gradient stats pass [B, T] of the step's rollout."""
    return heads.token_stats(
        *inputs.hidden_and_heads,
        inputs.ids,
        where=jnp.asarray(inputs.mask, bool),
        chunk_size=self.chunk_size,
        temperature=self.temperature,
        jsd_beta=self.jsd_beta,
    )

  def token_divergence(self, inputs: StepInputs) -> Array:
    """The loss divergence of each response token [B, T] (no gradient, 0
    where masked), at this pass's temperature."""
    return jax.lax.stop_gradient(
        heads.head_divergence(
            *inputs.hidden_and_heads,
            jnp.asarray(inputs.mask, bool),
            divergence=self.divergence,
            divergence_kwargs=self.divergence_kwargs,
            temperature=self.temperature,
            chunk_size=self.chunk_size,
        )
    )

  def weighted_loss(
      self,
      inputs: StepInputs,
      weights: Array,
      *,
      reduction: str | None = None,
      segment: Segment | None = None,
  ) -> Array:
    """The divergence of each token, weighted, reduced: a scalar.

    Every loss through the head pass goes here, so each gets the step's
    pointwise clip (`StepInputs.divergence_clip`).

    Args:
      inputs: the step's inputs (the heads, the clip; the hidden states
        unless `segment`).
      weights: float32 [B, T] token weights (0 where masked), or [M, W]
        over `segment`'s windows.
      reduction: this pass's `reduction` unless given.
      segment: score a staged method's teacher-forced windows instead of
        the rollout.
    """
    sides = segment or inputs
    return heads.dense_divergence_loss(
        sides.student_hidden,
        inputs.student_head,
        sides.teacher_hidden,
        inputs.teacher_head,
        weights,
        divergence=self.divergence,
        divergence_kwargs=self.divergence_kwargs,
        temperature=self.temperature,
        reduction=reduction or self.reduction,
        chunk_size=self.chunk_size,
        clip=inputs.divergence_clip,
    ).value()

  def dense_loss(self, inputs: StepInputs) -> tuple[Array, Metrics]:
    """The divergence on every valid response token, with its metrics."""
    mask = jnp.asarray(inputs.mask, bool)
    loss = self.weighted_loss(inputs, mask.astype(jnp.float32))
    return loss, {self.loss_key: loss, **selected_fraction(mask, mask)}

  def selected_loss(
      self, inputs: StepInputs, sel: selection.Selection
  ) -> tuple[Array, Metrics]:
    """The divergence on a selection's gathered positions, with metrics."""
    mean = heads.selective_divergence_loss(
        *inputs.hidden_and_heads,
        sel.index,
        sel.index_weights,
        divergence=self.divergence,
        divergence_kwargs=self.divergence_kwargs,
        temperature=self.temperature,
        reduction=self.reduction,
        chunk_size=self.chunk_size,
        clip=inputs.divergence_clip,
    )
    loss = mean.value()
    return loss, {
        self.loss_key: loss,
        **selected_fraction(sel.weights > 0, inputs.mask),
    }


def axis_divergence(token_stats: heads.TokenStats, name: str) -> Array:
  r"""The per-token score ``name`` [B, T] from a stats pass.

  A divergence's name ('reverse_kl', 'forward_kl', 'jsd': those with a
  `token_stat`) gives its full-vocabulary values; 'sampled_logratio' is
  :math:`|\log p_T(y_t) - \log p_S(y_t)|`, the cheap proxy that needs only
  the sampled tokens.
  """
  if name == SAMPLED_LOGRATIO:
    return jnp.abs(token_stats.teacher_logprob - token_stats.student_logprob)
  d = heads.DIVERGENCES.get(name)
  if d is not None and d.token_stat:
    return getattr(token_stats, d.token_stat)
  raise ValueError(f"axis divergence must be one of {token_scores()}.")


def stats_metrics(token_stats: heads.TokenStats, mask: Array) -> Metrics:
  """Whole-batch diagnostics from a stats pass (means over valid tokens)."""
  return {
      "div/rkl_all": valid_mean(token_stats.reverse_kl, mask),
      "entropy/student": valid_mean(token_stats.student_entropy, mask),
      "entropy/teacher": valid_mean(token_stats.teacher_entropy, mask),
  }


def sampled_token_logprobs(
    inputs: StepInputs,
    *,
    temperature: float = 1.0,
    chunk_size: int | None = heads.DEFAULT_CHUNK_SIZE,
    with_reverse_kl: bool = False,
) -> tuple[Array, ...]:
  r"""Log-probabilities of the response tokens under student and teacher.

  .. math::
    \log p(y_t) = z_{t, y_t} / \tau - \mathrm{logsumexp}(z_t / \tau),
    \qquad z = h W,

  the student's with gradient, the teacher's under ``stop_gradient``, from
  one checkpointed head pass (only ``[B, chunk, V]`` logits are ever live);
  of the teacher's distribution only the logsumexp and one gathered logit
  are used.

  Args:
    inputs: the step inputs (hidden states, heads, ``ids``, ``mask``).
    temperature: softmax temperature; must match the sampler's for the
      importance ratio to be 1 on-policy.
    chunk_size: positions per chunk, or None for one dense pass.
    with_reverse_kl: also return the full-vocabulary
      :math:`\mathrm{KL}(p_S \| p_T)` per token (with gradient), from the
      same chunks.

  Returns:
    ``(student_logprob, teacher_logprob)``, preceded by ``rkl`` when
    `with_reverse_kl`: float32 ``[B, T]`` each, 0 at masked positions.
  """

  def chunk_logprobs(zs, zt, y, w):  # zs, zt: [B, C, V]
    lps = losses.token_logprobs(zs, y, temperature=temperature)
    lpt = losses.token_logprobs(zt, y, temperature=temperature)
    out = (jnp.where(w, lps, 0.0), jnp.where(w, lpt, 0.0))
    if with_reverse_kl:
      out = (losses.reverse_kl(zs, zt, where=w, temperature=temperature), *out)
    return out

  return heads.head_pass(
      chunk_logprobs,
      *inputs.hidden_and_heads,
      inputs.ids,
      jnp.asarray(inputs.mask, bool),
      chunk_size=chunk_size,
  )
