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
"""Causal attention of a sequence to itself by the C++ CPU kernel, with its VJP."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from opd_jax.kernels import cpu

# Operand dtypes the kernel takes (read as float32; float32 sums).
SEQUENCE_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16))


def sequence_attention_supported(q: jax.Array, k: jax.Array) -> bool:
  """Whether `sequence_attention` can run these operands (at trace time).

  float32 or bfloat16 operands, a head dim that is a multiple of 8, and
  `cpu.cpu_kernels_enabled()`. float64 (the tests' reference precision)
  is left to the JAX paths.
  """
  return (
      jnp.dtype(q.dtype) in SEQUENCE_DTYPES
      and jnp.dtype(k.dtype) in SEQUENCE_DTYPES
      and q.shape[-1] % 8 == 0
      and cpu.cpu_kernels_enabled()
  )


def sequence_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    key_mask: jax.Array,
    *,
    scale: float,
) -> jax.Array:
  """Causal grouped-query attention by the C++ kernel, differentiable.

  For row b, kv head k, group g and query position t,

    out[b, t, k, g] = sum_s p[s] v[b, s, k],
    p = softmax_s(scale q[b, t, k, g] . k[b, s, k]) over s <= t with
        key_mask[b, s];

  a query with no such key (a left pad) gets 0, as the blockwise path
  gives. The backward pass is FlashAttention-2's, recomputing each block's
  probabilities from the saved log-sum-exp: nothing of size [T, S] is kept.
  Operands are read as float32 and everything is summed in float32; the
  output and the gradients come back in the operands' dtypes. Agrees with
  `models.sequence_attention.dense_attention` to float32 rounding.

  Args:
    q: queries [B, T, K, G, H], float32 or bfloat16, H a multiple of 8.
    k, v: keys and values [B, T, K, H].
    key_mask: [B, T] bool, False on padding.
    scale: the logits' scale (1 / sqrt(H)).

  Returns:
    out [B, T, K, G, H] in v's dtype.

  Raises:
    ValueError: on shapes other than the above.
    RuntimeError: when the kernels are not available here
      (`sequence_attention_supported` is False).
  """
  b, t, kh, g, h = q.shape
  if k.shape != (b, t, kh, h) or v.shape != k.shape:
    raise ValueError(
        "kernels.sequence_attention: expected k, v [B, T, K, H] ="
        f" {(b, t, kh, h)} for q {q.shape}, got {k.shape} and {v.shape}"
    )
  if key_mask.shape != (b, t):
    raise ValueError(
        f"kernels.sequence_attention: expected key_mask [B, T] = {(b, t)},"
        f" got {key_mask.shape}"
    )
  if not sequence_attention_supported(q, k):
    raise RuntimeError(
        "kernels.sequence_attention: the C++ CPU kernel cannot run"
        f" {q.dtype} operands with head dim {h} here (see"
        " sequence_attention_supported)"
    )
  out = _attention(
      q.astype(jnp.float32),
      k.astype(jnp.float32),
      v.astype(jnp.float32),
      key_mask.astype(bool),
      float(scale),
  )
  return out.astype(v.dtype)


def _forward_call(q, k, v, key_mask, scale):
  b, t, kh, g, _ = q.shape
  shapes = (
      jax.ShapeDtypeStruct(q.shape, jnp.float32),
      jax.ShapeDtypeStruct((b, kh, g, t), jnp.float32),
  )
  return jax.ffi.ffi_call(
      "opd_sequence_attention", shapes, vmap_method="sequential"
  )(q, k, v, key_mask, scale=np.float32(scale))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _attention(q, k, v, key_mask, scale):
  return _forward_call(q, k, v, key_mask, scale)[0]


def _attention_fwd(q, k, v, key_mask, scale):
  out, lse = _forward_call(q, k, v, key_mask, scale)
  return out, (q, k, v, key_mask, out, lse)


def _attention_bwd(scale, residuals, d_out):
  q, k, v, key_mask, out, lse = residuals
  shapes = (
      jax.ShapeDtypeStruct(q.shape, jnp.float32),
      jax.ShapeDtypeStruct(k.shape, jnp.float32),
      jax.ShapeDtypeStruct(v.shape, jnp.float32),
  )
  dq, dk, dv = jax.ffi.ffi_call(
      "opd_sequence_attention_backward", shapes, vmap_method="sequential"
  )(
      q,
      k,
      v,
      key_mask,
      out,
      lse,
      d_out.astype(jnp.float32),
      scale=np.float32(scale),
  )
  return dq, dk, dv, None


_attention.defvjp(_attention_fwd, _attention_bwd)
