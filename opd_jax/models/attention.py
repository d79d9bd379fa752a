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

import functools

import flax
import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import PartitionSpec as P

from opd_jax import kernels
from opd_jax import sharding
from opd_jax.models import layers
from opd_jax.models import sequence_attention
from opd_jax.models.config import ModelConfig


@flax.struct.dataclass
class KVCache:
  """Keys and values of every layer for incremental decoding.

  Sequences of a batch share slot indices: slot `s` of every row was written
  by the same forward call. Left-padded prompts therefore occupy the same
  slots, with `key_mask` False on the pads.

  One buffer per layer (not one stacked [L, ...] array): a decode step
  writes one slot of each buffer in place and its attention reads the buffer
  directly, where slicing a layer out of a stacked array inside the loop
  over layers copies the whole cache every step. Keys are stored with the
  head dimension before the slots, so that q.k^T is a plain [G, H] x [H, S]
  matmul per (row, kv head) with no transpose of the cache.

  Attributes:
    k: tuple of keys [B, K, H, S] per attention layer, S = cache length.
    v: tuple of values [B, K, S, H] per attention layer.
    key_mask: [B, S] bool, True where the slot holds a real token.
    end: int32 [], the next free slot.
    next_pos: int32 [B], the RoPE position of each row's next real token.
    conv: per Gated DeltaNet layer (hybrid models; () otherwise), its conv
      window [B, W - 1, C]: the last W - 1 inputs of its causal conv.
    state: per Gated DeltaNet layer, its recurrent state [B, Hv, K, V]
      (float32, or float64 in a float64 model).
  """

  k: tuple[jax.Array, ...]
  v: tuple[jax.Array, ...]
  key_mask: jax.Array
  end: jax.Array
  next_pos: jax.Array
  conv: tuple[jax.Array, ...] = ()
  state: tuple[jax.Array, ...] = ()

  @property
  def length(self) -> int:
    return self.key_mask.shape[1]


def init_cache(
    config: ModelConfig, batch: int, cache_len: int, dtype=jnp.float32
) -> KVCache:
  """An empty cache for `batch` rows of up to `cache_len` tokens (with an
  empty conv window and a zero state per Gated DeltaNet layer)."""
  k, h = config.num_kv_heads, config.head_dim
  kinds = config.layer_kinds()
  layers_ = range(sum(kind != "linear" for kind in kinds))
  linear = range(kinds.count("linear"))
  hv, kd = config.linear_num_value_heads, config.linear_key_head_dim
  vd = config.linear_value_head_dim
  channels = 2 * config.linear_num_key_heads * kd + hv * vd
  window = max(config.linear_conv_kernel - 1, 0)
  state_dtype = jnp.promote_types(dtype, jnp.float32)
  return _shard_cache(
      KVCache(
          k=tuple(jnp.zeros((batch, k, h, cache_len), dtype) for _ in layers_),
          v=tuple(jnp.zeros((batch, k, cache_len, h), dtype) for _ in layers_),
          key_mask=jnp.zeros((batch, cache_len), bool),
          end=jnp.zeros((), jnp.int32),
          next_pos=jnp.zeros((batch,), jnp.int32),
          conv=tuple(
              jnp.zeros((batch, window, channels), dtype) for _ in linear
          ),
          state=tuple(
              jnp.zeros((batch, hv, kd, vd), state_dtype) for _ in linear
          ),
      )
  )


def _shard_cache(cache: KVCache) -> KVCache:
  """The cache split like the activations: rows over the batch axes, kv
  heads over 'tensor' (under a mesh; a no-op without one). Without the
  constraint a fresh buffer is replicated, and every device would hold
  the whole batch's cache."""
  kv = P(sharding.BATCH, "tensor", None, None)
  return cache.replace(
      k=tuple(sharding.shard(x, kv) for x in cache.k),
      v=tuple(sharding.shard(x, kv) for x in cache.v),
      conv=tuple(sharding.shard(x, sharding.batch_spec(3)) for x in cache.conv),
      state=tuple(sharding.shard(x, kv) for x in cache.state),
      key_mask=sharding.shard(cache.key_mask, sharding.batch_spec(2)),
      next_pos=sharding.shard(cache.next_pos, sharding.batch_spec(1)),
  )


