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
"""Sampled-token reverse-KL OPD as a policy gradient (Thinking Machines).

References:
  Thinking Machines Lab, "On-Policy Distillation" (blog, 2025) and
  tinker-cookbook ``distillation/train_on_policy.py``.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from opd_jax import heads
from opd_jax import losses
from opd_jax.methods import checks
from opd_jax.methods import common
from opd_jax.methods.base import Metrics, register, StepInputs

Array = jax.Array


def discounted_future_sum(x: Array, gamma: float) -> Array:
  r"""Discounted sum of the future along the sequence axis.

  .. math::
    G_{b,t} = \sum_{t' \ge t} \gamma^{t' - t} x_{b,t'},

  as one reverse ``lax.scan`` over T (``G_t = x_t + \gamma G_{t+1}``);
  ``gamma = 0`` returns ``x``. Masked positions should hold 0 in ``x``:
  they add nothing but still count as time steps.

  Args:
    x: float ``[batch, seq]``.
    gamma: Python float in [0, 1].

  Returns:
    float32 ``[batch, seq]``.
  """
  x = jnp.asarray(x, jnp.float32)
  if gamma == 0:
    return x

  def step(future, x_t):  # [B], [B]
    total = x_t + gamma * future
    return total, total

  _, out = jax.lax.scan(
      step, jnp.zeros(x.shape[:1], x.dtype), x.T, reverse=True
  )
  return out.T


@register("sampled_rkl")
@dataclasses.dataclass(frozen=True)
class SampledRKL:
  r"""Per-token sampled reverse KL as an advantage (Tinker on-policy OPD).

  With :math:`\log p^{old}_S` the sampler's log-probs of the sampled tokens,

  .. math::
    k_t = (\log p^{old}_S(y_t) - \log p_T(y_t))\, m_t, \qquad
    A_t = -c \sum_{t' \ge t} \gamma^{t' - t} k_{t'},

  .. math::
    L = -\frac{1}{\sum m} \sum_{b,t} m_t\,
      \frac{p_S(y_t)}{\mathrm{sg}(p^{old}_S(y_t))}\, \mathrm{sg}(A_t).

  On-policy the ratio is 1 and :math:`\nabla L = -\sum_t A_t \nabla \log
  p_S(y_t) / N`, whose expectation over :math:`y \sim p_S` is
  :math:`c\, \nabla \mathrm{RKL}` per token at :math:`\gamma = 0`
  (docs/methods.md §0). Only gathered log-probs are needed: no ``[B, T, V]``
  array and no full teacher distribution beyond its logsumexp.

  Attributes:
    kl_penalty_coef: c >= 0 (1.0).
    kl_discount_factor: gamma in [0, 1]; 0 (default) keeps per-token
      advantages.
    temperature: softmax temperature of both heads; must be the sampler's.
    use_sampler_logprobs: take :math:`\log p^{old}_S` from
      ``inputs.sampler_logprobs``; False uses the current student's under
      ``stop_gradient`` (for batches no sampler produced, whose recorded
      log-probs are 0, or a sampler at another temperature).
    reduction: 'token_mean' (default), 'seq_mean' or 'sum'.
    chunk_size: positions per checkpointed chunk, or None for one pass.
  """

  NAME: ClassVar[str] = "sampled_rkl"

  kl_penalty_coef: float = 1.0
  kl_discount_factor: float = 0.0
  temperature: float = 1.0
  use_sampler_logprobs: bool = True
  reduction: str = "token_mean"
  chunk_size: int | None = heads.DEFAULT_CHUNK_SIZE

  def __post_init__(self):
    name = self.NAME
    checks.check_real(name, "kl_penalty_coef", self.kl_penalty_coef, lo=0.0)
    checks.check_real(
        name, "kl_discount_factor", self.kl_discount_factor, lo=0.0, hi=1.0
    )
    checks.check_bool(name, "use_sampler_logprobs", self.use_sampler_logprobs)
    checks.check_common(name, self)

  def loss(self, inputs: StepInputs) -> tuple[Array, Metrics]:
    """Returns the importance-sampling policy-gradient loss and metrics."""
    mask = jnp.asarray(inputs.mask, bool)
    lp_s, lp_t = common.sampled_token_logprobs(
        inputs, temperature=self.temperature, chunk_size=self.chunk_size
    )
    if self.use_sampler_logprobs:
      lp_old = jnp.where(mask, inputs.sampler_logprobs, 0.0)
    else:
      lp_old = lp_s
    lp_old = jax.lax.stop_gradient(lp_old.astype(jnp.float32))
    k = jnp.where(mask, lp_old - lp_t, 0.0)
    advantage = discounted_future_sum(
        -self.kl_penalty_coef * k, self.kl_discount_factor
    )
    advantage = jax.lax.stop_gradient(jnp.where(mask, advantage, 0.0))
    # where before exp: a masked -inf sampler log-prob must not give nan.
    log_ratio = jnp.where(mask, lp_s - lp_old, 0.0)
    ratio = jnp.exp(log_ratio)
    per_token = -ratio * advantage
    loss = losses.reduce(per_token, mask, self.reduction).value()
    metrics = {
        "loss/pg": loss,
        # k1 estimate of KL(p_S || p_T) on the sampled tokens.
        "div/k1_sampled": common.valid_mean(k, mask),
        "pg/advantage_mean": common.valid_mean(advantage, mask),
        # Off-policy diagnostics: 1 and 0 when the sampler is the student.
        "pg/ratio_mean": common.valid_mean(ratio, mask),
        "pg/ratio_max": jnp.max(
            jnp.where(mask, jax.lax.stop_gradient(ratio), 0.0)
        ),
        **common.selected_fraction(mask, mask),
    }
    return loss, metrics
