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
"""The decoder (Llama / Qwen2 / Qwen3 / Qwen3-MoE / Qwen3.5) in Flax NNX, layers under scans."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import PartitionSpec as P

from opd_jax import sharding
from opd_jax.models import layers
from opd_jax.models import linear_attention
from opd_jax.models import moe as moe_lib
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
    aux_loss: [] float32, the router's load-balancing loss over the real
      tokens of this call (`moe.balance_loss`, transformers' `aux_loss`);
      None for a model without MoE layers.
    router_stats: the sums `aux_loss` is made of (`moe.RouterStats`), for
      callers that split a batch and combine the parts exactly (sums add;
      losses of parts do not average to the loss of the whole).
  """

  logits: jax.Array | None
  hidden: jax.Array
  cache: KVCache | None
  aux_loss: jax.Array | None = None
  router_stats: moe_lib.RouterStats | None = None


def layer_runs(config: ModelConfig) -> list[tuple[str, int, int]]:
  """The layers as runs of one kind: (kind, start, stop) in its stack.

  Kinds are `ModelConfig.layer_kinds` ('moe', 'dense', 'linear'). MoE
  layers live in the stack `layers`, dense ones in `dense_layers` when a
  model has both kinds (else in `layers`), Gated DeltaNet layers in
  `linear_layers`; run j covers layers start..stop-1 of its stack, and the
  runs in order are the model's layers in order. One run (one scan) unless
  the config interleaves kinds.
  """
  runs: list[tuple[str, int, int]] = []
  seen = {"moe": 0, "dense": 0, "linear": 0}
  for kind in config.layer_kinds():
    if runs and runs[-1][0] == kind:
      _, start, stop = runs[-1]
      runs[-1] = (kind, start, stop + 1)
    else:
      runs.append((kind, seen[kind], seen[kind] + 1))
    seen[kind] += 1
  return runs


def _stack_name(config: ModelConfig, kind: str) -> str:
  """The stack that holds the layers of `kind`."""
  if kind == "linear":
    return "linear_layers"
  if kind == "dense" and "moe" in config.layer_kinds():
    return "dense_layers"
  return "layers"


def stack_layers(config: ModelConfig) -> dict[str, tuple[int, ...]]:
  """Stack name -> the model layer index of each of its entries."""
  stacks: dict[str, list[int]] = {}
  for i, kind in enumerate(config.layer_kinds()):
    stacks.setdefault(_stack_name(config, kind), []).append(i)
  order = ("layers", "dense_layers", "linear_layers")
  return {name: tuple(stacks[name]) for name in order if name in stacks}