def extend_cache(cache: KVCache, cache_len: int) -> KVCache:
  """The same cache with room for `cache_len` slots (new slots empty).

  Copies every buffer once; the sampler grows its cache in a few steps so
  that each decode step attends over a buffer not much longer than the
  filled part.
  """
  extra = cache_len - cache.length
  if extra < 0:
    raise ValueError(
        f"extend_cache: cache_len {cache_len} is shorter than the cache's"
        f" {cache.length} slots"
    )
  pad = lambda x, axis: jnp.pad(
      x, [(0, extra if a == axis else 0) for a in range(x.ndim)]
  )
  return _shard_cache(
      cache.replace(
          k=tuple(pad(k, 3) for k in cache.k),
          v=tuple(pad(v, 2) for v in cache.v),
          key_mask=pad(cache.key_mask, 1),
      )
  )


# Up to this many query rows per kv head (T * G), cached attention computes
# q.k^T with `_few_rows_qk`.
_UNROLLED_QK_ROWS = 8


def _few_rows_qk(q: jax.Array, k_cache: jax.Array) -> jax.Array:
  """q.k^T [B, K, M, S] float32 of q [B, K, M, H] and keys [B, K, H, S].

  logits[..., m, s] = sum_h q[..., m, h] k[..., h, s], written as H
  broadcast multiply-adds of rows of the cache. XLA fuses them into one
  elementwise loop over the output, vectorised along the slots and reading
  the cache once. For a decode step (M = T * G, a few rows) XLA:CPU's
  batched dot of [M, H] x [H, S] is 1.5x slower (BENCHMARKS.md, "Decode
  products as fused loops").
  """
  q = q.astype(jnp.float32)
  k = k_cache.astype(jnp.float32)
  terms = [
      q[:, :, :, h, None] * k[:, :, None, h, :] for h in range(q.shape[-1])
  ]
  while len(terms) > 1:  # a balanced tree of adds: a shallow graph to compile
    terms = [
        terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i]
        for i in range(0, len(terms), 2)
    ]
  return terms[0]


