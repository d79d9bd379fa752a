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
"""The gated delta rule (Gated DeltaNet) as pure functions: chunked and step.

Per batch row and value head, with a state S [K, V], decay g_t <= 0 (log
space), write strength beta_t in [0, 1], key k_t [K], value v_t [V] and
query q_t [K] (scaled by `scale`):

.. math::

  S'_t = e^{g_t} S_{t-1}, \\quad
  u_t = \\beta_t (v_t - S'^T_t k_t), \\quad
  S_t = S'_t + k_t u_t^T, \\quad
  o_t = S_t^T q_t.

`gated_delta_step` is one step of that (decoding); `gated_delta_recurrent`
scans it over a sequence (the reference); `gated_delta_chunked` computes the
same outputs and final state a chunk of C positions at a time: inside a chunk
the recurrence is a unit lower-triangular system and dense [C, C] products,
across chunks a `lax.scan` carries S. No [T, T] array per head is formed.

Query / key heads may be fewer than value heads (grouped value attention, as
Qwen3.5): value head h reads key head h // (Hv // Hk), transformers'
`repeat_interleave`. A False entry of `mask` is an identity step (g = 0,
beta = 0): padding never enters the state, and its output is 0.

References:
  Yang, Kautz, Hatamizadeh, "Gated Delta Networks: Improving Mamba2 with
  Delta Rule", 2024 (arXiv:2412.06464); transformers'
  `torch_chunk_gated_delta_rule` (models/qwen3_5).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def l2_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
  """x / sqrt(sum(x^2) + eps) over the last axis (FLA's and HF's `l2norm`)."""
  return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


def _compute_dtype(x: jax.Array):
  """float32, or float64 for float64 inputs (a reference run stays so)."""
  return jnp.promote_types(x.dtype, jnp.float32)


def _expand_heads(x: jax.Array, num_v_heads: int) -> jax.Array:
  """[B, T, Hk, K] -> [B, T, Hv, K]: key head j serves Hv // Hk value heads."""
  hk = x.shape[2]
  if num_v_heads % hk:
    raise ValueError(
        f"gated delta rule: {num_v_heads} value heads are not a multiple of"
        f" {hk} query/key heads"
    )
  return jnp.repeat(x, num_v_heads // hk, axis=2) if hk != num_v_heads else x


def _prepare(q, k, v, g, beta, mask, scale):
  """Common input handling: heads expanded, upcast, padding as identity."""
  b, t, hv, dv = v.shape
  dk = k.shape[-1]
  if q.shape != k.shape or q.shape[:2] != (b, t):
    raise ValueError(
        f"gated delta rule: q {q.shape} and k {k.shape} must be [B, T, Hk, K]"
        f" with v {v.shape} [B, T, Hv, V]"
    )
  if g.shape != (b, t, hv) or beta.shape != (b, t, hv):
    raise ValueError(
        f"gated delta rule: g {g.shape} and beta {beta.shape} must be"
        f" [B, T, Hv] = {(b, t, hv)}"
    )
  dt = _compute_dtype(v)
  scale = dk**-0.5 if scale is None else scale
  q = _expand_heads(q, hv).astype(dt) * scale
  k = _expand_heads(k, hv).astype(dt)
  v, g, beta = v.astype(dt), g.astype(dt), beta.astype(dt)
  if mask is not None:
    m = mask.astype(bool)[:, :, None]
    g = jnp.where(m, g, 0)
    beta = jnp.where(m, beta, 0)
  return q, k, v, g, beta


def gated_delta_step(
    state: jax.Array,
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    g: jax.Array,
    beta: jax.Array,
) -> tuple[jax.Array, jax.Array]:
  """One step of the recurrence for every row and head (decoding).

  Args:
    state: S [B, H, K, V].
    q: the query [B, H, K], already scaled (and normalised if so wanted).
    k: the key [B, H, K].
    v: the value [B, H, V].
    g: log decay [B, H] (<= 0; 0 with beta = 0 is an identity step).
    beta: write strength [B, H].

  Returns:
    (o [B, H, V], the new state [B, H, K, V]), in the state's dtype.
  """
  state = state * jnp.exp(g)[..., None, None]
  predicted = jnp.einsum("BHKV,BHK->BHV", state, k)
  u = beta[..., None] * (v - predicted)
  state = state + k[..., :, None] * u[..., None, :]
  return jnp.einsum("BHKV,BHK->BHV", state, q), state


def _initial(initial_state, b, hv, dk, dv, dt):
  if initial_state is None:
    return jnp.zeros((b, hv, dk, dv), dt)
  if initial_state.shape != (b, hv, dk, dv):
    raise ValueError(
        f"gated delta rule: initial_state {initial_state.shape}, expected"
        f" [B, Hv, K, V] = {(b, hv, dk, dv)}"
    )
  return initial_state.astype(dt)


def gated_delta_recurrent(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    g: jax.Array,
    beta: jax.Array,
    *,
    initial_state: jax.Array | None = None,
    mask: jax.Array | None = None,
    scale: float | None = None,
) -> tuple[jax.Array, jax.Array]:
  """The gated delta rule one position at a time (`gated_delta_step`).

  Same arguments and results as `gated_delta_chunked` (without
  `chunk_size`); T sequential steps, for short calls and as the reference.
  """
  b, t, hv, dv = v.shape
  q, k, v, g, beta = _prepare(q, k, v, g, beta, mask, scale)
  state = _initial(initial_state, b, hv, k.shape[-1], dv, v.dtype)

  def step(state, xs):
    out, state = gated_delta_step(state, *xs)
    return state, out

  xs = tuple(jnp.moveaxis(x, 1, 0) for x in (q, k, v, g, beta))
  state, out = jax.lax.scan(step, state, xs)
  out = jnp.moveaxis(out, 0, 1)  # [B, T, Hv, V]
  if mask is not None:
    out = jnp.where(mask.astype(bool)[:, :, None, None], out, 0)
  return out, state


def _chunk(state, xs):
  """One chunk of C positions: outputs [B, H, C, V] and the state after.

  With G_i = sum_{j <= i} g_j inside the chunk and S_0 the state before it,
  the writes U [C, V] solve the unit lower-triangular system

    U_i + beta_i sum_{j < i} e^{G_i - G_j} (k_i . k_j) U_j
        = beta_i v_i - beta_i e^{G_i} k_i^T S_0,

  then o_i = e^{G_i} S_0^T q_i + sum_{j <= i} e^{G_i - G_j} (q_i . k_j) U_j
  and S = e^{G_C} S_0 + sum_j e^{G_C - G_j} k_j U_j^T.
  """
  q, k, v, g, beta = xs  # [B, H, C, K|V], g and beta [B, H, C]
  c = g.shape[-1]
  cum = jnp.cumsum(g, axis=-1)  # G, [B, H, C]
  lower = jnp.tril(jnp.ones((c, c), bool))
  strict = jnp.tril(jnp.ones((c, c), bool), -1)
  # e^{G_i - G_j} for j <= i only: the other differences are positive and
  # may overflow; a zero exponent there keeps the gradient finite.
  diff = cum[..., :, None] - cum[..., None, :]
  decay = jnp.where(lower, jnp.exp(jnp.where(lower, diff, 0)), 0)
  kk = jnp.einsum("BHIK,BHJK->BHIJ", k, k)
  system = jnp.eye(c, dtype=g.dtype) + jnp.where(
      strict, beta[..., None] * kk * decay, 0
  )
  rhs = jnp.concatenate(
      [beta[..., None] * v, (beta * jnp.exp(cum))[..., None] * k], axis=-1
  )
  solved = jax.lax.linalg.triangular_solve(
      system, rhs, left_side=True, lower=True, unit_diagonal=True
  )
  dv = v.shape[-1]
  values, keys_read = solved[..., :dv], solved[..., dv:]
  u = values - jnp.einsum("BHCK,BHKV->BHCV", keys_read, state)
  scores = jnp.einsum("BHIK,BHJK->BHIJ", q, k) * decay
  out = jnp.einsum(
      "BHCK,BHKV->BHCV", q * jnp.exp(cum)[..., None], state
  ) + jnp.einsum("BHIJ,BHJV->BHIV", scores, u)
  last = cum[..., -1:]  # G_C
  state = state * jnp.exp(last)[..., None] + jnp.einsum(
      "BHCK,BHCV->BHKV", k * jnp.exp(last - cum)[..., None], u
  )
  return state, out


def gated_delta_chunked(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    g: jax.Array,
    beta: jax.Array,
    *,
    chunk_size: int = 64,
    initial_state: jax.Array | None = None,
    mask: jax.Array | None = None,
    scale: float | None = None,
) -> tuple[jax.Array, jax.Array]:
  """The gated delta rule over a sequence, C = `chunk_size` positions at once.

  Equal to `gated_delta_recurrent` up to rounding. The sequence is padded at
  the end to a multiple of C with identity steps; a `lax.scan` over the
  chunks carries the state, and each chunk forms [C, C] matrices per head
  (memory O(T C) per head with the scan's residuals, never O(T^2)).

  Args:
    q: queries [B, T, Hk, K] (normalised by the caller if so wanted).
    k: keys [B, T, Hk, K].
    v: values [B, T, Hv, V]; Hv a multiple of Hk.
    g: log decays [B, T, Hv], <= 0.
    beta: write strengths [B, T, Hv].
    chunk_size: C, positions per chunk.
    initial_state: S before the first position, [B, Hv, K, V]; zeros if
      None.
    mask: bool [B, T], False on padding (identity steps, output 0).
    scale: multiplies the queries; K ** -0.5 if None (transformers).

  Returns:
    (outputs [B, T, Hv, V], final state [B, Hv, K, V]) in float32 (float64
    for float64 values).
  """
  if chunk_size <= 0:
    raise ValueError(f"gated delta rule: chunk_size {chunk_size} must be > 0")
  b, t, hv, dv = v.shape
  q, k, v, g, beta = _prepare(q, k, v, g, beta, mask, scale)
  state = _initial(initial_state, b, hv, k.shape[-1], dv, v.dtype)
  c = chunk_size
  n = -(-t // c)
  pad = n * c - t

  def chunks(x):  # [B, T, H, ...] -> [n, B, H, C, ...], zero-padded
    x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
    x = x.reshape(b, n, c, *x.shape[2:])
    return jnp.moveaxis(jnp.moveaxis(x, 1, 0), 2, 3)

  xs = tuple(chunks(x) for x in (q, k, v, g, beta))
  state, out = jax.lax.scan(_chunk, state, xs)  # out [n, B, H, C, V]
  out = jnp.moveaxis(out, 0, 2).reshape(b, hv, n * c, dv)[:, :, :t]
  out = jnp.moveaxis(out, 1, 2)  # [B, T, Hv, V]
  if mask is not None:
    out = jnp.where(mask.astype(bool)[:, :, None, None], out, 0)
  return out, state
