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
"""TOPD's measurement: the OT distance of two token windows in an embedding.

Used by TOPD's pre-update stage (:mod:`opd_jax.methods.topd_stage`,
docs/methods.md §5(e)) to tell a candidate whose teacher and student
continuations mean different things (high OT) from one that only differs
in surface form. It scores states for one method rather than selecting
``[B, T]`` tokens, so it lives beside that method, not in
:mod:`opd_jax.selection`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def cosine_cost(x: Array, y: Array, *, eps: float = 1e-12) -> Array:
  r"""The ground cost :math:`C_{ij} = 1 - \cos(x_i, y_j)`.

  Args:
    x: ``[..., K, D]`` vectors.
    y: ``[..., L, D]`` vectors.
    eps: guards the norm of an all-zero vector (its cosine is then 0).

  Returns:
    float32 ``[..., K, L]`` costs in [0, 2].

  Examples:
    >>> import jax.numpy as jnp
    >>> cosine_cost(jnp.eye(2), jnp.eye(2)).tolist()
    [[0.0, 1.0], [1.0, 0.0]]
  """
  x = jnp.asarray(x, jnp.float32)
  y = jnp.asarray(y, jnp.float32)
  unit = lambda v: v / jnp.maximum(
      jnp.linalg.norm(v, axis=-1, keepdims=True), eps
  )
  cos = jnp.einsum("...kd,...ld->...kl", unit(x), unit(y))
  return jnp.clip(1.0 - cos, 0.0, 2.0)


def window_ot_distance(
    x_emb: Array,
    x_mask: Array,
    y_emb: Array,
    y_mask: Array,
    *,
    epsilon: float = 0.05,
    max_iterations: int = 100,
    threshold: float = 1e-3,
) -> Array:
  r"""Entropic OT cost between two windows of embedded tokens, per row.

  With uniform masses on each window's valid tokens,
  :math:`a_i = m^x_i / \sum m^x`, :math:`b_j = m^y_j / \sum m^y`, and the
  cosine cost :math:`C` (:func:`cosine_cost`), the entropic plan

  .. math::
    P_\varepsilon = \arg\min_{P \in U(a, b)} \langle P, C \rangle
      - \varepsilon H(P)

  is found by log-domain Sinkhorn (``ott-jax``) and the distance is its
  transport cost :math:`\langle P_\varepsilon, C \rangle`, which tends to
  the exact OT cost as :math:`\varepsilon \to 0`. It is ~0 for identical
  windows, symmetric, and small for windows of different ids whose
  embeddings nearly coincide (a surface-form difference). Rows with an
  empty window give 0 (mask them downstream).

  Args:
    x_emb: ``[M, K, D]`` embeddings of the first windows.
    x_mask: bool ``[M, K]`` their valid tokens.
    y_emb: ``[M, L, D]`` embeddings of the second windows.
    y_mask: bool ``[M, L]``.
    epsilon: absolute entropic regularisation (costs lie in [0, 2]).
    max_iterations: Sinkhorn iteration cap (static).
    threshold: marginal-error tolerance that stops the iterations early.

  Returns:
    float32 ``[M]`` distances.

  References:
    Cuturi, "Sinkhorn Distances: Lightspeed Computation of Optimal
    Transport", NeurIPS 2013.
  """
  # ott-jax (with equinox / lineax) takes seconds to import: only the
  # methods that measure windows pay for it.
  from ott.geometry import geometry  # pylint: disable=g-import-not-at-top
  from ott.problems.linear import linear_problem  # pylint: disable=g-import-not-at-top
  from ott.solvers.linear import sinkhorn  # pylint: disable=g-import-not-at-top

  if x_emb.ndim != 3 or y_emb.ndim != 3 or x_emb.shape[0] != y_emb.shape[0]:
    raise ValueError(
        "x_emb [M, K, D] and y_emb [M, L, D] must share M, got"
        f" {x_emb.shape} and {y_emb.shape}."
    )
  if x_mask.shape != x_emb.shape[:2] or y_mask.shape != y_emb.shape[:2]:
    raise ValueError(
        f"masks must be [M, K] and [M, L], got {x_mask.shape} and"
        f" {y_mask.shape} for embeddings {x_emb.shape}, {y_emb.shape}."
    )
  cost = cosine_cost(x_emb, y_emb)  # [M, K, L]
  x_mask, y_mask = jnp.asarray(x_mask, bool), jnp.asarray(y_mask, bool)
  present = x_mask.any(axis=1) & y_mask.any(axis=1)  # [M]

  def masses(mask):
    # An empty window gets uniform dummy masses so Sinkhorn stays finite;
    # its distance is zeroed below.
    mask = jnp.where(mask.any(axis=1, keepdims=True), mask, True)
    m = mask.astype(jnp.float32)
    return m / m.sum(axis=1, keepdims=True)

  solver = sinkhorn.Sinkhorn(
      max_iterations=int(max_iterations),
      threshold=float(threshold),
      min_iterations=0,
      inner_iterations=1,
  )

  def one(c, a, b):
    geom = geometry.Geometry(cost_matrix=c, epsilon=float(epsilon))
    plan = solver(linear_problem.LinearProblem(geom, a, b)).matrix
    return jnp.sum(plan * c)

  dist = jax.vmap(one)(cost, masses(x_mask), masses(y_mask))
  return jnp.where(present, dist, 0.0)
