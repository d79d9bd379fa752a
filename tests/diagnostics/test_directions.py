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
"""Alignment directions: closed form, jax.grad of each objective, estimator means."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from opd_jax.diagnostics import directions as D

# Children of one node: 6 candidate slots, of which 4 form K_u. The node's
# full next-token distribution is over a vocabulary of 9.
_VALID = np.asarray([True, True, False, True, True, False])


def _node(seed=0):
  rng = np.random.default_rng(seed)
  zs, zt = rng.normal(size=9) * 1.5, rng.normal(size=9) * 1.5
  kids = np.asarray([4, 0, 7, 2, 8, 5])
  ls = np.asarray(jax.nn.log_softmax(zs))[kids]
  lt = np.asarray(jax.nn.log_softmax(zt))[kids]
  success = rng.uniform(size=6).astype(np.float32)
  return ls[None], lt[None], success[None], _VALID[None]


def _restricted_logits(log_probs):
  """Logits of K_u only: their softmax is the renormalised distribution."""
  return jnp.asarray(log_probs[0][_VALID])


def test_two_token_closed_form():
  """METHODS §6(d): +1 when the teacher backs the only successful token."""
  ls = np.log([[0.5, 0.5], [0.3, 0.7]])
  success = np.asarray([[1.0, 0.0], [1.0, 0.0]])
  valid = np.ones((2, 2), bool)
  on_success = np.log([[0.99, 0.01], [0.99, 0.01]])
  on_failure = np.log([[0.01, 0.99], [0.01, 0.99]])
  g = D.ideal_direction(ls, success, valid)
  p0 = np.exp(ls[:, 0])
  np.testing.assert_allclose(
      g, np.stack([p0 * (1 - p0), -p0 * (1 - p0)], 1), rtol=1e-6
  )
  for teacher, want in ((on_success, 1.0), (on_failure, -1.0)):
    for y in (0, 1):  # either sampled token gives the same sign
      taken = np.zeros((2, 2), bool)
      taken[:, y] = True
      dirs = D.directions(ls, teacher, taken, valid, np.zeros(2))
      for name, u in dirs.items():
        np.testing.assert_allclose(
            D.cosine(g, u), [want, want], atol=1e-6, err_msg=f"{name}, y={y}"
        )
  # Teacher advantage: teacher-weighted minus student-weighted success.
  np.testing.assert_allclose(
      D.teacher_advantage(ls, on_success, success, valid),
      [0.49, 0.69],
      atol=1e-6,
  )


def test_ideal_is_the_gradient_of_expected_success():
  ls, _, s, valid = _node()
  g = np.asarray(D.ideal_direction(ls, s, valid))[0]
  f = lambda z: jnp.sum(jax.nn.softmax(z) * s[0][_VALID])
  np.testing.assert_allclose(
      g[_VALID], jax.grad(f)(_restricted_logits(ls)), atol=1e-6
  )
  assert (g[~_VALID] == 0).all()
  # S̄ is the expected success under the renormalised student.
  np.testing.assert_allclose(
      D.node_success(ls, s, valid), [f(_restricted_logits(ls))], atol=1e-6
  )


@pytest.mark.parametrize("objective", ["rkl", "fkl", "single_sample", "return"])
def test_direction_is_minus_the_gradient_of_its_loss(objective):
  """u_D = -d loss_D / d z over the K_u logits (descent direction)."""
  ls, lt, _, valid = _node(1)
  taken = np.zeros_like(valid)
  taken[0, 3] = True
  future = np.asarray([0.7], np.float32)
  u = np.asarray(D.directions(ls, lt, taken, valid, future)[objective])[0]
  z0 = _restricted_logits(ls)
  log_qt = jax.nn.log_softmax(_restricted_logits(lt))
  y = int(np.flatnonzero(taken[0][_VALID])[0])
  a_y = log_qt[y] - jax.nn.log_softmax(z0)[y]  # a constant (stop-gradient)
  losses = {
      "rkl": lambda z: jnp.sum(
          jax.nn.softmax(z) * (jax.nn.log_softmax(z) - log_qt)
      ),
      "fkl": lambda z: jnp.sum(
          jnp.exp(log_qt) * (log_qt - jax.nn.log_softmax(z))
      ),
      "single_sample": lambda z: -a_y * jax.nn.log_softmax(z)[y],
      "return": lambda z: -(a_y + future[0]) * jax.nn.log_softmax(z)[y],
  }
  np.testing.assert_allclose(
      u[_VALID], -jax.grad(losses[objective])(z0), atol=1e-6
  )
  assert (u[~_VALID] == 0).all()


def test_single_sample_mean_is_the_reverse_kl_direction():
  ls, lt, _, valid = _node(2)
  q = np.exp(np.asarray(D.restricted_log_probs(ls, valid)))[0]
  rkl = np.asarray(D.rkl_direction(ls, lt, valid))[0]
  k = len(q)
  one_hot = np.eye(k, dtype=bool)
  every = np.asarray(
      D.single_sample_direction(
          np.repeat(ls, k, 0),
          np.repeat(lt, k, 0),
          one_hot & _VALID,
          np.repeat(valid, k, 0),
      )
  )
  # Exact expectation over y ~ q: the identity of METHODS §0.
  np.testing.assert_allclose(
      (q[:, None] * np.nan_to_num(every)).sum(0), rkl, atol=1e-6
  )
  # And the mean of actual draws converges to it.
  n = 200_000
  ys = np.random.default_rng(0).choice(k, size=n, p=q)
  mean = np.nan_to_num(every)[ys].mean(0)
  spread = np.nan_to_num(every)[_VALID].std(0).max()
  np.testing.assert_allclose(mean, rkl, atol=5 * spread / np.sqrt(n))
  assert np.abs(rkl).max() > 20 * spread / np.sqrt(n)  # a non-trivial target


def test_taken_token_outside_k_u_is_undefined():
  ls, lt, _, valid = _node()
  taken = np.zeros_like(valid)
  taken[0, 2] = True  # slot 2 is not in K_u
  u = np.asarray(D.single_sample_direction(ls, lt, taken, valid))
  assert np.isnan(u[0, _VALID]).all() and (u[0, ~_VALID] == 0).all()


def test_cosine_and_degenerate_nodes():
  np.testing.assert_allclose(
      D.cosine(jnp.asarray([[1.0, 0.0]]), jnp.asarray([[1.0, 1.0]])),
      [np.sqrt(0.5)],
      rtol=1e-6,
  )
  assert np.isnan(D.cosine(jnp.zeros((1, 3)), jnp.ones((1, 3))))[0]
  # One visited child: every direction is 0 and the alignment undefined.
  ls, lt, s, _ = _node()
  valid = np.zeros_like(_VALID)[None]
  valid[0, 1] = True
  g = D.ideal_direction(ls, s, valid)
  assert not np.asarray(g).any()
  assert np.isnan(D.cosine(g, D.rkl_direction(ls, lt, valid)))[0]


def test_distribution_stats_against_numpy():
  rng = np.random.default_rng(3)
  zs, zt = rng.normal(size=(4, 11)) * 2, rng.normal(size=(4, 11)) * 2
  ls, lt = jax.nn.log_softmax(zs), jax.nn.log_softmax(zt)
  got = D.distribution_stats(ls, lt)
  ps = np.exp(np.asarray(ls, np.float64))
  pt = np.exp(np.asarray(lt, np.float64))
  kl = (ps * (np.log(ps) - np.log(pt))).sum(-1)
  np.testing.assert_allclose(got["kl"], kl, rtol=1e-5)
  np.testing.assert_allclose(
      got["l2"], np.linalg.norm(ps - pt, axis=-1), rtol=1e-5
  )
  cos = (
      (ps * pt).sum(-1)
      / np.linalg.norm(ps, axis=-1)
      / np.linalg.norm(pt, axis=-1)
  )
  np.testing.assert_allclose(got["cos"], cos, rtol=1e-5)
  np.testing.assert_allclose(got["gap"], np.abs(pt - ps).max(-1), rtol=1e-5)
  kl_of = lambda z, t: jnp.sum(jax.nn.softmax(z) * (jax.nn.log_softmax(z) - t))
  grads = jax.vmap(jax.grad(kl_of))(jnp.asarray(zs), lt)
  np.testing.assert_allclose(
      got["rkl_norm"], np.linalg.norm(grads, axis=-1), rtol=1e-4
  )