class Block(nnx.Module):
  """One pre-norm decoder layer; built with a leading `stack` axis of layers.

  Its token mixer is self-attention `attn`, or for `kind='linear'` a Gated
  DeltaNet `linear_attn` (`linear_attention.GatedDeltaNet`); its
  feed-forward part is a SwiGLU `mlp`, or for `kind='moe'` a routed mixture
  of experts `moe` (`moe.MoeMlp`).
  """

  def __init__(
      self,
      config: ModelConfig,
      *,
      kind: str = "dense",
      stack=(),
      dtype,
      rngs: nnx.Rngs,
  ):
    d, eps = config.embed_dim, config.rms_norm_eps
    zc = config.zero_centred_norms
    self.input_norm = layers.RMSNorm((*stack, d), eps, dtype, zero_centred=zc)
    if kind == "linear":
      self.linear_attn = linear_attention.GatedDeltaNet(
          config, stack=stack, dtype=dtype, rngs=rngs
      )
    else:
      self.attn = Attention(config, stack=stack, dtype=dtype, rngs=rngs)
    self.post_attn_norm = layers.RMSNorm(
        (*stack, d), eps, dtype, zero_centred=zc
    )
    if kind == "moe":
      self.moe = moe_lib.MoeMlp(config, stack=stack, dtype=dtype, rngs=rngs)
    else:
      self.mlp = layers.Mlp(config, stack=stack, dtype=dtype, rngs=rngs)

  def __call__(
      self,
      x,
      cos,
      sin,
      key_mask,
      query_slots,
      kv,
      start,
      fresh=False,
      where=None,
      *,
      execution: ModelConfig,
  ):
    """-> (x, kv, RouterStats over the tokens `where` [B, T], or None).

    `execution` is the model's config, read for how the layer runs (the
    attention backend, the delta rule's chunk) and nothing else.
    """
    if hasattr(self, "linear_attn"):
      h = self.input_norm(x)
      chunk = execution.delta_chunk_size
      if kv is None:
        h = self.linear_attn(h, where, chunk_size=chunk)
      else:  # kv is (conv window, recurrent state)
        h, kv = self.linear_attn.cached(h, where, kv, chunk_size=chunk)
    else:
      h, kv = self.attn(
          self.input_norm(x),
          cos,
          sin,
          key_mask,
          query_slots,
          kv,
          start,
          fresh,
          execution=execution,
      )
    x = x + h
    stats = None
    if hasattr(self, "moe"):
      h, stats = self.moe(self.post_attn_norm(x), where)
    else:
      h = self.mlp(self.post_attn_norm(x))
    x = x + h
    return sharding.shard(x, sharding.batch_spec(3)), kv, stats


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
  grow with depth. A Qwen3-MoE whose config interleaves dense layers keeps
  its MoE layers in `layers` and its dense ones in `dense_layers`, one scan
  per run of one kind (`layer_runs`); otherwise `dense_layers` is None. Decode loops run it split into one Block per layer
  (`models.decode.split_layers`, with the single-device CPU kernel paths).
  """

  def __init__(self, config: ModelConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
    self.config = config
    self.embedder = Embedder(config, dtype=dtype, rngs=rngs)
    stacks = stack_layers(config)
    kinds = config.layer_kinds()
    for name in ("layers", "dense_layers", "linear_layers"):
      block = None
      if name in stacks:
        block = Block(
            config,
            kind=kinds[stacks[name][0]],
            stack=(len(stacks[name]),),
            dtype=dtype,
            rngs=rngs,
        )
      setattr(self, name, block)
    self.final_norm = layers.RMSNorm(
        (config.embed_dim,),
        config.rms_norm_eps,
        dtype,
        zero_centred=config.zero_centred_norms,
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
      delta_chunk_size: int | None = None,
  ) -> Transformer:
    """Sets how this model runs (`ModelConfig.attention`, `.remat`), in place.

    Execution settings only: the parameters and every value the model
    computes stay the same (to float rounding). They live in `self.config`
    alone; the layers read them from there on each call. Returns the model.
    """
    changes = dict(
        attention=attention,
        attention_block_size=attention_block_size,
        remat=remat,
        delta_chunk_size=delta_chunk_size,
    )
    self.config = self.config.replace(
        **{k: v for k, v in changes.items() if v is not None}
    )
    return self

  def init_cache(self, batch: int, cache_len: int, dtype=None) -> KVCache:
    """An empty KV cache; `dtype` defaults to the parameters' dtype."""
    dtype = dtype or self.embedder.embedding[...].dtype
    return init_cache(self.config, batch, cache_len, dtype)

  def _layer_runs(self) -> list:
    """[(graphdef, stacked params)] of each run of layers (`layer_runs`),
    in order, for the scans over layers."""
    out = []
    for kind, start, stop in layer_runs(self.config):
      stack = getattr(self, _stack_name(self.config, kind))
      graphdef, stacked = nnx.split(stack)
      n = jax.tree.leaves(stacked)[0].shape[0]
      if (start, stop) != (0, n):
        stacked = jax.tree.map(lambda a, i=start, j=stop: a[i:j], stacked)
      out.append((graphdef, stacked))
    return out

  def _blocks(self) -> list:
    """The layers as one Block each, in order, sliced out of the stacks."""
    blocks = []
    for kind, start, stop in layer_runs(self.config):
      stack = getattr(self, _stack_name(self.config, kind))
      layer_def, stacked = nnx.split(stack)
      blocks += [
          nnx.merge(layer_def, jax.tree.map(lambda a, i=i: a[i], stacked))
          for i in range(start, stop)
      ]
    return blocks

  def _cached_layers(
      self, x, cache, cos, sin, key_mask, query_slots, start, fresh, where
  ):
    """The layers unrolled over the per-layer cache buffers.

    With a cache the layers run as a Python loop, not a scan: each layer's
    buffers stay separate values that `dynamic_update_slice` writes in place
    and attention reads as they are. Under a scan, the per-layer slice of a
    stacked cache is a copy of that layer's whole cache every step, and a
    decode step's cost grew with the cache length (B = 64: 12 ms at 16
    slots, 405 ms at 1024).
    """
    ks, vs, convs, states, stats = [], [], [], [], None
    for block in self._blocks():
      linear = hasattr(block, "linear_attn")
      if linear:  # a Gated DeltaNet layer: its conv window and state
        kv = (cache.conv[len(convs)], cache.state[len(states)])
      else:
        kv = (cache.k[len(ks)], cache.v[len(vs)])
      x, (a, b), s = block(
          x,
          cos,
          sin,
          key_mask,
          query_slots,
          kv,
          start,
          fresh,
          where,
          execution=self.config,
      )
      (convs if linear else ks).append(a)
      (states if linear else vs).append(b)
      if s is not None:
        stats = s if stats is None else stats + s
    return x, (tuple(ks), tuple(vs), tuple(convs), tuple(states)), stats

  def _scanned_layers(self, x, cos, sin, key_mask, query_slots, start, where):
    """The layers without a cache: one `lax.scan` per run of layers."""
    stats = None
    for graphdef, stacked in self._layer_runs():

      def layer(x, params, graphdef=graphdef):
        block = nnx.merge(graphdef, params)
        x, _, s = block(
            x,
            cos,
            sin,
            key_mask,
            query_slots,
            None,
            start,
            where=where,
            execution=self.config,
        )
        return x, s

      layer = remat_layer(layer, self.config.remat, x.shape[1])
      x, s = jax.lax.scan(layer, x, stacked)
      if s is not None:
        s = jax.tree.map(lambda a: jnp.sum(a, axis=0), s)
        stats = s if stats is None else stats + s
    return x, stats

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
      ModelOutput(logits [B, T, V] float32 or None, hidden [B, T, D], cache,
      aux_loss [] float32 for a MoE model, else None).
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
      x, stats = self._scanned_layers(
          x, cos, sin, key_mask, query_slots, start, attention_mask
      )
    else:
      x, (ks, vs, convs, states), stats = self._cached_layers(
          x,
          cache,
          cos,
          sin,
          key_mask,
          query_slots,
          start,
          prefill,
          attention_mask,
      )
      new_cache = KVCache(
          k=ks,
          v=vs,
          key_mask=key_mask,
          end=start + t,
          next_pos=base + attention_mask.sum(axis=1, dtype=jnp.int32),
          conv=convs,
          state=states,
      )
    hidden = self.final_norm(x)

    logits = None
    if return_logits:
      logits = sharding.shard(
          self.apply_head(hidden), P(sharding.BATCH, None, "tensor")
      )
    aux_loss = None if stats is None else moe_lib.balance_loss(stats)
    return ModelOutput(
        logits=logits,
        hidden=hidden,
        cache=new_cache,
        aux_loss=aux_loss,
        router_stats=stats,
    )
