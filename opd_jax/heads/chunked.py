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
"""The one chunked pass through the vocabulary heads that every [., V] tensor goes through."""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from opd_jax import sharding

Array = jax.Array
PyTree = Any

DEFAULT_CHUNK_SIZE = 128
# At most this many elements in one chunk's [B, C, V] logits (global
# shape): 512 MiB of float32. `head_pass` shortens a chunk below
# `chunk_size` when B * C * V would exceed it, so that a large batch or
# vocabulary (B = 128, V = 152064: 13 positions) never holds [B, N, V].
CHUNK_ELEMENTS = 2**27


def chunk_length(batch: int, n: int, vocab: int, chunk_size: int | None):
  """Positions per chunk: `chunk_size` (None: all n), capped so that a
  [batch, C, vocab] chunk has at most `CHUNK_ELEMENTS` elements."""
  c = n if chunk_size is None else min(chunk_size, n)
  return max(1, min(c, CHUNK_ELEMENTS // max(1, batch * vocab)))


def head_logits(hidden: Array, head: Array) -> Array:
  r"""Applies a vocabulary head, accumulating in float32 (float64 for float64).

  .. math::
    z = h W, \qquad [B, C, D] \times [D, V] \to [B, C, V].

  Args:
    hidden: hidden states ``[batch, seq, dim]`` (after the final norm).
    head: head matrix ``[dim, vocab]`` (tied embedding transposed, or the
      lm_head kernel); any float dtype, e.g. bfloat16.

  Returns:
    float32 logits ``[batch, seq, vocab]`` (float64 if an operand is).

  Examples:
    >>> import jax.numpy as jnp
    >>> head_logits(jnp.ones((2, 3, 4)), jnp.ones((4, 5))).shape
    (2, 3, 5)
  """
  b, c, d = hidden.shape
  # One 2-D matmul: [B*C, D] @ [D, V] maps onto a single GEMM on every
  # backend, where a batched einsum may not.
  flat = hidden.reshape(b * c, d)
  acc = jnp.promote_types(jnp.result_type(hidden, head), jnp.float32)
  logits = jnp.dot(flat, head, preferred_element_type=acc)
  return logits.reshape(b, c, head.shape[1])


def map_chunks(
    fn: Callable[[PyTree], PyTree], xs: PyTree, chunk_size: int
) -> PyTree:
  """Maps `fn` over static-size chunks of the sequence axis (axis 1).

  Every leaf of ``xs`` is ``[B, N, ...]``; N is padded with zeros up to a
  multiple of ``chunk_size`` (pass a mask leaf: its padding reads False)
  and the padding is stripped from the ``[B, N, ...]`` outputs. Chunks run
  one after another under ``lax.map``, so only one chunk's intermediates
  are live at a time.

  Args:
    fn: function of a pytree of ``[B, C, ...]`` chunks to a pytree of
      ``[B, C, ...]`` outputs.
    xs: pytree of ``[B, N, ...]`` arrays.
    chunk_size: static chunk length C (clipped to N).

  Returns:
    pytree of ``[B, N, ...]`` outputs.

  Examples:
    >>> import jax.numpy as jnp
    >>> x = jnp.arange(10.0).reshape(1, 10)
    >>> map_chunks(lambda c: 2 * c, x, chunk_size=4).tolist()
    [[0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0]]
  """
  n = jax.tree.leaves(xs)[0].shape[1]
  ys = jax.lax.map(fn, split_chunks(xs, chunk_size))
  return merge_chunks(ys, n)


def split_chunks(xs: PyTree, chunk_size: int) -> PyTree:
  """``[B, N, ...]`` leaves to ``[num, B, C, ...]``, N zero-padded to num C."""
  b, n = jax.tree.leaves(xs)[0].shape[:2]
  if chunk_size < 1:
    raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
  c = min(chunk_size, n)
  num = -(-n // c)
  pad = num * c - n

  def split(x):
    x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
    return jnp.moveaxis(x.reshape(b, num, c, *x.shape[2:]), 1, 0)

  return jax.tree.map(split, xs)


def merge_chunks(ys: PyTree, n: int) -> PyTree:
  """``[num, B, C, ...]`` leaves back to ``[B, n, ...]`` (padding dropped)."""

  def merge(y):
    num, b, c = y.shape[:3]
    return jnp.moveaxis(y, 0, 1).reshape(b, num * c, *y.shape[3:])[:, :n]

  return jax.tree.map(merge, ys)


# Mesh axes that split the vocabulary inside the head pass: the ones that
# hold parameter shards (FSDP and tensor parallelism). Data-parallel
# replicas each run the whole vocabulary for their own rows.
VOCAB_AXES = ("fsdp", "tensor")


def vocab_parallel(head: Array) -> Array:
  """`head` [D, V] resharded to split V over `VOCAB_AXES` (under a mesh).

  Stored FSDP-sharded along D, a head is gathered whole onto every device
  by the partitioner for the pass's dots (with XLA:CPU's float32 copy
  beside it: 3.5 GiB per device for an 8B teacher's [4096, 151936] head).
  Split along V instead, each device holds [D, V / n] and computes its own
  slice of every chunk's logits; the softmax reductions over V become
  all-reduces of [B, C] values and only the chunk's hidden states are
  gathered. A no-op without a mesh, and for axes that do not divide V.
  """
  return sharding.shard(head, P(None, VOCAB_AXES))


def _vocab_parallel_chunk(x: Array) -> Array:
  """A [B, C, ...] chunk gathered over `VOCAB_AXES` (rows split by `data`)."""
  return sharding.shard(x, P("data", *([None] * (x.ndim - 1))))


def _vocab_parallel_logits(z: Array) -> Array:
  """[B, C, V] logits: rows split by `data`, vocabulary by `VOCAB_AXES`."""
  return sharding.shard(z, P("data", None, VOCAB_AXES))


def check_heads(
    student_hidden: Array,
    student_head: Array,
    teacher_hidden: Array,
    teacher_head: Array,
) -> None:
  """Checks hidden [B, N, D] against head [D, V] for student and teacher."""
  for role, h, w in (
      ("student", student_hidden, student_head),
      ("teacher", teacher_hidden, teacher_head),
  ):
    if h.ndim != 3 or w.ndim != 2 or h.shape[-1] != w.shape[0]:
      raise ValueError(
          f"{role}_hidden [B, N, D] and {role}_head [D, V] must agree, got"
          f" {h.shape} and {w.shape}."
      )
    for name, x in ((f"{role}_hidden", h), (f"{role}_head", w)):
      if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must be floating, got dtype {x.dtype}.")
  if student_hidden.shape[:2] != teacher_hidden.shape[:2]:
    raise ValueError(
        "student_hidden and teacher_hidden must share [B, N], got"
        f" {student_hidden.shape} and {teacher_hidden.shape}."
    )
  if student_head.shape[1] != teacher_head.shape[1]:
    raise ValueError(
        "student_head and teacher_head must share the vocabulary size, got"
        f" {student_head.shape} and {teacher_head.shape}."
    )


def head_pass(
    fn: Callable[..., PyTree],
    student_hidden: Array,
    student_head: Array,
    teacher_hidden: Array,
    teacher_head: Array,
    *per_position: Array,
    chunk_size: int | None = DEFAULT_CHUNK_SIZE,
    student_grad: bool = True,
) -> PyTree:
  r"""Forms both heads' logits chunk by chunk and reduces them with ``fn``.

  For each chunk of C positions,

  .. math::
    z_S = h_S W_S, \quad z_T = \mathrm{sg}(h_T W_T) \quad [B, C, V],
    \qquad \text{out} = fn(z_S, z_T, x_1, \dots),

  where ``fn`` reduces the vocabulary axis (a divergence, an entropy, a
  gathered logit) to ``[B, C, ...]``. Only one chunk's ``[B, C, V]``
  tensors are live at a time; when the student side keeps its gradient,
  each chunk runs under ``jax.checkpoint`` so the backward pass recomputes
  the chunk's logits instead of keeping ``[B, N, V]`` residuals. The
  teacher side never carries a gradient. Every ``[., V]`` computation of
  the library goes through here or through `weighted_head_pass` (the
  divergence losses: the same chunks, no recomputation).

  Under a mesh the pass is vocabulary-parallel (`vocab_parallel`): both
  heads split V over the parameter axes, each chunk's hidden states and
  per-position arrays are gathered over them, and XLA's partitioner turns
  ``fn``'s reductions over V into all-reduces. Without a mesh nothing
  changes.

  Args:
    fn: ``fn(student_logits, teacher_logits, *chunks)`` -> pytree of
      ``[B, C, ...]`` arrays; logits are float32 ``[B, C, V]``.
    student_hidden: ``[batch, n, d_student]`` final-norm hidden states.
    student_head: ``[d_student, vocab]``.
    teacher_hidden: ``[batch, n, d_teacher]``.
    teacher_head: ``[d_teacher, vocab]``.
    *per_position: further ``[batch, n, ...]`` arrays chunked alongside
      (ids, masks); a mask reads False on the padding of the last chunk.
    chunk_size: positions per chunk, or None (or >= n) for one dense pass;
      shortened (`chunk_length`) where a [B, C, V] chunk would exceed
      `CHUNK_ELEMENTS`.
    student_grad: False stops the student's gradient too (a scores-only
      pass, which then needs no checkpointing).

  Returns:
    ``fn``'s pytree with ``[batch, n, ...]`` leaves.
  """
  check_heads(student_hidden, student_head, teacher_hidden, teacher_head)
  sg = jax.lax.stop_gradient
  teacher_hidden, teacher_head = sg((teacher_hidden, teacher_head))
  if not student_grad:
    student_hidden, student_head = sg((student_hidden, student_head))

  student_head = vocab_parallel(student_head)
  teacher_head = vocab_parallel(teacher_head)

  def chunk_fn(chunk):
    hs, ht, *rest = jax.tree.map(_vocab_parallel_chunk, chunk)
    zs = _vocab_parallel_logits(head_logits(hs, student_head))  # [B, C, V]
    zt = _vocab_parallel_logits(head_logits(ht, teacher_head))  # [B, C, V]
    return fn(zs, zt, *rest)

  xs = (student_hidden, teacher_hidden, *per_position)
  b, n = student_hidden.shape[:2]
  chunk_size = chunk_length(b, n, student_head.shape[-1], chunk_size)
  if chunk_size >= n:
    return chunk_fn(xs)
  if student_grad:
    # prevent_cse=False: lax.map is a scan, which already keeps XLA from
    # merging the recomputation with the forward pass.
    chunk_fn = jax.checkpoint(chunk_fn, prevent_cse=False)
  return map_chunks(chunk_fn, xs, chunk_size)


def weighted_head_pass(
    fn: Callable[..., Array],
    student_hidden: Array,
    student_head: Array,
    teacher_hidden: Array,
    teacher_head: Array,
    weights: Array,
    *per_position: Array,
    chunk_size: int | None = DEFAULT_CHUNK_SIZE,
) -> tuple[Array, Array]:
  r"""Per-position values of ``fn`` and their weighted sum, whose gradient
  is formed in the forward pass.

  .. math::
    v_{bn} = fn(h^S W_S, \mathrm{sg}(h^T W_T), x)_{bn}, \qquad
    s = \sum_{b,n} c_{bn} v_{bn},

  with the same chunks and vocabulary-parallel layout as `head_pass`.
  Because the weights c of the reduction are known before the backward
  pass, each chunk forms its logits once, takes ``fn``'s vector-Jacobian
  product with c and the head's two products right there,

  .. math::
    g = \partial_{z_S} (c \cdot v), \quad
    \partial h^S = g W_S^\top, \quad
    \partial W_S \mathrel{+}= {h^S}^\top g,

  and the backward pass only scales them by the cotangent of s. The
  checkpointed `head_pass` instead recomputes both heads' logits and
  ``fn`` in the backward pass: six head products per chunk and two
  evaluations of ``fn`` where this needs four and one (the fused
  linear-cross-entropy idea of Liger-Kernel, for any per-position ``fn``).
  JAX's autodiff cannot do this by itself: it does not know the
  cotangent of ``v`` until the backward pass, hence the custom VJP.

  Args:
    fn: ``fn(student_logits, teacher_logits, *chunks)`` -> ``[B, C]``
      float32 values; logits are float32 ``[B, C, V]``.
    student_hidden: ``[batch, n, d_student]`` final-norm hidden states.
    student_head: ``[d_student, vocab]``.
    teacher_hidden: ``[batch, n, d_teacher]`` (no gradient flows into it).
    teacher_head: ``[d_teacher, vocab]`` (no gradient flows into it).
    weights: float ``[batch, n]`` coefficients c of the sum (0 where a
      position does not count); differentiable.
    *per_position: further ``[batch, n, ...]`` arrays chunked alongside
      (ids, masks), without gradient.
    chunk_size: positions per chunk, or None for one pass.

  Returns:
    ``(values, total)``: ``values`` float32 ``[batch, n]`` without
    gradient (``stop_gradient``: differentiate ``total``), and the scalar
    ``total`` = sum of ``weights * values``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> h, w = jnp.ones((1, 3, 2)), jnp.ones((2, 4))
    >>> v, s = weighted_head_pass(
    ...     lambda zs, zt: zs.sum(-1), h, w, h, w, jnp.ones((1, 3)))
    >>> v.tolist(), float(s)
    ([[8.0, 8.0, 8.0]], 24.0)
  """
  check_heads(student_hidden, student_head, teacher_hidden, teacher_head)
  if weights.shape != student_hidden.shape[:2]:
    raise ValueError(
        f"weights must have shape {student_hidden.shape[:2]}, got"
        f" {weights.shape}."
    )
  sg = jax.lax.stop_gradient
  teacher_hidden, teacher_head = sg((teacher_hidden, teacher_head))
  per_position = sg(per_position)
  student_head = vocab_parallel(student_head)
  teacher_head = vocab_parallel(teacher_head)
  b, n = student_hidden.shape[:2]
  c = chunk_length(b, n, student_head.shape[-1], chunk_size)
  values, total = _weighted_sum(
      fn, c, student_hidden, student_head, teacher_hidden, teacher_head,
      jnp.asarray(weights, jnp.float32), per_position,
  )  # fmt: skip
  return sg(values), total


def _chunk_logits(hidden: Array, head: Array) -> Array:
  """[B, C, V] logits of one chunk (rows by `data`, vocabulary split)."""
  return _vocab_parallel_logits(head_logits(hidden, head))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _weighted_sum(fn, c, hs, ws, ht, wt, weights, rest):
  """(values, sum of weights * values); the custom VJP's primal, used where
  nothing differentiates: `head_pass`'s scores-only pass, no gradient work."""
  values = head_pass(
      fn, hs, ws, ht, wt, *rest, chunk_size=c, student_grad=False
  )
  return values, jnp.sum(weights * values)


def _weighted_sum_fwd(fn, c, hs, ws, ht, wt, weights, rest):
  """One scan over the chunks: values, dh [B, N, D] and dW [D, V] of the
  weighted sum (dW accumulated in float32 at least)."""

  def chunk(dw, xs):
    h, t, coeff, *r = jax.tree.map(_vocab_parallel_chunk, xs)
    zs, head_vjp = jax.vjp(_chunk_logits, h, ws)
    zt = _chunk_logits(t, wt)
    v, fn_vjp = jax.vjp(lambda z: fn(z, zt, *r), zs)
    (dz,) = fn_vjp(coeff.astype(v.dtype))
    dh, dw_chunk = head_vjp(dz)
    return dw + dw_chunk.astype(dw.dtype), (v, dh)

  acc = jnp.promote_types(ws.dtype, jnp.float32)
  dw, ys = jax.lax.scan(
      chunk,
      jnp.zeros(ws.shape, acc),
      split_chunks((hs, ht, weights, *rest), c),
  )
  values, dh = merge_chunks(ys, hs.shape[1])
  total = jnp.sum(weights * values)
  return (values, total), (dh, dw.astype(ws.dtype), values)


def _weighted_sum_bwd(fn, c, residuals, cotangents):
  """Scales the forward's gradients by the cotangent of the sum. The
  values' cotangent is zero: `weighted_head_pass` stops their gradient."""
  del fn, c
  dh, dw, values = residuals
  _, ct = cotangents
  return (
      (ct * dh).astype(dh.dtype),
      (ct * dw).astype(dw.dtype),
      None,
      None,
      ct * values,
      None,
  )


_weighted_sum.defvjp(_weighted_sum_fwd, _weighted_sum_bwd)
