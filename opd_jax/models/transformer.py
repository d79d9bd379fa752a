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

from opd_jax import kernels
from opd_jax import sharding
from opd_jax.models import layers
from opd_jax.models.attention import Attention, KVCache, init_cache
from opd_jax.models.config import (
    REMAT_AUTO_MIN_LEN,
    REMAT_POLICIES,
    ModelConfig,
)

# Up to this many rows, a decoding model (`split_layers`) computes its
# logits with `decode_head`; up to _KERNEL_HEAD_ROWS rows of a float32 or
# bfloat16 head on CPU, with the C++ `kernels.rows_dot` (1.14x per rollout
# at B = 4 and 8; from 16 rows on it is slower than `decode_head`,
# BENCHMARKS.md).
_DECODE_HEAD_ROWS = 64
_KERNEL_HEAD_ROWS = 8


def decode_head(h: jax.Array, w: jax.Array) -> jax.Array:
  """Logits [M, V] float32 of a few hidden rows h [M, D] against w [V, D].

  logits[m, v] = sum_d h[m, d] w[v, d], written as a multiply-and-reduce
  over d that XLA fuses into one pass over w (each [D] row read once, dotted
  with all M rows), rather than as a `dot`. At decode sizes (M <= 64,
  V = 32000, D = 256) XLA:CPU's dot took 1.2-1.7x as long as this pass
  (measured, not explained; BENCHMARKS.md, "Decode products as fused
  loops"). The barrier keeps the producer of h (the final norm) out of the
  fusion, which would otherwise recompute it for every row of w.
  """
  h = jax.lax.optimization_barrier(h.astype(jnp.float32))
  return jnp.sum(w.astype(jnp.float32)[:, None, :] * h[None], axis=-1).T


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
  grow with depth.
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

  def split_layers(self) -> Transformer:
    """This model with its layer stack split into one Block per layer.

    For decoding loops: with the stack, every cached call slices each
    layer's weights out of it, and inside a `while_loop` those slices are
    copies made every step. Splitting once before the loop makes them
    loop-invariant buffers. Arrays are shared, not copied, outside jit.

    On CPU (`kernels.cpu_kernels_enabled()`), outside a mesh of several
    devices, each float32 or bfloat16
    projection also keeps its kernel as [out, in] rows for
    `kernels.rows_dot`, which runs a decode step's few-row products about 2x
    faster than XLA:CPU's dot (the copies double the trunk's weights while
    the split model lives), one-token attention runs
    `kernels.decode_attention`, a head of up to 64 rows is `decode_head`'s
    fused loop and an untied head is kept as [V, D] rows. Elsewhere
    (accelerators, a mesh of several devices) decoding runs XLA's dots.
    """
    if isinstance(self.layers, nnx.List):
      return self
    graphdef, state = nnx.split(self)
    split = nnx.merge(graphdef, state)
    layer_def, stacked = nnx.split(self.layers)
    split.layers = nnx.List([
        nnx.merge(layer_def, jax.tree.map(lambda a, i=i: a[i], stacked))
        for i in range(self.config.num_layers)
    ])
    # The C++ kernels and the fused decode head are single-device CPU
    # paths: elsewhere XLA's dots are the fast ones, and under a mesh of
    # several devices the partitioner would gather their operands (the
    # whole batch's KV cache every step; for the fused head, the [V, M, D]
    # product: 9.3 GiB per device at the TIP recipe's 1.7B student).
    split.cpu_decode = (
        jax.default_backend() == "cpu" and sharding.single_device()
    )
    if split.cpu_decode and kernels.cpu_kernels_enabled():
      for _, node in nnx.iter_graph(split.layers):
        if (
            isinstance(node, layers.Projection)
            and node.kernel[...].dtype in kernels.KERNEL_DTYPES
        ):
          node.attach_rows()
        if isinstance(node, Attention):
          node.use_decode_kernel()
    if split.cpu_decode and split.lm_head is not None:
      # Decoding multiplies a few rows by the whole head every step. XLA:CPU
      # runs that product about 1.4x faster with the head as [V, D] (each
      # logit one contiguous row) than as the kernel's [D, V] (measured in
      # BENCHMARKS.md); the transpose is made once per loop, not per step.
      split.head_rows = nnx.Cache(split.lm_head.kernel[...].T)
    return split

  def _layer_stack(self):
    """(graphdef, stacked params) of the layers, for the scan over layers."""
    if not isinstance(self.layers, nnx.List):
      return nnx.split(self.layers)
    splits = [nnx.split(block) for block in self.layers]
    return splits[0][0], jax.tree.map(
        lambda *xs: jnp.stack(xs), *[s for _, s in splits]
    )

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
    if isinstance(self.layers, nnx.List):
      blocks = list(self.layers)
    else:
      layer_def, stacked = nnx.split(self.layers)
      blocks = [
          nnx.merge(layer_def, jax.tree.map(lambda a, i=i: a[i], stacked))
          for i in range(self.config.num_layers)
      ]
    ks, vs = [], []
    for i, block in enumerate(blocks):
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
    """Logits [..., V] in float32 from hidden states [..., D]."""
    lead = hidden.shape[:-1]
    h = hidden.reshape(-1, hidden.shape[-1])
    rows = getattr(self, "head_rows", None)  # [V, D], see split_layers
    if self.lm_head is None or rows is not None:
      # Contract with a [V, D] matrix directly, no transpose.
      if rows is None:
        w = self.embedder.embedding[...]
      else:
        w = layers.rows_of(rows[...], self.lm_head.kernel[...])
      # split_layers was called, on one CPU device.
      decoding = getattr(self, "cpu_decode", False)
      if (
          decoding
          and h.shape[0] <= _KERNEL_HEAD_ROWS
          and kernels.rows_dot_uses_kernel(h.dtype, w.dtype)
      ):
        logits = kernels.rows_dot(h, w)
      elif decoding and h.shape[0] <= _DECODE_HEAD_ROWS:
        logits = decode_head(h, w)
      else:
        logits = jax.lax.dot_general(
            h,
            w.astype(h.dtype),
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
