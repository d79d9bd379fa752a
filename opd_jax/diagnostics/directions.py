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
"""Logit-space directions at a tree node: the ideal one and each distillation's.

Every function works on the children of N nodes at once: arrays [N, K] over
a node's K candidate next tokens with a `valid` mask [N, K] marking the
visited set K_u. Probabilities are restricted and renormalised to K_u
(docs/methods.md §6(d)2), which is the same as taking the softmax of the logits
of K_u alone; every direction below is then a gradient with respect to
those K_u logits z (tests check each against `jax.grad`):

* ideal (ascent):   g_j = q_j (S_j - S̄),  S̄ = Σ_k q_k S_k
                     = +∂/∂z_j Σ_k q_k S_k;
* reverse KL:       u_j = q_j (a_j - ā),  a = log qT - log q
                     = -∂/∂z_j KL(q ‖ qT);
* forward KL:       u_j = qT_j - q_j       = -∂/∂z_j KL(qT ‖ q);
* single sample:    u_j = a_y (1[j=y] - q_j), y the rollout's token
                     = -∂/∂z_j (-sg(a_y) log q_y), whose mean over y ~ q is
                     the reverse-KL direction;
* return (MiniLLM): the same with a_y replaced by the return
                     R = a_y + Σ_{t>c} r_t along the rollout.

q, qT are the student's and the teacher's renormalised probabilities. Values
on invalid entries are 0; a node with |K_u| < 2 has all-zero directions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

OBJECTIVES = ("rkl", "fkl", "single_sample", "return")


def restricted_log_probs(log_probs: jax.Array, valid: jax.Array) -> jax.Array:
  """Log-probabilities [N, K] renormalised over `valid`; -inf elsewhere."""
  lp = jnp.where(valid, log_probs, -jnp.inf)
  norm = jax.nn.logsumexp(lp, axis=-1, keepdims=True)
  return jnp.where(
      valid, lp - jnp.where(jnp.isfinite(norm), norm, 0.0), -jnp.inf
  )


def _probs(log_probs, valid):
  return jnp.where(valid, jnp.exp(restricted_log_probs(log_probs, valid)), 0.0)


def _centred(q, f, valid):
  """q_j (f_j - Σ_k q_k f_k) on valid entries, 0 elsewhere."""
  f = jnp.where(valid, f, 0.0)
  mean = jnp.sum(q * f, axis=-1, keepdims=True)
  return jnp.where(valid, q * (f - mean), 0.0)


def ideal_direction(
    student_log_probs: jax.Array, success: jax.Array, valid: jax.Array
) -> jax.Array:
  """g_j = q_j (S_j - S̄): the ascent direction of the success probability.

  Args:
    student_log_probs: float [N, K] student log-probs of the children.
    success: float [N, K] success estimates S_k(u).
    valid: bool [N, K], the visited set K_u.

  Returns:
    float [N, K].
  """
  return _centred(_probs(student_log_probs, valid), success, valid)


def log_ratio(student_log_probs, teacher_log_probs, valid):
  """a = log qT - log q [N, K] on K_u (renormalised), 0 elsewhere."""
  a = restricted_log_probs(teacher_log_probs, valid) - restricted_log_probs(
      student_log_probs, valid
  )
  return jnp.where(valid, a, 0.0)


def rkl_direction(student_log_probs, teacher_log_probs, valid):
  """u_j = q_j (a_j - ā): the descent direction of KL(q ‖ qT)."""
  q = _probs(student_log_probs, valid)
  return _centred(
      q, log_ratio(student_log_probs, teacher_log_probs, valid), valid
  )


def fkl_direction(student_log_probs, teacher_log_probs, valid):
  """u_j = qT_j - q_j: the descent direction of KL(qT ‖ q)."""
  return jnp.where(
      valid,
      _probs(teacher_log_probs, valid) - _probs(student_log_probs, valid),
      0.0,
  )


def sampled_direction(student_log_probs, advantage, taken, valid):
  """u_j = A (1[j=y] - q_j): REINFORCE with advantage A [N] at token y.

  Args:
    student_log_probs: float [N, K].
    advantage: float [N], the (stop-gradient) advantage of the taken token.
    taken: bool [N, K], one-hot of the rollout's token y. Where y is not in
      K_u the direction is undefined: NaN.
    valid: bool [N, K].
  """
  q = _probs(student_log_probs, valid)
  onehot = (taken & valid).astype(q.dtype)
  u = advantage[:, None] * (onehot - q)
  defined = jnp.any(taken & valid, axis=-1, keepdims=True)
  return jnp.where(valid, jnp.where(defined, u, jnp.nan), 0.0)


def single_sample_direction(student_log_probs, teacher_log_probs, taken, valid):
  """u_j = a_y (1[j=y] - q_j): the Thinking-Machines sampled estimator."""
  a = log_ratio(student_log_probs, teacher_log_probs, valid)
  a_y = jnp.sum(jnp.where(taken & valid, a, 0.0), axis=-1)
  return sampled_direction(student_log_probs, a_y, taken, valid)


def return_direction(
    student_log_probs, teacher_log_probs, taken, valid, future_return
):
  """u_j = R (1[j=y] - q_j), R = a_y + future log-ratios (MiniLLM).

  Args:
    future_return: float [N], Σ_{t>c} (log pT(y_t) - log pS(y_t)) over the
      rest of the rollout (full-vocabulary log-probs).
  """
  a = log_ratio(student_log_probs, teacher_log_probs, valid)
  a_y = jnp.sum(jnp.where(taken & valid, a, 0.0), axis=-1)
  return sampled_direction(student_log_probs, a_y + future_return, taken, valid)


def directions(
    student_log_probs, teacher_log_probs, taken, valid, future_return
) -> dict[str, jax.Array]:
  """Every objective's update direction, keyed by `OBJECTIVES`."""
  args = (student_log_probs, teacher_log_probs)
  return {
      "rkl": rkl_direction(*args, valid),
      "fkl": fkl_direction(*args, valid),
      "single_sample": single_sample_direction(*args, taken, valid),
      "return": return_direction(*args, taken, valid, future_return),
  }


