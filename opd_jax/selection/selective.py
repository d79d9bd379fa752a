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
"""Divergence loss through the vocabulary heads at selected positions."""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from opd_jax import losses
from opd_jax.selection import stats

Array = jax.Array

DIVERGENCES: dict[str, Callable[..., Array]] = {
    "reverse_kl": losses.reverse_kl,
    "forward_kl": losses.forward_kl,
    "jsd": losses.generalized_jsd,
    "tvd": losses.total_variation,
    "skew_forward_kl": losses.skew_forward_kl,
    "skew_reverse_kl": losses.skew_reverse_kl,
}


def gather_positions(x: Array, index: Array) -> Array:
  """Gathers sequence positions per row: ``out[b, k] = x[b, index[b, k]]``.

  Out-of-range indices are clipped (padded slots should carry weight 0).
  The gradient scatters back into ``[B, T, ...]``, which is cheap: no
  vocabulary axis is involved.

  Args:
    x: ``[batch, seq, ...]`` array, e.g. hidden states ``[B, T, D]``.
    index: integer ``[batch, k]`` positions.

  Returns:
    ``[batch, k, ...]`` array.
  """
  if x.ndim < 2:
    raise ValueError(f"x must be [batch, seq, ...], got shape {x.shape}.")
  if index.ndim != 2 or index.shape[0] != x.shape[0]:
    raise ValueError(
        f"index must be [batch={x.shape[0]}, k], got shape {index.shape}."
    )
  if not jnp.issubdtype(index.dtype, jnp.integer):
    raise TypeError(f"index must be integer, got dtype {index.dtype}.")
  return jax.vmap(lambda xb, ib: jnp.take(xb, ib, axis=0, mode="clip"))(
      x, index
  )


def mask_to_index(mask: Array, k: int) -> tuple[Array, Array]:
  """Turns a [B, T] selection mask into a static-size gather index.

  Positions are ranked by ``(mask != 0) * T - t`` with ``lax.top_k``, so the
  selected positions come first, earliest first; if a row has more than
  ``k`` selected positions only its earliest ``k`` are kept. Slots beyond a
  row's selection point at unselected positions and get weight 0.

  Args:
    mask: ``[batch, seq]`` 0/1 (boolean or weight) selection mask.
    k: static number of slots per row.

  Returns:
    ``(index, index_weights)``: int32 ``[batch, k]`` positions and float32
    ``[batch, k]`` mask values at those positions (0 for padded slots).
  """
  if mask.ndim != 2:
    raise ValueError(f"mask must be [batch, seq], got shape {mask.shape}.")
  t = mask.shape[1]
  if not 1 <= k <= t:
    raise ValueError(f"k must be in [1, seq={t}], got {k}.")
  # Integer scores are exact for any T; selected rows score in [1, T],
  # unselected in [1 - T, 0].
  score = (mask != 0).astype(jnp.int32) * t - jnp.arange(t, dtype=jnp.int32)
  _, index = jax.lax.top_k(score, k)
  index = index.astype(jnp.int32)
  weights = jnp.take_along_axis(mask.astype(jnp.float32), index, axis=1)
  return index, weights


def _divergence_fn(
    divergence: str, divergence_kwargs: Mapping[str, Any] | None
) -> Callable[..., Array]:
  if divergence not in DIVERGENCES:
    raise ValueError(
        f"divergence must be one of {sorted(DIVERGENCES)}, got"
        f" {divergence!r}."
    )
  return functools.partial(DIVERGENCES[divergence], **(divergence_kwargs or {}))


def head_divergence(
    student_hidden: Array,
    student_head: Array,
    teacher_hidden: Array,
    teacher_head: Array,
    where: Array,
    *,
    divergence: str = "reverse_kl",
    divergence_kwargs: Mapping[str, Any] | None = None,
    temperature: float = 1.0,
    chunk_size: int | None = None,
) -> Array:
  r"""Per-position divergence between the two heads' distributions.

  .. math::
    d_{bn} = D(\mathrm{softmax}(h^S_{bn} W_S / \tau),
      \mathrm{softmax}(h^T_{bn} W_T / \tau)),

  differentiable in the student side only. With ``chunk_size`` set, the N
  positions are processed in chunks under ``jax.checkpoint``: the backward
  pass recomputes each chunk's logits instead of keeping ``[B, N, V]``
  residuals.

  Args:
    student_hidden: ``[batch, n, d_student]``.
    student_head: ``[d_student, vocab]``.
    teacher_hidden: ``[batch, n, d_teacher]`` (no gradient flows into it).
    teacher_head: ``[d_teacher, vocab]`` (no gradient flows into it).
    where: boolean ``[batch, n]``; False positions give 0 with zero gradient.
    divergence: a key of :data:`DIVERGENCES`.
    divergence_kwargs: extra keyword arguments, e.g. ``{'beta': 0.5}``.
    temperature: softmax temperature of both heads.
    chunk_size: positions per chunk, or None for one dense ``[B, N, V]``.

  Returns:
    float32 ``[batch, n]`` divergences.
  """
  stats.check_heads(student_hidden, student_head, teacher_hidden, teacher_head)
  div_fn = _divergence_fn(divergence, divergence_kwargs)
  teacher_hidden, teacher_head = jax.lax.stop_gradient(
      (teacher_hidden, teacher_head)
  )

  def chunk_divergence(chunk):
    hs, ht, w = chunk
    zs = stats.head_logits(hs, student_head)  # [B, C, V]
    zt = stats.head_logits(ht, teacher_head)  # [B, C, V]
    return div_fn(zs, zt, where=w, temperature=temperature)

  xs = (student_hidden, teacher_hidden, jnp.asarray(where, bool))
  if chunk_size is None or chunk_size >= student_hidden.shape[1]:
    return chunk_divergence(xs)
  return stats.map_chunks(jax.checkpoint(chunk_divergence), xs, chunk_size)


