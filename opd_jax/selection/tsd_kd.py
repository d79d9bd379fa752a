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
"""TSD-KD's token selection: confidence gate, opener, entropy-min set.

Pure ``[B, T]`` selection, chosen without gradient; the losses over these
sets (Plackett–Luce over the opener, entropy minimisation over the EM set,
the whole objective) live in :mod:`opd_jax.methods.tsd_kd` and
:mod:`opd_jax.losses.ranking`.

References:
  Kim & Baek, "Explain in Your Own Words: Token-Selective Dual Knowledge
  Distillation", ICLR 2026, arXiv 2603.13260 (code: kmswin1/TSD-KD).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from opd_jax.selection import selectors

Array = jax.Array
ArrayLike = Any


def _check_like(name: str, x: ArrayLike, shape: tuple[int, ...]) -> Array:
  x = selectors.check_scores(name, x)
  if x.shape != shape:
    raise ValueError(f"{name} must have shape {shape}, got {x.shape}.")
  return x


def confidence_gate(
    student_entropy: ArrayLike,
    teacher_entropy: ArrayLike,
    *,
    tau: float = 1.0,
) -> Array:
  r"""Relative-confidence gate of the direct (JSD) term.

  .. math::
    w_t = \mathrm{sg}\big(\sigma((H^S_t - H^T_t) / \tau)\big)

  Near 1 where the student is uncertain and the teacher confident.

  Args:
    student_entropy: ``[batch, seq]`` :math:`H^S`.
    teacher_entropy: ``[batch, seq]`` :math:`H^T`.
    tau: gate temperature (the code uses 1).

  Returns:
    ``[batch, seq]`` float32 gate, without gradient.
  """
  hs = selectors.check_scores("student_entropy", student_entropy)
  ht = _check_like("teacher_entropy", teacher_entropy, hs.shape)
  if not tau > 0:
    raise ValueError(f"tau must be > 0, got {tau}.")
  diff = hs.astype(jnp.float32) - ht.astype(jnp.float32)
  return jax.lax.stop_gradient(jax.nn.sigmoid(diff / tau))


def _flat_opener(e: Array, mask: Array, c: float) -> Array:
  """The code's opener of one group ``[rows, T]``: positions ``t < n*``."""
  flat, flat_mask = e.reshape(-1), mask.reshape(-1)
  total = jnp.sum(flat)
  frac = jnp.cumsum(flat) / jnp.where(total > 0, total, 1.0)
  reached = flat_mask & (frac >= c) & (total > 0)
  # The cumulative fraction is non-decreasing, so the valid entries below c
  # are exactly those before the first reaching one: their count is its
  # index among valid entries. The code's argmax gives 0 when none reaches.
  n_star = jnp.where(
      jnp.any(reached),
      jnp.sum(flat_mask & (frac < c), dtype=jnp.int32),
      0,
  )
  return mask & (jnp.arange(e.shape[-1])[None, :] < n_star)


