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
"""Tests for the generic static-shape selectors."""

import fractions
import math

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from opd_jax import selection
from opd_jax.selection import selectors

B, T = 4, 64


def _floor_frac(rho, n):
  f = fractions.Fraction(rho).limit_denominator(10_000)
  return (n * f.numerator) // f.denominator


def _inputs(seed, b=B, t=T, min_len=0):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(min_len, t + 1, size=b)
  lengths[0] = t  # Always one full row.
  mask = np.arange(t)[None, :] < lengths[:, None]
  scores = rng.normal(size=(b, t)).astype(np.float32)
  return scores, mask, lengths


def _np_top(scores, mask, count):
  """Reference: stable descending top-`count` of valid positions per row."""
  keep = np.zeros_like(mask)
  for b in range(scores.shape[0]):
    valid = np.flatnonzero(mask[b])
    order = valid[np.argsort(-scores[b, valid], kind="stable")]
    keep[b, order[: count[b]]] = True
  return keep


def _pad(x, new_t, value=0):
  pad = [(0, 0), (0, new_t - x.shape[1])] + [(0, 0)] * (x.ndim - 2)
  return np.pad(x, pad, constant_values=value)


class BudgetTest(parameterized.TestCase):

  def test_floor_and_ceil_are_exact(self):
    counts = np.arange(0, 300)
    for rho in (0.0, 0.1, 0.2, 0.29, 0.3, 1 / 3, 0.5, 0.57, 0.7, 1.0):
      f = fractions.Fraction(rho).limit_denominator(10_000)
      want_floor = [(c * f.numerator) // f.denominator for c in counts]
      want_ceil = [-(-(c * f.numerator) // f.denominator) for c in counts]
      np.testing.assert_array_equal(
          selection.floor_fraction(rho, counts), want_floor
      )
      np.testing.assert_array_equal(
          selection.ceil_fraction(rho, counts), want_ceil
      )
      self.assertEqual(selection.static_budget(rho, 77), want_ceil[77])

  def test_rejects_bad_fraction(self):
    with self.assertRaisesRegex(ValueError, "fraction"):
      selection.static_budget(1.5, 10)
    with self.assertRaisesRegex(TypeError, "fraction"):
      selection.floor_fraction(jnp.float32(0.5), 3)


class TopFractionTest(parameterized.TestCase):

  @parameterized.parameters(0.1, 0.3, 0.5, 1.0)
  def test_counts_and_reference(self, rho):
    scores, mask, lengths = _inputs(0)
    sel = selection.top_fraction_per_sequence(
        scores, mask, rho, return_index=True
    )
    want_counts = np.array([_floor_frac(rho, n) for n in lengths])
    weights = np.asarray(sel.weights)
    np.testing.assert_array_equal(weights.sum(1), want_counts)
    np.testing.assert_array_equal(
        weights > 0, _np_top(scores, mask, want_counts)
    )
    self.assertEqual(sel.weights.dtype, jnp.float32)
    self.assertEqual(sel.index.shape, (B, math.ceil(rho * T - 1e-9)))
    self.assertEqual(sel.index.dtype, jnp.int32)

  def test_index_gathers_exactly_the_selected(self):
    scores, mask, _ = _inputs(1)
    sel = selection.top_fraction_per_sequence(
        scores, mask, 0.4, return_index=True
    )
    index, iw = np.asarray(sel.index), np.asarray(sel.index_weights)
    weights = np.asarray(sel.weights)
    for b in range(B):
      real = index[b][iw[b] > 0]
      self.assertLen(set(real.tolist()), len(real))
      self.assertEqual(set(real.tolist()), set(np.flatnonzero(weights[b])))
      # Real slots come first; padding slots are zero.
      n = len(real)
      np.testing.assert_array_equal(iw[b, :n], 1.0)
      np.testing.assert_array_equal(iw[b, n:], 0.0)
    gathered = selection.gather_positions(scores, sel.index)
    np.testing.assert_array_equal(
        gathered, np.take_along_axis(scores, index, axis=1)
    )

  def test_ties_prefer_earlier_positions(self):
    scores = np.zeros((1, 8), np.float32)
    mask = np.ones((1, 8), bool)
    sel = selection.top_fraction_per_sequence(
        scores, mask, 0.5, return_index=True
    )
    np.testing.assert_array_equal(sel.weights[0], [1] * 4 + [0] * 4)
    np.testing.assert_array_equal(sel.index[0], [0, 1, 2, 3])

  def test_invalid_tokens_never_selected_even_with_inf_scores(self):
    scores = np.array([[-np.inf, 1.0, np.inf, 2.0]], np.float32)
    mask = np.array([[True, True, False, True]])
    sel = selection.top_fraction_per_sequence(scores, mask, 1.0)
    np.testing.assert_array_equal(sel.weights[0], [1, 1, 0, 1])

  def test_all_tokens(self):
    _, mask, _ = _inputs(2)
    sel = selection.all_tokens(mask, return_index=True)
    np.testing.assert_array_equal(sel.weights, mask.astype(np.float32))
    self.assertEqual(sel.index.shape, (B, T))
    np.testing.assert_array_equal(
        np.asarray(sel.index_weights).sum(1), mask.sum(1)
    )

  def test_padding_invariance(self):
    scores, mask, _ = _inputs(3)
    rng = np.random.default_rng(0)
    scores_p = _pad(scores, 2 * T)
    scores_p[:, T:] = rng.normal(size=(B, T)) * 100  # Garbage in padding.
    mask_p = _pad(mask, 2 * T, False)
    for fn in (
        lambda s, m: selection.top_fraction_per_sequence(s, m, 0.3),
        lambda s, m: selection.all_tokens(m),
    ):
      w = np.asarray(fn(scores, mask).weights)
      w_p = np.asarray(fn(scores_p, mask_p).weights)
      np.testing.assert_array_equal(w_p[:, :T], w)
      np.testing.assert_array_equal(w_p[:, T:], 0.0)

  def test_validation(self):
    with self.assertRaisesRegex(ValueError, "scores"):
      selection.top_fraction_per_sequence(np.zeros(3), np.ones(3, bool), 0.5)
    with self.assertRaisesRegex(TypeError, "mask must be bool"):
      selection.top_fraction_per_sequence(
          np.zeros((2, 3), np.float32), np.ones((2, 3)), 0.5
      )
    with self.assertRaisesRegex(ValueError, "mask must have shape"):
      selection.top_fraction_per_sequence(
          np.zeros((2, 3), np.float32), np.ones((2, 4), bool), 0.5
      )

  def test_jit_compiles_once(self):
    traces = []

    def fn(scores, mask):
      traces.append(1)
      sel = selection.top_fraction_per_sequence(
          scores, mask, 0.5, return_index=True
      )
      return sel

    jitted = jax.jit(fn)
    for seed in range(3):
      scores, mask, _ = _inputs(seed)
      out = jitted(scores, mask)
      self.assertIsInstance(out, selection.Selection)
    self.assertLen(traces, 1)


class RandomSelectorsTest(parameterized.TestCase):

  def test_uniform_random_counts(self):
    _, mask, lengths = _inputs(4)
    sel = selection.uniform_random(
        jax.random.key(0), mask, 0.3, return_index=True
    )
    weights = np.asarray(sel.weights)
    np.testing.assert_array_equal(
        weights.sum(1), [_floor_frac(0.3, n) for n in lengths]
    )
    self.assertFalse(np.any(weights[~mask]))
    other = selection.uniform_random(jax.random.key(1), mask, 0.3)
    self.assertFalse(np.array_equal(weights, other.weights))

  def test_uniform_random_is_uniform(self):
    rows = 2000
    mask = np.ones((rows, 8), bool)
    sel = selection.uniform_random(jax.random.key(3), mask, 0.25)
    freq = np.asarray(sel.weights).mean(0)
    np.testing.assert_allclose(freq, 0.25, atol=0.04)

  def test_gumbel_top_k_follows_weights(self):
    rows = 4000
    w = np.array([1.0, 2.0, 3.0, 4.0, 0.0], np.float32)
    weights = np.broadcast_to(w, (rows, 5))
    mask = np.ones((rows, 5), bool)
    key = jax.random.key(7)
    # One draw per row (floor(0.2 * 5) = 1): frequencies follow w / sum(w).
    one = selection.gumbel_top_fraction(key, weights, mask, 0.2)
    np.testing.assert_allclose(
        np.asarray(one.weights).mean(0), w / w.sum(), atol=0.03
    )
    # Two draws: inclusion probabilities of sampling without replacement.
    two = selection.gumbel_top_fraction(key, weights, mask, 0.4)
    p = w / w.sum()
    incl = np.array([
        p[i] + sum(p[j] * p[i] / (1 - p[j]) for j in range(4) if j != i)
        for i in range(5)
    ])
    np.testing.assert_allclose(np.asarray(two.weights).mean(0), incl, atol=0.03)

  def test_gumbel_alpha_sharpens(self):
    rows = 3000
    weights = np.broadcast_to(np.array([1.0, 2.0], np.float32), (rows, 2))
    mask = np.ones((rows, 2), bool)
    sel = selection.gumbel_top_fraction(
        jax.random.key(0), weights, mask, 0.5, alpha=2.0
    )
    np.testing.assert_allclose(
        np.asarray(sel.weights).mean(0), [0.2, 0.8], atol=0.03
    )


class StatisticsTest(parameterized.TestCase):

  @parameterized.parameters(0.0, 0.02, 0.5, 0.8, 0.98, 1.0)
  def test_masked_quantile_matches_numpy(self, q):
    scores, mask, _ = _inputs(5)
    got = selection.masked_quantile(scores, mask, q)
    np.testing.assert_allclose(got, np.quantile(scores[mask], q), rtol=1e-5)

  def test_masked_quantile_empty_is_zero(self):
    got = selection.masked_quantile(
        np.ones((2, 3), np.float32), np.zeros((2, 3), bool), 0.5
    )
    self.assertEqual(float(got), 0.0)

  def test_min_max_normalize(self):
    scores, mask, _ = _inputs(6, min_len=2)
    got = np.asarray(selection.min_max_normalize(scores, mask))
    v = scores[mask]
    want = np.where(mask, (scores - v.min()) / (v.max() - v.min()), 0.0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    rows = np.asarray(selection.min_max_normalize(scores, mask, axis=-1))
    for b in range(B):
      v = scores[b, mask[b]]
      np.testing.assert_allclose(
          rows[b, mask[b]], (v - v.min()) / (v.max() - v.min()), rtol=1e-5
      )
    const = selection.min_max_normalize(
        np.full((2, 3), 5.0, np.float32), np.ones((2, 3), bool)
    )
    np.testing.assert_array_equal(const, 0.0)

  def test_global_top_fraction_size(self):
    for seed in range(3):
      scores, mask, _ = _inputs(seed)
      keep = np.asarray(selection.global_top_fraction(scores, mask, 0.1))
      n = int(mask.sum())
      self.assertEqual(keep.sum(), -(-n // 10))
      self.assertGreaterEqual(scores[keep].min(), scores[mask & ~keep].max())

  def test_sequence_order_is_a_permutation(self):
    scores, mask, _ = _inputs(7)
    order = np.asarray(selectors.sequence_order(scores, mask))
    for b in range(B):
      self.assertEqual(sorted(order[b]), list(range(T)))


class GatherTest(parameterized.TestCase):

  def test_gather_positions(self):
    x = np.arange(2 * 5 * 3).reshape(2, 5, 3)
    index = np.array([[4, 0], [2, 2]], np.int32)
    got = selection.gather_positions(jnp.asarray(x), jnp.asarray(index))
    np.testing.assert_array_equal(got, x[np.arange(2)[:, None], index])
    got2 = selection.gather_positions(jnp.asarray(x[..., 0]), index)
    np.testing.assert_array_equal(got2, x[np.arange(2)[:, None], index, 0])

  def test_mask_to_index(self):
    mask = np.array(
        [[0, 1, 0, 1, 1, 0], [1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 0, 1]], np.float32
    )
    index, weights = selection.mask_to_index(jnp.asarray(mask), 3)
    self.assertEqual(index.dtype, jnp.int32)
    np.testing.assert_array_equal(index[0], [1, 3, 4])
    np.testing.assert_array_equal(weights[0], [1, 1, 1])
    # One selected position, then the earliest unselected ones at weight 0.
    np.testing.assert_array_equal(index[1], [0, 1, 2])
    np.testing.assert_array_equal(weights[1], [1, 0, 0])
    # More than k selected: the earliest k are kept.
    np.testing.assert_array_equal(index[2], [0, 1, 2])
    with self.assertRaisesRegex(ValueError, "k must be"):
      selection.mask_to_index(jnp.asarray(mask), 7)


if __name__ == "__main__":
  absltest.main()
