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
"""Fused, chunked per-token statistics pass that never holds [B, T, V]."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from opd_jax import losses

Array = jax.Array
PyTree = Any

DEFAULT_CHUNK_SIZE = 128


class TokenStats(NamedTuple):
  r"""Per-token statistics of one batch of responses, all float32 [B, T].

  Masked positions hold 0; the top-k fields are filled there regardless.

  Attributes:
    student_entropy: :math:`H(p_S)` in nats.
    teacher_entropy: :math:`H(p_T)` in nats.
    reverse_kl: :math:`\mathrm{KL}(p_S \| p_T)`.
    forward_kl: :math:`\mathrm{KL}(p_T \| p_S)`.
    jsd: generalized JSD with the pass's ``jsd_beta`` (TRL convention).
    student_logprob: :math:`\log p_S(y)` of the sampled tokens.
    teacher_logprob: :math:`\log p_T(y)` of the sampled tokens.
    student_topk_ids: int32 [B, T, k], the student's top-k token ids (None
      when ``top_k == 0``).
    teacher_logits_at_topk: float32 [B, T, k], teacher logits divided by the
      temperature at those ids (None when ``top_k == 0``).
  """

  student_entropy: Array
  teacher_entropy: Array
  reverse_kl: Array
  forward_kl: Array
  jsd: Array
  student_logprob: Array
  teacher_logprob: Array
  student_topk_ids: Array | None = None
  teacher_logits_at_topk: Array | None = None


def head_logits(hidden: Array, head: Array) -> Array:
  r"""Applies a vocabulary head, accumulating in float32.

  .. math::
    z = h W, \qquad [B, C, D] \times [D, V] \to [B, C, V].

  Args:
    hidden: hidden states ``[batch, seq, dim]`` (after the final norm).
    head: head matrix ``[dim, vocab]`` (tied embedding transposed, or the
      lm_head kernel); any float dtype, e.g. bfloat16.

  Returns:
    float32 logits ``[batch, seq, vocab]``.
  """
  b, c, d = hidden.shape
  # One 2-D matmul: [B*C, D] @ [D, V] maps onto a single GEMM on every
  # backend, where a batched einsum may not.
  flat = hidden.reshape(b * c, d)
  logits = jnp.dot(flat, head, preferred_element_type=jnp.float32)
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
  """
  leaves = jax.tree.leaves(xs)
  b, n = leaves[0].shape[:2]
  if chunk_size < 1:
    raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
  c = min(chunk_size, n)
  num = -(-n // c)
  pad = num * c - n

  def split(x):  # [B, N, ...] -> [num, B, C, ...]
    x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
    return jnp.moveaxis(x.reshape(b, num, c, *x.shape[2:]), 1, 0)

  def merge(y):  # [num, B, C, ...] -> [B, N, ...]
    y = jnp.moveaxis(y, 0, 1)
    return y.reshape(b, num * c, *y.shape[3:])[:, :n]

  ys = jax.lax.map(fn, jax.tree.map(split, xs))
  return jax.tree.map(merge, ys)


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


def token_stats(
    student_hidden: Array,
    student_head: Array,
    teacher_hidden: Array,
    teacher_head: Array,
    ids: Array,
    *,
    where: Array | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    temperature: float = 1.0,
    jsd_beta: float = 0.5,
    top_k: int = 0,
) -> TokenStats:
  r"""Computes every per-token score the selectors need, in one pass.

  For each position the student and teacher logits
  :math:`z = h W / \tau` are formed chunk by chunk over the sequence, and
  reduced over the vocabulary at once to

  .. math::
    H(p_S),\ H(p_T),\ \mathrm{KL}(p_S \| p_T),\ \mathrm{KL}(p_T \| p_S),\
    \mathrm{JSD}_\beta,\ \log p_S(y),\ \log p_T(y),

  so the peak extra memory is a few ``[B, chunk, V]`` float32 buffers, never
  ``[B, T, V]``. Everything runs under ``stop_gradient``: these are scores,
  not losses.

  Args:
    student_hidden: ``[batch, seq, d_student]`` final-norm hidden states.
    student_head: ``[d_student, vocab]`` student vocabulary head.
    teacher_hidden: ``[batch, seq, d_teacher]`` teacher hidden states.
    teacher_head: ``[d_teacher, vocab]`` teacher vocabulary head.
    ids: int ``[batch, seq]`` sampled response tokens (the targets).
    where: optional boolean ``[batch, seq]`` response mask.
    chunk_size: static number of positions per chunk.
    temperature: softmax temperature for every statistic.
    jsd_beta: teacher weight of the generalized JSD (TRL convention).
    top_k: if > 0, also return the student's top-k ids and the teacher's
      logits there.

  Returns:
    A :class:`TokenStats` of ``[batch, seq]`` float32 arrays.
  """
  check_heads(student_hidden, student_head, teacher_hidden, teacher_head)
  shape = student_hidden.shape[:2]
  if ids.shape != shape or not jnp.issubdtype(ids.dtype, jnp.integer):
    raise ValueError(
        f"ids must be integer with shape {shape}, got {ids.dtype}{ids.shape}."
    )
  if where is not None and jnp.shape(where) != shape:
    raise ValueError(f"where must have shape {shape}, got {jnp.shape(where)}.")
  if top_k < 0 or top_k > student_head.shape[1]:
    raise ValueError(f"top_k must be in [0, vocab], got {top_k}.")
  mask = jnp.ones(shape, bool) if where is None else jnp.asarray(where, bool)
  student_head, teacher_head = jax.lax.stop_gradient(
      (student_head, teacher_head)
  )

  def chunk_stats(chunk):
    hs, ht, y, w = jax.lax.stop_gradient(chunk)
    zs = head_logits(hs, student_head)  # [B, C, V]
    zt = head_logits(ht, teacher_head)  # [B, C, V]
    kw = dict(where=w, temperature=temperature)
    out = dict(
        student_entropy=losses.entropy(zs, **kw),
        teacher_entropy=losses.entropy(zt, **kw),
        reverse_kl=losses.reverse_kl(zs, zt, **kw),
        forward_kl=losses.forward_kl(zs, zt, **kw),
        jsd=losses.generalized_jsd(zs, zt, beta=jsd_beta, **kw),
        student_logprob=jnp.where(
            w, losses.token_logprobs(zs, y, temperature=temperature), 0.0
        ),
        teacher_logprob=jnp.where(
            w, losses.token_logprobs(zt, y, temperature=temperature), 0.0
        ),
    )
    if top_k:
      _, top_ids = jax.lax.top_k(zs, top_k)  # [B, C, k]
      out["student_topk_ids"] = top_ids.astype(jnp.int32)
      out["teacher_logits_at_topk"] = (
          jnp.take_along_axis(zt, top_ids, axis=-1) / temperature
      )
    return out

  out = map_chunks(
      chunk_stats, (student_hidden, teacher_hidden, ids, mask), chunk_size
  )
  return TokenStats(**out)
