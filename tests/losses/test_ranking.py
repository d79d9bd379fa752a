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
"""Tests for the Plackett–Luce (ListMLE) ranking loss."""

import itertools

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from opd_jax import losses
from tsd_kd_reference import K
from tsd_kd_reference import np_pl_nll as _np_pl_nll


class PlackettLuceTest(parameterized.TestCase):

  def test_paper_gradient_raises_teachers_favourite(self):
    zs = jnp.zeros((1, 1, 4))
    zt = jnp.array([[[4.0, 3.0, 2.0, 1.0]]])
    grad = lambda cc: jax.grad(
        lambda z: jnp.sum(losses.plackett_luce_nll(z, zt, code_compat=cc))
    )(zs)[0, 0]
    paper, code = grad(False), grad(True)
    want = np.array([-3 / 4, -3 / 4 + 1 / 3, -3 / 4 + 1 / 3 + 1 / 2, 13 / 12])
    np.testing.assert_allclose(paper, want, atol=1e-6)
    np.testing.assert_allclose(paper, [-0.75, -0.42, 0.08, 1.08], atol=5e-3)
    np.testing.assert_allclose(code, paper[::-1], atol=1e-6)
    self.assertLess(float(paper[0]), 0.0)

  def test_gradient_follows_teacher_order(self):
    zs = jnp.zeros((1, 1, 4))
    zt = jnp.array([[[1.0, 4.0, 2.0, 3.0]]])  # Ranks: idx 1, 3, 2, 0.
    grad = jax.grad(lambda z: jnp.sum(losses.plackett_luce_nll(z, zt)))(zs)[
        0, 0
    ]
    want = np.array([-0.75, -0.75 + 1 / 3, -0.75 + 1 / 3 + 1 / 2, 13 / 12])
    np.testing.assert_allclose(grad[np.array([1, 3, 2, 0])], want, atol=1e-6)

  @parameterized.parameters(False, True)
  def test_matches_numpy(self, code_compat):
    rng = np.random.default_rng(3)
    zs = rng.normal(size=(2, 3, K)).astype(np.float32)
    zt = rng.normal(size=(2, 3, K)).astype(np.float32)
    got = losses.plackett_luce_nll(
        zs, zt, temperature=2.0, code_compat=code_compat
    )
    for b, t in itertools.product(range(2), range(3)):
      order = np.argsort(-zt[b, t], kind="stable")
      want = _np_pl_nll(zs[b, t][order] / 2.0, reverse=not code_compat)
      self.assertAlmostEqual(float(got[b, t]), want, places=4)

  def test_nll_is_minus_log_probability_of_a_permutation(self):
    # Paper direction: exp(-nll) over all k! orders sums to one.
    s = np.array([0.3, -1.0, 2.0, 0.5], np.float32)
    total = 0.0
    for perm in itertools.permutations(range(4)):
      zt = np.zeros(4, np.float32)
      zt[list(perm)] = np.arange(4, 0, -1)
      total += np.exp(
          -float(losses.plackett_luce_nll(s[None, None], zt[None, None])[0, 0])
      )
    self.assertAlmostEqual(total, 1.0, places=5)


if __name__ == "__main__":
  absltest.main()
