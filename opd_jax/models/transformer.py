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
"""The decoder (Llama / Qwen2 / Qwen3) in Flax NNX, with layers under one scan."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import PartitionSpec as P

from opd_jax import sharding
from opd_jax.models import layers
from opd_jax.models.attention import Attention, KVCache, init_cache
from opd_jax.models.config import (
    REMAT_AUTO_MIN_LEN,
    REMAT_POLICIES,
    ModelConfig,
)


def resolve_remat(policy: str, seq_len: int, platform: str | None = None):
  """The policy `policy` ('auto' or a name of `REMAT_POLICIES`) stands for.

  'auto' rematerialises ('full') on accelerators, where long sequences are
  the point, and on CPU from `REMAT_AUTO_MIN_LEN` tokens per row; below
  that, on CPU, the recomputation costs time that the memory does not need.
  """
  platform = platform or jax.default_backend()
  if policy != "auto":
    return policy
  if platform != "cpu" or seq_len >= REMAT_AUTO_MIN_LEN:
    return "full"
  return "none"


def check_remat(policy: str, platform: str | None = None) -> None:
  """Raises ValueError (one line) if `policy` cannot run on `platform`."""
  platform = platform or jax.default_backend()
  if policy not in REMAT_POLICIES:
    raise ValueError(f"remat: expected one of {REMAT_POLICIES}, got {policy!r}")
  if policy == "offload" and platform == "cpu":
    raise ValueError(
        "remat: 'offload' moves activations to host memory, which the cpu"
        " backend does not have apart from its own; 'auto' would choose"
        " 'full' for long sequences here ('none' below"
        f" {REMAT_AUTO_MIN_LEN} tokens)"
    )


def remat_layer(layer, policy: str, seq_len: int):
  """`layer(x, params) -> (x, None)` under `jax.checkpoint` by `policy`.

  Rematerialisation changes what the backward pass keeps, never the values:
  a layer's outputs and gradients are the same under every policy.
  """
  policy = resolve_remat(policy, seq_len)
  check_remat(policy)
  if policy == "none":
    return layer
  policies = jax.checkpoint_policies
  named = {
      "full": policies.nothing_saveable,
      "dots": policies.dots_with_no_batch_dims_saveable,
      "offload": policies.offload_dot_with_no_batch_dims(
          "device", "pinned_host"
      ),
  }
  return jax.checkpoint(layer, policy=named[policy], prevent_cse=False)


class ModelOutput(NamedTuple):
  """What `Transformer.__call__` returns.

  Attributes:
    logits: [B, T, V] float32, or None when called with `return_logits=False`.
    hidden: [B, T, D] final hidden states (after the final norm).
    cache: the updated KVCache, or None when called without one.
  """

  logits: jax.Array | None
  hidden: jax.Array
  cache: KVCache | None


class Block(nnx.Module):
  """One pre-norm decoder layer; built with a leading `stack` axis of layers."""

  def __init__(self, config: ModelConfig, *, stack=(), dtype, rngs: nnx.Rngs):
    d, eps = config.embed_dim, config.rms_norm_eps
    self.input_norm = layers.RMSNorm((*stack, d), eps, dtype)
    self.attn = Attention(config, stack=stack, dtype=dtype, rngs=rngs)
    self.post_attn_norm = layers.RMSNorm((*stack, d), eps, dtype)
    self.mlp = layers.Mlp(config, stack=stack, dtype=dtype, rngs=rngs)

  def __call__(
      self, x, cos, sin, key_mask, query_slots, kv, start, fresh=False
  ):
    h, kv = self.attn(
        self.input_norm(x), cos, sin, key_mask, query_slots, kv, start, fresh
    )
    x = x + h
    x = x + self.mlp(self.post_attn_norm(x))
    return sharding.shard(x, sharding.batch_spec(3)), kv


class Embedder(nnx.Module):
  """Token embedding table [V, D]."""

  def __init__(self, config: ModelConfig, *, dtype, rngs: nnx.Rngs):
    self.embedding = layers.normal_param(
        rngs, (config.vocab_size, config.embed_dim), dtype
    )

  def __call__(self, tokens: jax.Array) -> jax.Array:
    return jnp.take(self.embedding[...], tokens, axis=0)


class Transformer(nnx.Module):
  """A decoder-only language model: Llama, Qwen2 or Qwen3 by config flags.

  The decoder layers' parameters are stacked along a leading axis of size
  `num_layers` and run under one `jax.lax.scan`, so compile time does not
  grow with depth. Decode loops run it split into one Block per layer
  (`models.decode.split_layers`, with the single-device CPU kernel paths).
  """

  def __init__(self, config: ModelConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
    self.config = config
    self.embedder = Embedder(config, dtype=dtype, rngs=rngs)
    self.layers = Block(
        config, stack=(config.num_layers,), dtype=dtype, rngs=rngs
    )
    self.final_norm = layers.RMSNorm(
        (config.embed_dim,), config.rms_norm_eps, dtype
    )
    if config.tie_embeddings:
      self.lm_head = None
    else:
      self.lm_head = layers.Projection(
          rngs,
          (config.embed_dim, config.vocab_size),
          None,
          dtype,
          use_bias=False,
      )

  def set_execution(
      self,
      *,
      attention: str | None = None,
      attention_block_size: int | None = None,
      remat: str | None = None,
  ) -> Transformer:
    """Sets how this model runs (`ModelConfig.attention`, `.remat`), in place.

    Execution settings only: the parameters and every value the model
    computes stay the same (to float rounding). Returns the model.
    """
    changes = dict(
        attention=attention,
        attention_block_size=attention_block_size,
        remat=remat,
    )
    self.config = self.config.replace(
        **{k: v for k, v in changes.items() if v is not None}
    )
    for _, node in nnx.iter_graph(self):
      if isinstance(node, Attention):
        node.implementation = self.config.attention
        node.block_size = self.config.attention_block_size
    return self

  def init_cache(self, batch: int, cache_len: int, dtype=None) -> KVCache:
    """An empty KV cache; `dtype` defaults to the parameters' dtype."""
    dtype = dtype or self.embedder.embedding[...].dtype
    return init_cache(self.config, batch, cache_len, dtype)

  def _layer_stack(self):
    """(graphdef, stacked params) of the layers, for the scan over layers."""
    return nnx.split(self.layers)

  def _blocks(self) -> list:
    """The layers as one Block each, sliced out of the stack."""
    layer_def, stacked = nnx.split(self.layers)
    return [
        nnx.merge(layer_def, jax.tree.map(lambda a, i=i: a[i], stacked))
        for i in range(self.config.num_layers)
    ]

  def _cached_layers(
      self, x, cache, cos, sin, key_mask, query_slots, start, fresh
  ):
    """The layers unrolled over the per-layer cache buffers.

    With a cache the layers run as a Python loop, not a scan: each layer's
    buffers stay separate values that `dynamic_update_slice` writes in place
    and attention reads as they are. Under a scan, the per-layer slice of a
    stacked cache is a copy of that layer's whole cache every step, and a
    decode step's cost grew with the cache length (B = 64: 12 ms at 16
    slots, 405 ms at 1024).
    """
    ks, vs = [], []
    for i, block in enumerate(self._blocks()):
      x, (k, v) = block(
          x,
          cos,
          sin,
          key_mask,
          query_slots,
          (cache.k[i], cache.v[i]),
          start,
          fresh,
      )
      ks.append(k)
      vs.append(v)
    return x, tuple(ks), tuple(vs)

  def head_matrix(self) -> jax.Array:
    """The output projection as a [D, V] matrix (the embedding if tied)."""
    if self.lm_head is None:
      return self.embedder.embedding[...].T
    return self.lm_head.kernel[...]

  def apply_head(self, hidden: jax.Array) -> jax.Array:
    """Logits [..., V] in float32 from hidden states [..., D].

    XLA's dot with the head as it is stored: the [V, D] embedding if tied,
    else the [D, V] kernel. A decoding model (`decode.SplitTransformer`)
    overrides this with its single-device CPU paths.
    """
    lead = hidden.shape[:-1]
    h = hidden.reshape(-1, hidden.shape[-1])
    if self.lm_head is None:
      # Contract with the [V, D] matrix directly, no transpose.
      logits = jax.lax.dot_general(
          h,
          self.embedder.embedding[...].astype(h.dtype),
          (((1,), (1,)), ((), ())),
          preferred_element_type=jnp.float32,
      )
    else:
      logits = jnp.dot(
          h,
          self.lm_head.kernel[...].astype(h.dtype),
          preferred_element_type=jnp.float32,
      )
    return logits.reshape(*lead, -1)

  def __call__(
      self,
      tokens: jax.Array,
      *,
      positions: jax.Array | None = None,
      attention_mask: jax.Array | None = None,
      cache: KVCache | None = None,
      prefill: bool = False,
      return_logits: bool = True,
  ) -> ModelOutput:
    """Runs the decoder on tokens [B, T].

    Args:
      tokens: int32 [B, T].
      positions: int32 [B, T] RoPE positions. Default: count of real tokens
        before each one (so left padding does not shift positions), offset by
        the cache's `next_pos`.
      attention_mask: bool [B, T], False on padding. Default: all True.
      cache: a KVCache to append to (prefill or decode); None for a plain
        forward over `tokens`.
      prefill: the cache is empty (a fresh `init_cache`): the tokens attend
        to themselves only, through the full-sequence attention
        (`sequence_attention`), which never forms [T, S] scores.
      return_logits: False skips the vocabulary head (logits=None), for
        callers that apply the head to selected positions only.

    Returns:
      ModelOutput(logits [B, T, V] float32 or None, hidden [B, T, D], cache).
    """
    b, t = tokens.shape
    if attention_mask is None:
      attention_mask = jnp.ones((b, t), bool)
    attention_mask = attention_mask.astype(bool)
    base = jnp.zeros((b,), jnp.int32) if cache is None else cache.next_pos
    if positions is None:
      counts = jnp.cumsum(attention_mask.astype(jnp.int32), axis=1)
      positions = jnp.maximum(base[:, None] + counts - 1, 0)
    cos, sin = layers.rope_cos_sin(positions, layers.rope_inv_freq(self.config))

    if cache is None:
      start = jnp.zeros((), jnp.int32)
      key_mask = attention_mask
    else:
      if t > cache.length:
        raise ValueError(
            f"tokens has {t} positions but the KV cache holds only"
            f" {cache.length}"
        )
      start = cache.end
      key_mask = jax.lax.dynamic_update_slice_in_dim(
          cache.key_mask, attention_mask, start, axis=1
      )
    query_slots = start + jnp.arange(t, dtype=jnp.int32)

    x = self.embedder(tokens)
    x = sharding.shard(x, sharding.batch_spec(3))
    new_cache = None
    if cache is None:
      graphdef, stacked = self._layer_stack()

      def layer(x, params):
        block = nnx.merge(graphdef, params)
        x, _ = block(x, cos, sin, key_mask, query_slots, None, start)
        return x, None

      layer = remat_layer(layer, self.config.remat, t)
      x, _ = jax.lax.scan(layer, x, stacked)
    else:
      x, ks, vs = self._cached_layers(
          x, cache, cos, sin, key_mask, query_slots, start, prefill
      )
      new_cache = KVCache(
          k=ks,
          v=vs,
          key_mask=key_mask,
          end=start + t,
          next_pos=base + attention_mask.sum(axis=1, dtype=jnp.int32),
      )
    hidden = self.final_norm(x)

    logits = None
    if return_logits:
      logits = sharding.shard(
          self.apply_head(hidden), P(sharding.BATCH, None, "tensor")
      )
    return ModelOutput(logits=logits, hidden=hidden, cache=new_cache)
