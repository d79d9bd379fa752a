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
"""Next-token sampling strategies: greedy, temperature, top-k, top-p."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Sampling:
  """How the next token is drawn from a distribution over the vocabulary.

  Attributes:
    temperature: logits are divided by it; 0 means greedy (argmax).
    top_k: keep only the k most likely tokens (0 = no truncation).
    top_p: keep the smallest set of most likely tokens whose probability
      reaches p (1.0 = no truncation).
  """

  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0

  def __post_init__(self):
    if self.temperature < 0:
      raise ValueError(
          f"Sampling.temperature: expected >= 0, got {self.temperature}"
      )
    if self.top_k < 0:
      raise ValueError(f"Sampling.top_k: expected >= 0, got {self.top_k}")
    if not 0.0 < self.top_p <= 1.0:
      raise ValueError(f"Sampling.top_p: expected in (0, 1], got {self.top_p}")

  @property
  def greedy(self) -> bool:
    return self.temperature == 0.0

  def log_probs(self, logits: jax.Array) -> jax.Array:
    """Log-probabilities [..., V] of the tempered, untruncated distribution."""
    logits = logits.astype(jnp.float32)
    if not self.greedy:
      logits = logits / self.temperature
    return jax.nn.log_softmax(logits, axis=-1)

  def truncate(self, log_probs: jax.Array) -> jax.Array:
    """Sets the log-probs of tokens outside top-k / top-p to -inf."""
    neg_inf = jnp.finfo(jnp.float32).min
    if self.top_k:
      kth = jax.lax.top_k(log_probs, self.top_k)[0][..., -1:]
      log_probs = jnp.where(log_probs < kth, neg_inf, log_probs)
    if self.top_p < 1.0:
      sorted_lp = -jnp.sort(-log_probs, axis=-1)
      # Mass strictly before each token in descending order: a token is kept
      # while that mass is below p, so the most likely one always is.
      probs = jnp.exp(sorted_lp)
      keep = (jnp.cumsum(probs, axis=-1) - probs) < self.top_p
      n_keep = jnp.sum(keep, axis=-1, keepdims=True)
      threshold = jnp.take_along_axis(sorted_lp, n_keep - 1, axis=-1)
      log_probs = jnp.where(log_probs < threshold, neg_inf, log_probs)
    return log_probs

  def get_next_tokens(self, log_probs: jax.Array, rng: jax.Array) -> jax.Array:
    """Draws token ids [...] from log-probabilities [..., V].

    Greedy takes the argmax. Otherwise the (top-k / top-p truncated)
    distribution is sampled by inverting its CDF with one uniform per row
    (`inverse_cdf`); a row's uniform is `jax.random.uniform(rng,
    log_probs.shape[:-1])`.
    """
    if self.greedy:
      return jnp.argmax(log_probs, axis=-1).astype(jnp.int32)
    u = jax.random.uniform(rng, log_probs.shape[:-1])
    return inverse_cdf(self.truncate(log_probs), u)


# Ids per block of the two-level CDF: 128 keeps both cumulative sums short
# (V / 128 block masses, then 128 ids) for any vocabulary.
_BLOCK = 128


def inverse_cdf(log_probs: jax.Array, u: jax.Array) -> jax.Array:
  r"""The first id whose cumulative probability exceeds `u` times the total.

  .. math::
    \mathrm{id} = \min\{i : \textstyle\sum_{j \le i} p_j > u \sum_j p_j\}

  which is a draw from p for u ~ U[0, 1). Computed in two levels, so that
  no cumulative sum runs over the vocabulary (a [B, V] `cumsum` cost more
  than the whole decode step of a small model): masses of blocks of 128
  ids, the block where the CDF crosses, then the id inside that block.
  Ids of zero mass (e.g. truncated by top-k / top-p) are never drawn.

  Args:
    log_probs: [..., V] log-probabilities, possibly unnormalised.
    u: [...] uniforms in [0, 1).

  Returns:
    int32 ids [...].
  """
  lead, v = log_probs.shape[:-1], log_probs.shape[-1]
  nb = -(-v // _BLOCK)
  probs = jnp.exp(log_probs.astype(jnp.float32).reshape(-1, v))
  probs = jnp.pad(probs, ((0, 0), (0, nb * _BLOCK - v)))  # zero mass
  blocks = probs.reshape(-1, nb, _BLOCK)
  mass = blocks.sum(axis=-1)  # [R, nb]
  cdf = jnp.cumsum(mass, axis=-1)
  target = u.reshape(-1, 1).astype(jnp.float32) * cdf[:, -1:]  # [R, 1]
  # The first block whose CDF exceeds the target has mass; float rounding
  # can push the target past the last CDF value: fall back to the last
  # block (resp. id) with mass.
  block = jnp.minimum(jnp.sum(cdf <= target, axis=-1), _last_positive(mass))
  inner = jnp.take_along_axis(blocks, block[:, None, None], axis=1)[:, 0]
  before = jnp.take_along_axis(cdf - mass, block[:, None], axis=1)
  inner_cdf = before + jnp.cumsum(inner, axis=-1)  # [R, _BLOCK]
  idx = jnp.minimum(
      jnp.sum(inner_cdf <= target, axis=-1), _last_positive(inner)
  )
  return (block * _BLOCK + idx).astype(jnp.int32).reshape(lead)


def _last_positive(x: jax.Array) -> jax.Array:
  """Index of the last positive entry of each row of x [R, N] (N - 1 if none)."""
  n = x.shape[-1]
  return n - 1 - jnp.argmax(x[:, ::-1] > 0, axis=-1)
