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
"""Fused per-token statistics of student and teacher, one chunked head pass."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from opd_jax import losses
from opd_jax.heads import chunked

Array = jax.Array


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


def token_stats(
    student_hidden: Array,
    student_head: Array,
    teacher_hidden: Array,
    teacher_head: Array,
    ids: Array,
    *,
    where: Array | None = None,
    chunk_size: int | None = chunked.DEFAULT_CHUNK_SIZE,
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
    chunk_size: static number of positions per chunk, or None for one
      dense pass.
    temperature: softmax temperature for every statistic.
    jsd_beta: teacher weight of the generalized JSD (TRL convention).
    top_k: if > 0, also return the student's top-k ids and the teacher's
      logits there.

  Returns:
    A :class:`TokenStats` of ``[batch, seq]`` float32 arrays.
  """
  chunked.check_heads(
      student_hidden, student_head, teacher_hidden, teacher_head
  )
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

  def chunk_stats(zs, zt, y, w):  # zs, zt: [B, C, V]
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

  out = chunked.head_pass(
      chunk_stats,
      student_hidden,
      student_head,
      teacher_hidden,
      teacher_head,
      ids,
      mask,
      chunk_size=chunk_size,
      student_grad=False,
  )
  return TokenStats(**out)
