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
"""The Gated DeltaNet token mixer of Qwen3.5's linear attention layers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from opd_jax.models import gated_delta
from opd_jax.models import layers
from opd_jax.models.config import ModelConfig


def causal_conv(x: jax.Array, weight: jax.Array) -> jax.Array:
  """Causal depthwise convolution over time, then SiLU.

  .. math:: y_{t,c} = \\mathrm{silu}(\\sum_{j=0}^{W-1} w_{j,c}\\,
     x_{t-W+1+j,c}), \\quad x_{s,c} = 0 \\text{ for } s < 0.

  Args:
    x: [B, T, C] (the zeros before it stand for an empty window).
    weight: taps [W, C], the last tap on the current position.

  Returns:
    [B, T, C] in x's dtype (products and sums in float32 or wider).
  """
  w_len = weight.shape[0]
  dt = jnp.promote_types(x.dtype, jnp.float32)
  padded = jnp.pad(x.astype(dt), [(0, 0), (w_len - 1, 0), (0, 0)])
  t = x.shape[1]
  w = weight.astype(dt)
  acc = sum(padded[:, j : j + t] * w[j] for j in range(w_len))
  return jax.nn.silu(acc).astype(x.dtype)


class GatedRMSNorm(nnx.Module):
  """RMSNorm of each value head times silu(z) (transformers' RMSNormGated).

  y = (x / sqrt(mean(x^2) + eps)) * w * silu(z); the weight is plain (ones
  at initialisation), not zero-centred.
  """

  def __init__(self, shape, eps: float, dtype):
    self.scale = nnx.Param(jnp.ones(shape, dtype))
    self.eps = eps

  def __call__(self, x: jax.Array, z: jax.Array) -> jax.Array:
    dtype = x.dtype
    x32 = x.astype(jnp.promote_types(dtype, jnp.float32))
    var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    normed = (x32 * jax.lax.rsqrt(var + self.eps)).astype(dtype)
    y = self.scale[...].astype(dtype) * normed
    return (y * jax.nn.silu(z.astype(x32.dtype))).astype(dtype)


class GatedDeltaNet(nnx.Module):
  """Linear attention of one Qwen3.5 layer: conv, gated delta rule, gated norm.

  x [B, T, D] -> in_proj_qkv -> causal depthwise conv + SiLU -> q, k [B, T,
  Hk, K] (l2-normalised), v [B, T, Hv, V]; beta = sigmoid(in_proj_b x), g =
  -exp(A_log) softplus(in_proj_a x + dt_bias); the gated delta rule
  (`gated_delta`) -> o [B, T, Hv, V] -> RMSNorm(o) * silu(in_proj_z x) ->
  out_proj. Parameters are named as transformers names them.
  """

  def __init__(self, config: ModelConfig, *, stack=(), dtype, rngs: nnx.Rngs):
    d = config.embed_dim
    hk, hv = config.linear_num_key_heads, config.linear_num_value_heads
    kd, vd = config.linear_key_head_dim, config.linear_value_head_dim
    self.key_dim, self.value_dim = hk * kd, hv * vd
    conv = 2 * self.key_dim + self.value_dim
    proj = lambda shape, in_dims=1: layers.Projection(
        rngs, (*stack, *shape), None, dtype, use_bias=False, in_dims=in_dims
    )
    self.in_proj_qkv = proj((d, conv))
    self.in_proj_z = proj((d, hv, vd))
    self.in_proj_b = proj((d, hv))
    self.in_proj_a = proj((d, hv))
    self.conv1d = layers.normal_param(
        rngs, (*stack, config.linear_conv_kernel, conv), dtype
    )  # [W, C] taps
    self.dt_bias = nnx.Param(jnp.ones((*stack, hv), dtype))
    # HF draws A uniformly in [0.01, 16]; log(A) of a middle value here.
    self.A_log = nnx.Param(jnp.full((*stack, hv), jnp.log(4.0), dtype))
    self.norm = GatedRMSNorm((*stack, vd), config.rms_norm_eps, dtype)
    self.out_proj = proj((hv, vd, d), in_dims=2)
    self.heads = (hk, kd, hv, vd)

  def gates(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(g [B, T, Hv] log decay <= 0, beta [B, T, Hv]) in float32 or wider."""
    dt = jnp.promote_types(x.dtype, jnp.float32)
    a = self.in_proj_a(x).astype(dt)
    beta = jax.nn.sigmoid(self.in_proj_b(x).astype(dt))
    g = -jnp.exp(self.A_log[...].astype(dt)) * jax.nn.softplus(
        a + self.dt_bias[...].astype(dt)
    )
    return g, beta

  def split_heads(self, mixed: jax.Array):
    """Conv output [B, T, C] -> q, k [B, T, Hk, K] normalised, v [B, T, Hv, V]."""
    hk, kd, hv, vd = self.heads
    b, t, _ = mixed.shape
    q, k, v = jnp.split(mixed, [self.key_dim, 2 * self.key_dim], axis=-1)
    dt = jnp.promote_types(mixed.dtype, jnp.float32)
    q = gated_delta.l2_normalize(q.reshape(b, t, hk, kd).astype(dt))
    k = gated_delta.l2_normalize(k.reshape(b, t, hk, kd).astype(dt))
    return q, k, v.reshape(b, t, hv, vd)

  def output(self, o: jax.Array, x: jax.Array) -> jax.Array:
    """The delta rule's o [B, T, Hv, V] -> gated norm -> out_proj [B, T, D]."""
    z = self.in_proj_z(x)
    return self.out_proj(self.norm(o.astype(x.dtype), z))

  def __call__(
      self, x: jax.Array, mask: jax.Array | None = None, *, chunk_size: int
  ) -> jax.Array:
    """x [B, T, D], mask bool [B, T] (False on padding) -> [B, T, D].

    `chunk_size` is the delta rule's (`ModelConfig.delta_chunk_size`, kept
    there only so that `Transformer.set_execution` reaches every layer).

    Padding is zeroed before the projections (transformers does the same)
    and is an identity step of the recurrence, so it reaches neither the
    conv window of later tokens nor the state.
    """
    if mask is not None:
      x = jnp.where(mask[:, :, None], x, 0)
    mixed = causal_conv(self.in_proj_qkv(x), self.conv1d[...])
    q, k, v = self.split_heads(mixed)
    g, beta = self.gates(x)
    o, _ = gated_delta.gated_delta_chunked(
        q, k, v, g, beta, chunk_size=chunk_size, mask=mask
    )
    return self.output(o, x)

  def cached(
      self,
      x: jax.Array,
      mask: jax.Array | None,
      carry: tuple[jax.Array, jax.Array],
      *,
      chunk_size: int,
  ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """T new tokens after the ones `carry` summarises (prefill or decode).

    Args:
      x: [B, T, D].
      mask: bool [B, T], False on padding, or None.
      carry: (conv window [B, W - 1, C], state [B, Hv, K, V]) after the
        previous tokens (`KVCache.conv`, `.state`; zeros before any).
      chunk_size: the delta rule's chunk (at most T is used).

    Returns:
      (out [B, T, D], (window, state) after the T tokens): the same outputs
      as one uncached call over all the tokens.
    """
    window, state = carry
    if mask is not None:
      x = jnp.where(mask[:, :, None], x, 0)
    mixed = self.in_proj_qkv(x)
    full = jnp.concatenate([window.astype(mixed.dtype), mixed], axis=1)
    w = window.shape[1]
    mixed = causal_conv(full, self.conv1d[...])[:, w:]
    window = full[:, full.shape[1] - w :].astype(window.dtype)
    q, k, v = self.split_heads(mixed)
    g, beta = self.gates(x)
    o, state = gated_delta.gated_delta_chunked(
        q,
        k,
        v,
        g,
        beta,
        chunk_size=min(chunk_size, x.shape[1]),
        initial_state=state,
        mask=mask,
    )
    return self.output(o, x), (window, state.astype(carry[1].dtype))