class Attention(nnx.Module):
  """Multi-head / grouped-query self-attention of one decoder layer."""

  def __init__(self, config: ModelConfig, *, stack=(), dtype, rngs: nnx.Rngs):
    d, n, k, h = (
        config.embed_dim,
        config.num_heads,
        config.num_kv_heads,
        config.head_dim,
    )
    bias = config.qkv_bias
    # With an output gate (Qwen3.5) q_proj yields per head the query then
    # the gate, [.., N, 2H], HF's layout.
    self.gated = config.attn_output_gate
    qh = 2 * h if self.gated else h
    self.q_proj = layers.Projection(
        rngs, (*stack, d, n, qh), (*stack, n, qh), dtype, use_bias=bias
    )
    self.k_proj = layers.Projection(
        rngs, (*stack, d, k, h), (*stack, k, h), dtype, use_bias=bias
    )
    self.v_proj = layers.Projection(
        rngs, (*stack, d, k, h), (*stack, k, h), dtype, use_bias=bias
    )
    self.o_proj = layers.Projection(
        rngs, (*stack, n, h, d), None, dtype, use_bias=False, in_dims=2
    )
    if config.qk_norm:
      zc = config.zero_centred_norms
      self.q_norm = layers.RMSNorm(
          (*stack, h), config.rms_norm_eps, dtype, zero_centred=zc
      )
      self.k_norm = layers.RMSNorm(
          (*stack, h), config.rms_norm_eps, dtype, zero_centred=zc
      )
    else:
      self.q_norm = self.k_norm = None
    self.num_groups = config.num_groups
    self.scale = h**-0.5
    # Set by `use_decode_kernel` (models.decode.split_layers, on CPU).
    self.decode_kernel = False

  def use_decode_kernel(self) -> None:
    """Runs one-token cached calls with `kernels.decode_attention`.

    For decoding loops on CPU (`models.decode.split_layers`): the C++ kernel
    writes the step's key and value into the cache in place and reads only
    the filled slots, where XLA's loops read the whole buffer (BENCHMARKS.md).
    Derivatives, if any, are those of its twin `cached_attention`.
    """
    self.decode_kernel = True

  def __call__(
      self,
      x: jax.Array,
      cos: jax.Array,
      sin: jax.Array,
      key_mask: jax.Array,
      query_slots: jax.Array,
      kv: tuple[jax.Array, jax.Array] | None,
      start: jax.Array,
      fresh: bool = False,
      *,
      execution: ModelConfig,
  ) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
    """Attends x [B, T, D] to itself, or to the cache then itself.

    Args:
      x: inputs [B, T, D].
      cos, sin: RoPE tables [B, T, H].
      key_mask: [B, S] bool, valid key slots (after writing this call's keys).
      query_slots: [T] int32, the slot each query occupies (causality).
      kv: this layer's cached keys [B, K, H, S] and values [B, K, S, H]
        (KVCache's layout), or None for no cache.
      start: int32 [], the slot of x's first token in the cache.
      fresh: the cache holds nothing before x (a prefill: start is 0), so
        x attends to itself only.
      execution: the model's config, read for how attention runs only
        (`attention`, `attention_block_size`): the one place those are
        kept, so `Transformer.set_execution` changes them for every layer.

    Returns:
      The output [B, T, D] and the updated (k, v) cache buffers (None when
      there is no cache).
    """
    q = self.q_proj(x)  # [B, T, N, H] ([B, T, N, 2H] with the gate)
    gate = None
    if self.gated:
      q, gate = jnp.split(q, 2, axis=-1)
    k = self.k_proj(x)  # [B, T, K, H]
    v = self.v_proj(x)
    if self.q_norm is not None:
      q, k = self.q_norm(q), self.k_norm(k)
    q = layers.apply_rope(q, cos, sin)
    k = layers.apply_rope(k, cos, sin)
    b, t, n, h = q.shape
    kv_heads = k.shape[2]
    q = q.reshape(b, t, kv_heads, self.num_groups, h)
    if kv is not None:
      out, kv = self._cached(
          q, k, v, key_mask, query_slots, kv, start, fresh, execution
      )
    else:
      out, kv = self._sequence(q, k, v, key_mask, execution), None
    if gate is not None:
      out = out * jax.nn.sigmoid(gate.astype(jnp.float32)).astype(out.dtype)
    return self.o_proj(out), kv

  def _sequence(self, q, k, v, key_mask, execution: ModelConfig):
    """Causal attention of q [B, T, K, G, H] to k, v [B, T, K, H] of the
    same positions (`sequence_attention`, by `execution`'s backend)."""
    b, t, kh, g, h = q.shape
    out = sequence_attention.sequence_attention(
        q,
        k,
        v,
        key_mask,
        scale=self.scale,
        implementation=execution.attention,
        block_size=execution.attention_block_size,
    ).reshape(b, t, kh * g, h)
    return sharding.shard(out, P(sharding.BATCH, None, "tensor", None))

  def _cached(
      self, q, k, v, key_mask, query_slots, kv, start, fresh, execution
  ):
    """Writes k, v [B, T, K, H] into the cache, attends q [B, T, K, G, H];
    -> (out [B, T, N, H] before o_proj, (k_cache, v_cache))."""
    b, t, kh, g, h = q.shape
    if fresh:
      # A prefill into an empty cache: the new tokens attend to themselves
      # only, through the full-sequence path (no [T, S] scores).
      dt = kv[0].dtype
      k_cache = jax.lax.dynamic_update_slice(
          kv[0], k.transpose(0, 2, 3, 1).astype(dt), (0, 0, 0, 0)
      )
      v_cache = jax.lax.dynamic_update_slice(
          kv[1], v.transpose(0, 2, 1, 3).astype(dt), (0, 0, 0, 0)
      )
      # Operands in the cache's dtype, as `cached_attention` reads them.
      out = self._sequence(
          q.astype(dt), k.astype(dt), v.astype(dt), key_mask[:, :t], execution
      ).astype(q.dtype)
      return out, (k_cache, v_cache)
    if self.decode_kernel and t == 1 and kv[0].dtype in kernels.KERNEL_DTYPES:
      out, k_cache, v_cache = _kernel_step(
          q, k, v, kv[0], kv[1], key_mask, start, self.scale
      )
    else:
      out, k_cache, v_cache = cached_attention(
          q, k, v, key_mask, query_slots, kv[0], kv[1], start, self.scale
      )
    out = sharding.shard(
        out.reshape(b, t, kh * g, h), P(sharding.BATCH, None, "tensor", None)
    )
    return out, (k_cache, v_cache)


