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
"""The windows' OT distance: identities, surface forms, exact OT (POT)."""

from absl.testing import absltest
import jax
import numpy as np
import ot  # POT, tests only

from opd_jax.methods.topd_transport import cosine_cost, window_ot_distance

# A converged solve: tight marginals, enough iterations.
TIGHT = dict(threshold=1e-7, max_iterations=5000)


def _embeddings(seed, v=40, d=16):
  return np.random.default_rng(seed).standard_normal((v, d)).astype(np.float32)


def _windows(table, ids_x, ids_y):
  """Embedded windows [M, K, D] from id lists, -1 = padding."""
  ids_x, ids_y = np.asarray(ids_x), np.asarray(ids_y)
  return (
      table[np.maximum(ids_x, 0)],
      ids_x >= 0,
      table[np.maximum(ids_y, 0)],
      ids_y >= 0,
  )


def _np_exact(x, mx, y, my):
  """Exact OT cost per row (float64, network simplex)."""
  out = []
  for i in range(x.shape[0]):
    xs = x[i][mx[i]].astype(np.float64)
    ys = y[i][my[i]].astype(np.float64)
    xs /= np.linalg.norm(xs, axis=-1, keepdims=True)
    ys /= np.linalg.norm(ys, axis=-1, keepdims=True)
    cost = np.clip(1.0 - xs @ ys.T, 0.0, 2.0)
    a = np.full(len(xs), 1.0 / len(xs))
    b = np.full(len(ys), 1.0 / len(ys))
    out.append((ot.emd2(a, b, cost), a, b, cost))
  return out


class TransportTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.table = _embeddings(0)
    rng = np.random.default_rng(1)
    ids_x = rng.integers(0, 40, (3, 7))
    ids_y = rng.integers(0, 40, (3, 6))
    ids_x[1, 5:] = -1  # a window that ended early
    ids_y[2, 3:] = -1
    self.x, self.mx, self.y, self.my = _windows(self.table, ids_x, ids_y)

  def test_cosine_cost_matches_numpy(self):
    x, y = self.x[0], self.y[0]
    nx = x / np.linalg.norm(x, axis=-1, keepdims=True)
    ny = y / np.linalg.norm(y, axis=-1, keepdims=True)
    np.testing.assert_allclose(cosine_cost(x, y), 1 - nx @ ny.T, atol=1e-6)

  def test_identical_windows_are_zero(self):
    d = window_ot_distance(
        self.x, self.mx, self.x, self.mx, epsilon=0.01, **TIGHT
    )
    np.testing.assert_allclose(d, 0.0, atol=1e-6)
    # At the default epsilon the entropic plan leaks a little mass off the
    # diagonal: still far below two unrelated windows.
    d = window_ot_distance(self.x, self.mx, self.x, self.mx)
    far = window_ot_distance(self.x, self.mx, self.y, self.my)
    self.assertLess(float(d.max()), 0.05 * float(far.min()))

  def test_symmetric(self):
    d_xy = window_ot_distance(self.x, self.mx, self.y, self.my, **TIGHT)
    d_yx = window_ot_distance(self.y, self.my, self.x, self.mx, **TIGHT)
    np.testing.assert_allclose(d_xy, d_yx, atol=1e-5)

  def test_permutation_invariant_and_padding_ignored(self):
    perm = np.random.default_rng(2).permutation(7)
    d = window_ot_distance(self.x, self.mx, self.y, self.my, **TIGHT)
    d_perm = window_ot_distance(
        self.x[:, perm], self.mx[:, perm], self.y, self.my, **TIGHT
    )
    np.testing.assert_allclose(d, d_perm, atol=1e-5)
    # Garbage embeddings at padded slots change nothing.
    x = self.x.copy()
    x[~self.mx] = 123.0
    np.testing.assert_allclose(
        window_ot_distance(x, self.mx, self.y, self.my, **TIGHT), d, atol=1e-6
    )

  def test_disjoint_vocabularies_score_higher(self):
    # Overlapping windows (half the ids shared) against disjoint ones.
    rng = np.random.default_rng(3)
    base = rng.permutation(40)
    ids_x = base[None, :8]
    shared = np.concatenate([base[:4], base[8:12]])[None]
    disjoint = base[None, 20:28]
    x, mx, y1, m1 = _windows(self.table, ids_x, shared)
    _, _, y2, m2 = _windows(self.table, ids_x, disjoint)
    near = window_ot_distance(x, mx, y1, m1)
    far = window_ot_distance(x, mx, y2, m2)
    self.assertGreater(float(far[0]), float(near[0]) + 0.2)

  def test_surface_form_is_low_and_a_real_change_high(self):
    # Ids 40..47 are near-copies of ids 0..7 (a synonym / another
    # tokenisation): different ids, almost the same embeddings.
    rng = np.random.default_rng(4)
    table = np.concatenate([
        self.table,
        self.table[:8] + 0.02 * rng.standard_normal((8, 16)).astype(np.float32),
    ])
    ids = np.arange(8)[None]
    surface = (np.arange(8) + 40)[None][:, rng.permutation(8)]
    different = np.arange(20, 28)[None]
    x, mx, ys, ms = _windows(table, ids, surface)
    _, _, yd, md = _windows(table, ids, different)
    low = float(window_ot_distance(x, mx, ys, ms)[0])
    high = float(window_ot_distance(x, mx, yd, md)[0])
    self.assertLess(low, 0.01)
    self.assertGreater(high, 0.5)
    self.assertFalse(np.any(ids == surface))

  def test_matches_exact_ot(self):
    exact = _np_exact(self.x, self.mx, self.y, self.my)
    # Entropic cost -> exact cost as epsilon -> 0; the gap at epsilon is
    # bounded by epsilon * log(K * L) (entropy of the plan).
    for eps in (0.05, 0.01, 0.002):
      got = window_ot_distance(
          self.x, self.mx, self.y, self.my, epsilon=eps, **TIGHT
      )
      for g, (want, *_) in zip(np.asarray(got), exact):
        self.assertGreaterEqual(g, want - 1e-5)
        self.assertLessEqual(g, want + eps * np.log(42))
    got = window_ot_distance(
        self.x, self.mx, self.y, self.my, epsilon=0.002, **TIGHT
    )
    np.testing.assert_allclose(got, [e[0] for e in exact], atol=1e-4)

  def test_matches_pot_sinkhorn_at_the_same_epsilon(self):
    got = window_ot_distance(
        self.x, self.mx, self.y, self.my, epsilon=0.05, **TIGHT
    )
    for g, (_, a, b, cost) in zip(
        np.asarray(got), _np_exact(self.x, self.mx, self.y, self.my)
    ):
      plan = ot.sinkhorn(
          a,
          b,
          cost,
          0.05,
          method="sinkhorn_log",
          numItermax=100_000,
          stopThr=1e-12,
      )
      np.testing.assert_allclose(g, np.sum(plan * cost), atol=2e-5)

  def test_empty_window_is_zero_and_finite(self):
    mx = self.mx.copy()
    mx[0] = False
    d = window_ot_distance(self.x, mx, self.y, self.my)
    self.assertEqual(float(d[0]), 0.0)
    self.assertTrue(np.all(np.isfinite(d)))

  def test_jit_equals_eager(self):
    fn = jax.jit(window_ot_distance)
    np.testing.assert_allclose(
        fn(self.x, self.mx, self.y, self.my),
        window_ot_distance(self.x, self.mx, self.y, self.my),
        atol=1e-6,
    )

  def test_bad_shapes(self):
    with self.assertRaisesRegex(ValueError, "share M"):
      window_ot_distance(self.x, self.mx, self.y[:2], self.my[:2])
    with self.assertRaisesRegex(ValueError, "masks"):
      window_ot_distance(self.x, self.mx[:, :3], self.y, self.my)


if __name__ == "__main__":
  absltest.main()