def selective_divergence_loss(
    student_hidden: Array,
    student_head: Array,
    teacher_hidden: Array,
    teacher_head: Array,
    index: Array,
    index_weights: Array,
    *,
    divergence: str = "reverse_kl",
    divergence_kwargs: Mapping[str, Any] | None = None,
    temperature: float = 1.0,
    reduction: str = "token_mean",
    chunk_size: int | None = stats.DEFAULT_CHUNK_SIZE,
) -> losses.WeightedMean:
  r"""Divergence loss on K selected positions per sequence only.

  Gathers the selected hidden states, applies both heads there (the student
  with gradient, the teacher without) and reduces

  .. math::
    L = \frac{\sum_{b,k} w_{bk}\, D(p_S, p_T)_{b,\,i_{bk}}}
      {\sum_{b,k} w_{bk}}

  (for ``token_mean``). The heads run on K positions instead of T, which
  saves head FLOPs in proportion. For memory, the K positions are further
  processed in checkpointed chunks by default: unchunked (``chunk_size=None``)
  the loss holds about five float32 ``[B, K, V]`` buffers (logits, shifted
  logits, exponentials, log-ratios, the logit gradient), i.e. rho times the
  naive full-logit step (see BENCHMARKS.md).

  Args:
    student_hidden: ``[batch, seq, d_student]`` final-norm hidden states.
    student_head: ``[d_student, vocab]``.
    teacher_hidden: ``[batch, seq, d_teacher]``.
    teacher_head: ``[d_teacher, vocab]``.
    index: int ``[batch, k]`` selected positions (static k).
    index_weights: float ``[batch, k]`` weights, 0 for padded slots.
    divergence: a key of :data:`DIVERGENCES`.
    divergence_kwargs: extra keyword arguments of the divergence.
    temperature: softmax temperature of both heads.
    reduction: ``'token_mean'``, ``'seq_mean'`` or ``'sum'``.
    chunk_size: positions per checkpointed chunk of the K selected ones, or
      None for one dense ``[B, K, V]`` computation.

  Returns:
    A :class:`~opd_jax.losses.WeightedMean`; ``.value()`` is the loss.
  """
  if index_weights.shape != index.shape:
    raise ValueError(
        f"index_weights must have the index shape {index.shape}, got"
        f" {index_weights.shape}."
    )
  values = head_divergence(
      gather_positions(student_hidden, index),
      student_head,
      gather_positions(jax.lax.stop_gradient(teacher_hidden), index),
      teacher_head,
      index_weights != 0,
      divergence=divergence,
      divergence_kwargs=divergence_kwargs,
      temperature=temperature,
      chunk_size=chunk_size,
  )
  return losses.reduce(values, index_weights, reduction)


def dense_divergence_loss(
    student_hidden: Array,
    student_head: Array,
    teacher_hidden: Array,
    teacher_head: Array,
    weights: Array,
    *,
    divergence: str = "reverse_kl",
    divergence_kwargs: Mapping[str, Any] | None = None,
    temperature: float = 1.0,
    reduction: str = "token_mean",
    chunk_size: int | None = stats.DEFAULT_CHUNK_SIZE,
) -> losses.WeightedMean:
  """Divergence loss on every position (rho = 1), weighted by ``weights``.

  The same per-chunk code as :func:`selective_divergence_loss` without the
  gather; by default chunked over T under ``jax.checkpoint`` so that neither
  the forward nor the backward pass holds ``[B, T, V]``.

  Args:
    student_hidden: ``[batch, seq, d_student]``.
    student_head: ``[d_student, vocab]``.
    teacher_hidden: ``[batch, seq, d_teacher]``.
    teacher_head: ``[d_teacher, vocab]``.
    weights: ``[batch, seq]`` response mask or token weights.
    divergence: a key of :data:`DIVERGENCES`.
    divergence_kwargs: extra keyword arguments of the divergence.
    temperature: softmax temperature of both heads.
    reduction: ``'token_mean'``, ``'seq_mean'`` or ``'sum'``.
    chunk_size: positions per chunk, or None for the unchunked computation.

  Returns:
    A :class:`~opd_jax.losses.WeightedMean`.
  """
  if weights.shape != student_hidden.shape[:2]:
    raise ValueError(
        f"weights must have shape {student_hidden.shape[:2]}, got"
        f" {weights.shape}."
    )
  values = head_divergence(
      student_hidden,
      student_head,
      teacher_hidden,
      teacher_head,
      weights != 0,
      divergence=divergence,
      divergence_kwargs=divergence_kwargs,
      temperature=temperature,
      chunk_size=chunk_size,
  )
  return losses.reduce(values, weights, reduction)
