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
"""Building blocks of the decoder: parameters, RMSNorm, SwiGLU MLP, RoPE."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from opd_jax import kernels
from opd_jax.models.config import ModelConfig

_INIT_STDDEV = 0.02  # HF `initializer_range` default for these families.


# Up to this many input rows, a projection with `rows` attached uses the C++
# kernel (see BENCHMARKS.md, "A C++ kernel for the decode projections").
DECODE_KERNEL_ROWS = 64


def normal_param(rngs: nnx.Rngs, shape, dtype) -> nnx.Param:
  """A parameter drawn from N(0, 0.02^2), as HF initialises these models."""
  init = jax.nn.initializers.normal(_INIT_STDDEV)
  return nnx.Param(init(rngs.params(), shape, jnp.float32).astype(dtype))


def dense(x: jax.Array, kernel: jax.Array, in_dims: int = 1) -> jax.Array:
  """Contracts the last `in_dims` axes of x with the first of `kernel`.

  Flattens to one 2-D matmul: XLA:CPU runs the 3-D dot's backward pass about
  2x slower than the 2-D one.
  """
  lead = x.shape[: x.ndim - in_dims]
  k_in = math.prod(kernel.shape[:in_dims])
  out = kernel.shape[in_dims:]
  # float32 accumulation (float64 for float64 operands: a reference run
  # stays float64 throughout), output in x's dtype: with bfloat16 operands
  # this runs about 2x faster on CPU than a bfloat16-output dot (and is
  # exact float32 for float32 operands).
  dtype = jnp.result_type(x, kernel)
  y = jnp.dot(
      x.reshape(-1, k_in),
      kernel.reshape(k_in, -1),
      preferred_element_type=jnp.promote_types(dtype, jnp.float32),
  ).astype(dtype)
  return y.reshape(*lead, *out)


class RMSNorm(nnx.Module):
  """y = x / sqrt(mean(x^2) + eps) * scale, computed in float32 (or float64).

  Matches HF: the normalised value is cast back to the input dtype before the
  scale multiplies it. With `zero_centred=True` (Qwen3.5) the parameter is
  w, initialised to 0, and y = x / sqrt(mean(x^2) + eps) * (1 + w) in
  float32, cast to the input dtype last (transformers' order).
  """

  def __init__(self, shape, eps: float, dtype, *, zero_centred: bool = False):
    init = jnp.zeros if zero_centred else jnp.ones
    self.scale = nnx.Param(init(shape, dtype))
    self.eps = eps
    self.zero_centred = zero_centred

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    normed = x32 * jax.lax.rsqrt(var + self.eps)
    if self.zero_centred:
      return (normed * (1 + self.scale[...].astype(x32.dtype))).astype(x.dtype)
    return self.scale[...].astype(x.dtype) * normed.astype(x.dtype)


class Mlp(nnx.Module):
  """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

  def __init__(self, config: ModelConfig, *, stack=(), dtype, rngs: nnx.Rngs):
    d, f = config.embed_dim, config.mlp_dim
    self.gate_proj = Projection(
        rngs, (*stack, d, f), None, dtype, use_bias=False
    )
    self.up_proj = Projection(rngs, (*stack, d, f), None, dtype, use_bias=False)
    self.down_proj = Projection(
        rngs, (*stack, f, d), None, dtype, use_bias=False
    )

  def __call__(self, x: jax.Array) -> jax.Array:  # [B, T, D] -> [B, T, D]
    return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class Projection(nnx.Module):
  """A kernel and an optional bias, paths `<name>/kernel`, `<name>/bias`.

  The kernel's first `in_dims` axes (after any layer-stack axis) contract with
  the last `in_dims` axes of the input.
  """

  def __init__(
      self, rngs, shape, bias_shape, dtype, *, use_bias: bool, in_dims=1
  ):
    self.kernel = normal_param(rngs, shape, dtype)
    self.bias = nnx.Param(jnp.zeros(bias_shape, dtype)) if use_bias else None
    self.in_dims = in_dims

  def attach_rows(self) -> None:
    """Keeps a copy of the kernel as [out, in] rows for `kernels.rows_dot`.

    For decoding loops on CPU (`models.decode.split_layers`): with the rows,
    products of up to `DECODE_KERNEL_ROWS` input rows run the C++ kernel,
    which reads each weight once (1.5-2x faster than XLA:CPU's dot at 8
    rows, BENCHMARKS.md).
    """
    k_in = math.prod(self.kernel.shape[: self.in_dims])
    self.rows = nnx.Cache(self.kernel[...].reshape(k_in, -1).T)

  def __call__(self, x: jax.Array) -> jax.Array:
    lead = x.shape[: x.ndim - self.in_dims]
    rows = getattr(self, "rows", None)  # [out, in], see attach_rows
    if rows is not None and math.prod(lead) <= DECODE_KERNEL_ROWS:
      rows = rows_of(rows[...], self.kernel[...])
      y = kernels.rows_dot(x.reshape(-1, rows.shape[1]), rows)
      y = y.astype(x.dtype).reshape(*lead, *self.kernel.shape[self.in_dims :])
    else:
      y = dense(x, self.kernel[...], self.in_dims)
    if self.bias is not None:
      y = y + self.bias[...]
    return y


@jax.custom_jvp
def rows_of(rows: jax.Array, kernel: jax.Array) -> jax.Array:
  """`rows`, a kept copy of `kernel` as [out, in]; derivatives go to kernel.

  Decoding models keep transposed copies of weights (`attach_rows`, the
  head's rows) as `nnx.Cache`, which `nnx.grad` does not differentiate: a
  loss through the copy would give the `nnx.Param` no gradient from that
  path. This identity on the copy takes its tangent from the kernel's, so
  differentiating a split model gives the gradients of the unsplit one.

  Args:
    rows: [out, in], equal to kernel.reshape(in, out).T.
    kernel: the parameter, [*in_dims, *out_dims] flattening to [in, out].
  """
  del kernel
  return rows


@rows_of.defjvp
def _rows_of_jvp(primals, tangents):
  rows, _ = primals
  _, d_kernel = tangents
  return rows, d_kernel.reshape(rows.shape[1], rows.shape[0]).T


def rope_inv_freq(config: ModelConfig) -> np.ndarray:
  """Inverse RoPE frequencies [H/2] in float32, as HF computes them.

  With Llama-3 scaling, long wavelengths are divided by `factor`, short ones
  kept, and the band between is interpolated smoothly.
  """
  h = config.rotary_dim
  exponent = np.arange(0, h, 2, dtype=np.int64).astype(np.float32) / h
  inv_freq = (1.0 / (np.float32(config.rope_theta) ** exponent)).astype(
      np.float32
  )
  s = config.rope_scaling
  if s is None:
    return inv_freq
  low_wavelen = s.original_max_position_embeddings / s.low_freq_factor
  high_wavelen = s.original_max_position_embeddings / s.high_freq_factor
  wavelen = 2 * math.pi / inv_freq
  scaled = np.where(wavelen > low_wavelen, inv_freq / s.factor, inv_freq)
  smooth = (
      s.original_max_position_embeddings / wavelen - s.low_freq_factor
  ) / (s.high_freq_factor - s.low_freq_factor)
  smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
  medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
  return np.where(medium, smoothed, scaled).astype(np.float32)


def rope_cos_sin(
    positions: jax.Array, inv_freq: np.ndarray
) -> tuple[jax.Array, jax.Array]:
  """cos, sin [B, T, H] for integer positions [B, T] (HF's half layout)."""
  freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """Rotates heads x [B, T, N, H] by the angles in cos/sin [B, T, R].

  R < H (partial RoPE): the first R channels turn, the rest pass through.
  """
  r = cos.shape[-1]
  if r < x.shape[-1]:
    return jnp.concatenate(
        [apply_rope(x[..., :r], cos, sin), x[..., r:]], axis=-1
    )
  cos = cos[:, :, None, :].astype(x.dtype)
  sin = sin[:, :, None, :].astype(x.dtype)
  x1, x2 = jnp.split(x, 2, axis=-1)
  rotated = jnp.concatenate([-x2, x1], axis=-1)
  return x * cos + rotated * sin