def cached_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    key_mask: jax.Array,
    query_slots: jax.Array,
    k_cache: jax.Array,
    v_cache: jax.Array,
    start: jax.Array,
    scale: float,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Attention of T new tokens to a KV cache, after writing their keys.

  Args:
    q: queries [B, T, K, G, H] (G query heads per kv head).
    k, v: the new tokens' keys and values [B, T, K, H].
    key_mask: [B, S] bool, valid slots including the new ones.
    query_slots: [T] int32, each query's slot (causality: s <= slot).
    k_cache: [B, K, H, S]; v_cache: [B, K, S, H] (`KVCache`'s layout).
    start: int32 [], the slot of the first new token.
    scale: the logits' scale.

  Returns:
    (out [B, T, K, G, H] in q's dtype, k_cache, v_cache) with the new
    tokens written in place at slots start .. start + T - 1.
  """
  b, t, kh, g, h = q.shape
  dt = k_cache.dtype
  # In-place writes of this call's slots; attention then reads the whole
  # buffer (empty and future slots are masked).
  k_cache = jax.lax.dynamic_update_slice(
      k_cache, k.transpose(0, 2, 3, 1).astype(dt), (0, 0, 0, start)
  )
  v_cache = jax.lax.dynamic_update_slice(
      v_cache, v.transpose(0, 2, 1, 3).astype(dt), (0, 0, start, 0)
  )
  # Queries of one kv head as the rows of one matmul, [B, K, T*G, H], so
  # that both products are plain batched [M, H] x [H, S] and [M, S] x
  # [S, H] matmuls over the cache as stored.
  rows = q.transpose(0, 2, 1, 3, 4).reshape(b, kh, t * g, h)
  batch = ((0, 1), (0, 1))
  if t * g <= _UNROLLED_QK_ROWS:
    logits = _few_rows_qk(rows, k_cache) * scale
  else:
    logits = (
        jax.lax.dot_general(
            rows.astype(dt),
            k_cache,
            (((3,), (2,)), batch),
            preferred_element_type=jnp.float32,
        )
        * scale
    )  # [B, K, T*G, S]
  slots = jnp.arange(key_mask.shape[1])
  allowed = key_mask[:, None, :] & (
      slots[None, None, :] <= query_slots[None, :, None]
  )  # [B,T,S]
  allowed = jnp.repeat(allowed, g, axis=1)[:, None]  # [B, 1, T*G, S]
  logits = jnp.where(allowed, logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1).astype(dt)
  out = jax.lax.dot_general(
      probs,
      v_cache,
      (((3,), (2,)), batch),
      preferred_element_type=jnp.float32,
  )  # [B, K, T*G, H]
  out = out.astype(q.dtype).reshape(b, kh, t, g, h).transpose(0, 2, 1, 3, 4)
  return out, k_cache, v_cache


@functools.partial(jax.custom_jvp, nondiff_argnums=(7,))
def _kernel_step(q, k, v, k_cache, v_cache, key_mask, start, scale):
  """`cached_attention` of one token (T = 1) by `kernels.decode_attention`."""
  dt = k_cache.dtype
  out, k_cache, v_cache = kernels.decode_attention(
      q[:, 0],
      k[:, 0].astype(dt),
      v[:, 0].astype(dt),
      k_cache,
      v_cache,
      key_mask,
      start,
      scale=scale,
  )
  return out[:, None].astype(q.dtype), k_cache, v_cache


@_kernel_step.defjvp
def _kernel_step_jvp(scale, primals, tangents):
  """The kernel's values; the tangents of its JAX twin (the custom call has
  no derivative; the two agree to float32 rounding)."""
  q, k, v, k_cache, v_cache, key_mask, start = primals
  twin = lambda q, k, v, k_cache, v_cache: cached_attention(
      q, k, v, key_mask, start[None], k_cache, v_cache, start, scale
  )
  _, tangents_out = jax.jvp(twin, primals[:5], tangents[:5])
  return _kernel_step(*primals, scale), tangents_out