def _per_group(fn, x: Array, mask: Array, rows: int) -> Array:
  """``fn(x_g, mask_g)`` on each consecutive group of ``rows`` rows of
  ``[B, T]`` arrays, results stacked back to ``[B, ...]``; the last group is
  padded with invalid rows (no entropy, no validity: they change nothing)."""
  b, t = x.shape
  groups = -(-b // rows)
  pad = ((0, groups * rows - b), (0, 0))
  xg = jnp.pad(x, pad).reshape(groups, rows, t)
  mg = jnp.pad(mask, pad).reshape(groups, rows, t)
  out = jax.vmap(fn)(xg, mg)
  return out.reshape(groups * rows, *out.shape[2:])[:b]


def _check_group_rows(group_rows: Any) -> int:
  if isinstance(group_rows, bool) or not isinstance(group_rows, int):
    raise TypeError(f"group_rows must be an int, got {group_rows!r}.")
  if group_rows < 0:
    raise ValueError(f"group_rows must be >= 0, got {group_rows}.")
  return group_rows


def opener_mask(
    student_entropy: ArrayLike,
    mask: ArrayLike,
    *,
    threshold: float = 0.1,
    batch_flat: bool = False,
    group_rows: int = 0,
) -> Array:
  r"""The opener: the prefix holding the first ``threshold`` of the entropy.

  Per sequence (paper, default), with :math:`c_b[t] = \sum_{u \le t} H_u m_u /
  \sum_u H_u m_u`:

  .. math::
    \mathrm{opener}_{b,t} = m_{b,t}\,[c_b[t - 1] < c], \quad c_b[-1] = 0,

  which includes the first position reaching c. A sequence whose entropy sums
  to 0 is all opener.

  ``batch_flat=True`` is the released code's rule on the whole batch: the
  valid entropies are flattened row-major, ``n*`` = the (0-based) index of
  the first one whose cumulative fraction reaches c (0 if none does), and
  every sequence keeps its valid positions ``t < n*``. ``group_rows=G``
  applies that rule to each consecutive group of G rows, as the code does to
  each micro-batch it is given (4 rows per device in its launch script):
  one ``n*`` per group.

  Args:
    student_entropy: ``[batch, seq]`` :math:`H^S` (stop-gradient is applied).
    mask: ``[batch, seq]`` bool validity.
    threshold: the cumulative-entropy fraction c, in [0, 1].
    batch_flat: the code's rule over the whole batch.
    group_rows: the code's rule per group of this many rows (0: off).

  Returns:
    ``[batch, seq]`` bool.
  """
  hs = selectors.check_scores("student_entropy", student_entropy)
  mask = selectors.check_mask(mask, hs.shape)
  c = selectors.check_fraction("threshold", threshold)
  if _check_group_rows(group_rows) and batch_flat:
    raise ValueError(
        "batch_flat and group_rows are two openers: set one, got"
        f" batch_flat=True and group_rows={group_rows}."
    )
  e = jnp.where(mask, jax.lax.stop_gradient(hs).astype(jnp.float32), 0.0)
  if batch_flat:
    return _flat_opener(e, mask, c)
  if group_rows:
    return _per_group(lambda x, m: _flat_opener(x, m, c), e, mask, group_rows)
  total = jnp.sum(e, axis=-1, keepdims=True)
  cum = jnp.cumsum(e, axis=-1) / jnp.where(total > 0, total, 1.0)
  before = jnp.pad(cum[:, :-1], ((0, 0), (1, 0)))
  return mask & (before < c)


EM_RULES = ("top", "quantile")


def entropy_min_set(
    student_entropy: ArrayLike,
    mask: ArrayLike,
    *,
    ratio: float = 0.1,
    rule: str = "top",
    group_rows: int = 0,
) -> Array:
  """The EM set, chosen under stop-gradient over the valid tokens of the batch.

  ``rule="top"`` (the paper's text): the top ``ceil(ratio * N_valid)``
  entropies, exact in size (ties go to the earlier row-major position).
  ``rule="quantile"`` (the released code): every valid token whose entropy
  is at least the ``1 - ratio`` quantile of the valid entropies (linear
  interpolation, as ``torch.quantile``); the code passes its threshold 0.1
  as that quantile, i.e. ``ratio = 0.9``, and keeps ties. ``group_rows=G``
  takes that quantile per consecutive group of G rows, as the code does per
  micro-batch (quantile rule only). ``ratio = 0`` is the empty set under
  both rules.

  Args:
    student_entropy: ``[batch, seq]`` :math:`H^S`.
    mask: ``[batch, seq]`` bool validity.
    ratio: kept fraction of valid tokens, in [0, 1].
    rule: "top" or "quantile".
    group_rows: rows per quantile group (0: the whole batch).

  Returns:
    ``[batch, seq]`` bool.
  """
  if rule not in EM_RULES:
    raise ValueError(f"rule must be one of {EM_RULES}, got {rule!r}.")
  if _check_group_rows(group_rows) and rule != "quantile":
    raise ValueError(
        f"group_rows={group_rows} needs rule='quantile', got {rule!r}."
    )
  if rule == "top":
    return selectors.global_top_fraction(student_entropy, mask, ratio)
  hs = selectors.check_scores("student_entropy", student_entropy)
  mask = selectors.check_mask(mask, hs.shape)
  ratio = selectors.check_fraction("ratio", ratio)
  if ratio == 0:
    return jnp.zeros(hs.shape, bool)
  hs = jax.lax.stop_gradient(hs).astype(jnp.float32)

  def above(x, m):
    return m & (x >= selectors.masked_quantile(x, m, 1.0 - ratio))

  return (
      _per_group(above, hs, mask, group_rows) if group_rows else above(hs, mask)
  )