def cosine(a: jax.Array, b: jax.Array, eps: float = 1e-12) -> jax.Array:
  """cos(a, b) [N] over the last axis; NaN where either vector is ~0."""
  na = jnp.linalg.norm(a, axis=-1)
  nb = jnp.linalg.norm(b, axis=-1)
  cos = jnp.sum(a * b, axis=-1) / jnp.maximum(na * nb, eps)
  return jnp.where((na > eps) & (nb > eps), jnp.clip(cos, -1.0, 1.0), jnp.nan)


def teacher_advantage(student_log_probs, teacher_log_probs, success, valid):
  """A_te(u) = Σ_k qT_k S_k - Σ_k q_k S_k [N] over K_u."""
  s = jnp.where(valid, success, 0.0)
  return jnp.sum(_probs(teacher_log_probs, valid) * s, axis=-1) - jnp.sum(
      _probs(student_log_probs, valid) * s, axis=-1
  )


def node_success(student_log_probs, success, valid):
  """S̄(u) = Σ_k q_k S_k [N] over K_u."""
  return jnp.sum(
      _probs(student_log_probs, valid) * jnp.where(valid, success, 0.0), axis=-1
  )


def distribution_stats(
    student_log_probs: jax.Array, teacher_log_probs: jax.Array
) -> dict[str, jax.Array]:
  """Full-vocabulary node statistics from log-probs [..., V].

  Returns:
    A dict of [...] arrays: `kl` = KL(pS ‖ pT), `l2` = ‖pS - pT‖₂, `cos` =
    cos(pS, pT), `gap` = max_v |pT(v) - pS(v)|, and `rkl_norm` = ‖∂KL(pS ‖
    pT)/∂z‖₂, the norm of the full reverse-KL logit gradient.
  """
  ps, pt = jnp.exp(student_log_probs), jnp.exp(teacher_log_probs)
  # 0 * log 0 terms: where pS underflows to 0 its term is 0, not nan.
  diff = jnp.where(ps > 0, student_log_probs - teacher_log_probs, 0.0)
  kl = jnp.sum(ps * diff, axis=-1)
  grad = ps * (diff - kl[..., None])
  dot = jnp.sum(ps * pt, axis=-1)
  return {
      "kl": kl,
      "l2": jnp.linalg.norm(ps - pt, axis=-1),
      "cos": (
          dot
          / jnp.maximum(
              jnp.linalg.norm(ps, axis=-1) * jnp.linalg.norm(pt, axis=-1), 1e-30
          )
      ),
      "gap": jnp.max(jnp.abs(pt - ps), axis=-1),
      "rkl_norm": jnp.linalg.norm(grad, axis=-1),
  }
