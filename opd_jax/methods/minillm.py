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
"""MiniLLM: sequence-level reverse KL as single-step plus long-term terms.

References:
  Gu et al., "MiniLLM: Knowledge Distillation of Large Language Models",
  ICLR 2024, arXiv 2306.08543 (code: microsoft/LMOps ``minillm/``).
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


def future_return(
    rewards: Array, mask: Array, *, normalize: bool = True
) -> Array:
  r"""Return of the strictly later tokens, optionally length-normalised.

  .. math::
    R_{t+1} = \sum_{t' > t} m_{t'} r_{t'}, \qquad
    R^{norm}_{t+1} = R_{t+1} / \max(1, \textstyle\sum_{t' > t} m_{t'}).

  Args:
    rewards: float ``[batch, seq]`` per-token rewards.
    mask: bool ``[batch, seq]``.
    normalize: divide by the number of valid later tokens.

  Returns:
    float32 ``[batch, seq]``.
  """
  rev_cumsum = lambda x: jnp.flip(jnp.cumsum(jnp.flip(x, -1), -1), -1)
  r = jnp.where(mask, rewards, 0.0).astype(jnp.float32)
  later = rev_cumsum(r) - r
  if not normalize:
    return later
  m = mask.astype(jnp.float32)
  count = rev_cumsum(m) - m
  return later / jnp.maximum(count, 1.0)


@register("minillm")
@dataclasses.dataclass(frozen=True)
class MiniLLM:
  r"""MiniLLM's policy gradient of the sequence-level reverse KL.

  With :math:`r_t = \log p_T(y_t) - \log p_S(y_t)` and importance weights
  :math:`w_t = p_S(y_t) / p_{old}(y_t)` (the sampler's, e.g. the
  teacher-mixed :math:`\tilde p = \alpha p_T + (1 - \alpha) p_S`; 1
  on-policy), per token

  .. math::
    \ell_t = \mathrm{sg}(w_t)\, \mathrm{KL}(p_S \| p_T)_t
      - \frac{p_S(y_t)}{\mathrm{sg}(p_{old}(y_t))}\,
        \mathrm{sg}(R^{norm}_{t+1}),

  averaged over valid tokens: the first term is the single-step part
  :math:`(\nabla L)_{Single}` (exact over the vocabulary), the second the
  long-horizon part :math:`(\nabla L)_{Long}`. PPO clipping and the
  pre-training LM loss of the paper are not included.

  Attributes:
    single_step_coef: weight of the single-step term, >= 0 (1).
    long_term_coef: weight of the long-horizon term, >= 0 (1).
    length_normalize: divide the future return by the number of later
      valid tokens (the paper's :math:`R^{norm}`).
    use_sampler_logprobs: importance weights from
      ``inputs.sampler_logprobs``; False means on-policy (weights 1).
    temperature: softmax temperature of both heads.
    reduction: 'token_mean' (default), 'seq_mean' or 'sum'.
    chunk_size: positions per checkpointed chunk, or None for one pass.
  """

  NAME: ClassVar[str] = "minillm"

  single_step_coef: float = 1.0
  long_term_coef: float = 1.0
  length_normalize: bool = True
  use_sampler_logprobs: bool = True
  temperature: float = 1.0
  reduction: str = "token_mean"
  chunk_size: int | None = heads.DEFAULT_CHUNK_SIZE

  def __post_init__(self):
    name = self.NAME
    checks.check_real(name, "single_step_coef", self.single_step_coef, lo=0.0)
    checks.check_real(name, "long_term_coef", self.long_term_coef, lo=0.0)
    checks.check_bool(name, "length_normalize", self.length_normalize)
    checks.check_bool(name, "use_sampler_logprobs", self.use_sampler_logprobs)
    checks.check_common(name, self)

  def loss(self, inputs: StepInputs) -> tuple[Array, Metrics]:
    """Returns the single-step plus long-horizon loss and its metrics."""
    sg = jax.lax.stop_gradient
    mask = jnp.asarray(inputs.mask, bool)
    rkl, lp_s, lp_t = common.sampled_token_logprobs(
        inputs,
        temperature=self.temperature,
        chunk_size=self.chunk_size,
        with_reverse_kl=True,
    )
    if self.use_sampler_logprobs:
      lp_old = sg(jnp.where(mask, inputs.sampler_logprobs, 0.0))
    else:
      lp_old = sg(lp_s)
    # where before exp: a masked -inf sampler log-prob must not give nan.
    ratio = jnp.exp(jnp.where(mask, lp_s - lp_old, 0.0))
    ret = sg(
        future_return(lp_t - sg(lp_s), mask, normalize=self.length_normalize)
    )
    single = sg(ratio) * rkl
    long_term = -ratio * ret
    per_token = self.single_step_coef * single + self.long_term_coef * long_term
    loss = losses.reduce(per_token, mask, self.reduction).value()
    metrics = {
        "loss/single": common.valid_mean(single, mask),
        "loss/long": common.valid_mean(long_term, mask),
        "div/rkl_all": common.valid_mean(rkl, mask),
        "pg/return_mean": common.valid_mean(ret, mask),
        "pg/ratio_mean": common.valid_mean(ratio, mask),
        **common.selected_fraction(mask, mask),
    }
    return loss, metrics
