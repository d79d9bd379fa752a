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
"""Grouped-query attention with RoPE, optional q/k/v bias and q/k norm, and a KV cache."""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import PartitionSpec as P

from opd_jax import sharding
from opd_jax.models import layers
from opd_jax.models.config import ModelConfig


@flax.struct.dataclass
class KVCache:
  """Keys and values of every layer for incremental decoding.

  Sequences of a batch share slot indices: slot `s` of every row was written
  by the same forward call. Left-padded prompts therefore occupy the same
  slots, with `key_mask` False on the pads.

  Attributes:
    k: keys [L, B, S, K, H], S = cache length.
    v: values [L, B, S, K, H].
    key_mask: [B, S] bool, True where the slot holds a real token.
    end: int32 [], the next free slot.
    next_pos: int32 [B], the RoPE position of each row's next real token.
  """

  k: jax.Array
  v: jax.Array
  key_mask: jax.Array
  end: jax.Array
  next_pos: jax.Array

  @property
  def length(self) -> int:
    return self.k.shape[2]


def init_cache(
    config: ModelConfig, batch: int, cache_len: int, dtype=jnp.float32
) -> KVCache:
  """An empty cache for `batch` rows of up to `cache_len` tokens."""
  shape = (config.num_layers, batch, cache_len, config.num_kv_heads,
           config.head_dim)
  return KVCache(
      k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype),
      key_mask=jnp.zeros((batch, cache_len), bool),
      end=jnp.zeros((), jnp.int32), next_pos=jnp.zeros((batch,), jnp.int32),
  )


class Attention(nnx.Module):
  """Multi-head / grouped-query self-attention of one decoder layer."""

  def __init__(self, config: ModelConfig, *, stack=(), dtype, rngs: nnx.Rngs):
    d, n, k, h = (config.embed_dim, config.num_heads, config.num_kv_heads,
                  config.head_dim)
    bias = config.qkv_bias
    self.q_proj = layers.Projection(rngs, (*stack, d, n, h), (*stack, n, h),
                                    dtype, use_bias=bias)
    self.k_proj = layers.Projection(rngs, (*stack, d, k, h), (*stack, k, h),
                                    dtype, use_bias=bias)
    self.v_proj = layers.Projection(rngs, (*stack, d, k, h), (*stack, k, h),
                                    dtype, use_bias=bias)
    self.o_proj = layers.Projection(rngs, (*stack, n, h, d), None, dtype,
                                    use_bias=False)
    if config.qk_norm:
      self.q_norm = layers.RMSNorm((*stack, h), config.rms_norm_eps, dtype)
      self.k_norm = layers.RMSNorm((*stack, h), config.rms_norm_eps, dtype)
    else:
      self.q_norm = self.k_norm = None
    self.num_groups = config.num_groups
    self.scale = h**-0.5

  def __call__(
      self,
      x: jax.Array,
      cos: jax.Array,
      sin: jax.Array,
      key_mask: jax.Array,
      query_slots: jax.Array,
      kv: tuple[jax.Array, jax.Array] | None,
      start: jax.Array,
  ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """Attends x [B, T, D] to itself, or to the cache then itself.

    Args:
      x: inputs [B, T, D].
      cos, sin: RoPE tables [B, T, H].
      key_mask: [B, S] bool, valid key slots (after writing this call's keys).
      query_slots: [T] int32, the slot each query occupies (causality).
      kv: this layer's cached (k, v) [B, S, K, H], or None for no cache.
      start: int32 [], the slot of x's first token in the cache.

    Returns:
      The output [B, T, D] and the updated (k, v) (this call's keys when
      there is no cache).
    """
    q = self.q_proj(x)  # [B, T, N, H]
    k = self.k_proj(x)  # [B, T, K, H]
    v = self.v_proj(x)
    if self.q_norm is not None:
      q, k = self.q_norm(q), self.k_norm(k)
    q = layers.apply_rope(q, cos, sin)
    k = layers.apply_rope(k, cos, sin)
    if kv is not None:
      k = jax.lax.dynamic_update_slice_in_dim(kv[0], k.astype(kv[0].dtype),
                                              start, axis=1)
      v = jax.lax.dynamic_update_slice_in_dim(kv[1], v.astype(kv[1].dtype),
                                              start, axis=1)
    b, t, n, h = q.shape
    kv_heads = k.shape[2]
    q = q.reshape(b, t, kv_heads, self.num_groups, h)
    logits = jnp.einsum(
        "BTKGH,BSKH->BKGTS", q, k.astype(q.dtype),
        preferred_element_type=jnp.float32,
    ) * self.scale
    slots = jnp.arange(k.shape[1])
    allowed = key_mask[:, None, :] & (slots[None, None, :]
                                      <= query_slots[None, :, None])  # [B,T,S]
    # A finite floor, not -inf: fully masked rows (left pads) stay finite.
    logits = jnp.where(allowed[:, None, None], logits,
                       jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("BKGTS,BSKH->BTKGH", probs, v).reshape(b, t, n, h)
    out = sharding.shard(out, P(sharding.BATCH, None, "tensor", None))
    return self.o_proj(out, in_dims=2), (k, v)
