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
          f"Sampling.temperature: expected >= 0, got {self.temperature}")
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
    """Draws token ids [...] from log-probabilities [..., V]."""
    if self.greedy:
      return jnp.argmax(log_probs, axis=-1).astype(jnp.int32)
    return jax.random.categorical(rng, self.truncate(log_probs)).astype(
        jnp.int32)
