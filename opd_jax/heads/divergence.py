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

import dataclasses
import functools
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from opd_jax import losses
from opd_jax.heads import chunked
from opd_jax.selection.selectors import gather_positions

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Divergence:
  """One divergence the methods can name: everything about it in one place.

  Attributes:
    name: its config value (``config.<method>.loss_pass.divergence``, and
      ``score_divergence`` where it can score tokens), e.g. 'reverse_kl'.
    short: its metric name (``loss/<short>``, ``div/<short>_all``), e.g.
      'rkl'.
    fn: the pure function of `opd_jax.losses`, ``(student_logits,
      teacher_logits, *, where, temperature, axis, **params) -> [B, T]``.
    params: (loss-pass field, keyword of ``fn``) pairs: the settings it
      takes, e.g. ``(("jsd_beta", "beta"),)``.
    token_stat: the `heads.TokenStats` field holding its per-token value
      (a stats pass scores tokens by it), or None: it cannot score tokens.
  """

  name: str
  short: str
  fn: Callable[..., Array]
  params: tuple[tuple[str, str], ...] = ()
  token_stat: str | None = None

  def kwargs(self, settings: Any) -> dict[str, Any]:
    """``fn``'s extra keyword arguments, read off `settings`' fields."""
    return {kw: getattr(settings, field) for field, kw in self.params}


DIVERGENCES: dict[str, Divergence] = {
    d.name: d
    for d in (
        Divergence(
            "reverse_kl", "rkl", losses.reverse_kl, token_stat="reverse_kl"
        ),
        Divergence(
            "forward_kl", "fkl", losses.forward_kl, token_stat="forward_kl"
        ),
        Divergence(
            "jsd",
            "jsd",
            losses.generalized_jsd,
            params=(("jsd_beta", "beta"),),
            token_stat="jsd",
        ),
        Divergence("tvd", "tvd", losses.total_variation),
        Divergence(
            "skew_forward_kl",
            "skew_fkl",
            losses.skew_forward_kl,
            params=(("skew_alpha", "alpha"),),
        ),
        Divergence(
            "skew_reverse_kl",
            "skew_rkl",
            losses.skew_reverse_kl,
            params=(("skew_alpha", "alpha"),),
        ),
    )
}


def divergence_record(name: str) -> Divergence:
  """The record of divergence `name`; ValueError naming the allowed ones."""
  if name not in DIVERGENCES:
    raise ValueError(
        f"divergence must be one of {sorted(DIVERGENCES)}, got {name!r}."
    )
  return DIVERGENCES[name]


def _divergence_fn(
    name: str, divergence_kwargs: Mapping[str, Any] | None
) -> Callable[..., Array]:
  return functools.partial(
      divergence_record(name).fn, **(divergence_kwargs or {})
  )


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
  div_fn = _divergence_fn(divergence, divergence_kwargs)
  return chunked.head_pass(
      lambda zs, zt, w: div_fn(zs, zt, where=w, temperature=temperature),
      student_hidden,
      student_head,
      teacher_hidden,
      teacher_head,
      jnp.asarray(where, bool),
      chunk_size=chunk_size,
  )


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
    chunk_size: int | None = chunked.DEFAULT_CHUNK_SIZE,
    clip: float = 0.0,
) -> losses.WeightedMean:
  r"""Divergence loss on K selected positions per sequence only.

  Gathers the selected hidden states, applies both heads there (the student
  with gradient, the teacher without) and reduces

  .. math::
    L = \frac{\sum_{b,k} w_{bk}\, D(p_S, p_T)_{b,\,i_{bk}}}
      {\sum_{b,k} w_{bk}}

  (for ``token_mean``). The heads run on K positions instead of T, which
  saves head FLOPs in proportion. For memory, the K positions are further
  processed in chunks by default (`chunked.weighted_head_pass`: each
  chunk's logits are formed once and its gradient taken right there, so
  only one chunk's ``[B, C, V]`` buffers are live and nothing is
  recomputed); unchunked (``chunk_size=None``) the loss holds about five
  float32 ``[B, K, V]`` buffers (logits, shifted logits, exponentials,
  log-ratios, the logit gradient), i.e. rho times the naive full-logit
  step (see BENCHMARKS.md).

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
    chunk_size: positions per chunk of the K selected ones, or
      None for one dense ``[B, K, V]`` computation.
    clip: when > 0, each position's divergence is clipped at it
      (``min(D, clip)``: a token above it adds ``clip`` and no gradient),
      the pointwise clip OPSD adds against style tokens of huge KL.

  Returns:
    A :class:`~opd_jax.losses.WeightedMean`; ``.value()`` is the loss.
  """
  if index_weights.shape != index.shape:
    raise ValueError(
        f"index_weights must have the index shape {index.shape}, got"
        f" {index_weights.shape}."
    )
  return dense_divergence_loss(
      gather_positions(student_hidden, index),
      student_head,
      gather_positions(jax.lax.stop_gradient(teacher_hidden), index),
      teacher_head,
      index_weights,
      divergence=divergence,
      divergence_kwargs=divergence_kwargs,
      temperature=temperature,
      reduction=reduction,
      chunk_size=chunk_size,
      clip=clip,
  )


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
    chunk_size: int | None = chunked.DEFAULT_CHUNK_SIZE,
    clip: float = 0.0,
) -> losses.WeightedMean:
  """Divergence loss on every position (rho = 1), weighted by ``weights``.

  ``reduce(D, weights, reduction)`` with its gradient formed in the
  forward pass (`chunked.weighted_head_pass`): every reduction is linear in
  the values, so its total is the sum of ``coeff * D`` with ``coeff`` its
  gradient in the values; the reported total is the reduction's own, the
  gradient the fused pass's. :func:`selective_divergence_loss` is this on
  the gathered positions. By default chunked over T so that neither the
  forward nor the backward pass holds ``[B, T, V]``.

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
    clip: when > 0, each position's divergence is clipped at it.

  Returns:
    A :class:`~opd_jax.losses.WeightedMean`.
  """
  if weights.shape != student_hidden.shape[:2]:
    raise ValueError(
        f"weights must have shape {student_hidden.shape[:2]}, got"
        f" {weights.shape}."
    )
  div_fn = _divergence_fn(divergence, divergence_kwargs)

  def per_position(zs, zt, where):
    d = div_fn(zs, zt, where=where, temperature=temperature)
    return jnp.minimum(d, clip) if clip > 0 else d

  coeff = jax.grad(lambda v: losses.reduce(v, weights, reduction).total)(
      jnp.zeros(weights.shape, jnp.float32)
  )
  values, fused_total = chunked.weighted_head_pass(
      per_position,
      student_hidden,
      student_head,
      teacher_hidden,
      teacher_head,
      coeff,
      weights != 0,
      chunk_size=chunk_size,
  )
  sg = jax.lax.stop_gradient
  total = losses.reduce(values, sg(weights), reduction).total
  count = losses.reduce(values, weights, reduction).count
  return losses.WeightedMean(total + (fused_total - sg(fused_total)), count)
