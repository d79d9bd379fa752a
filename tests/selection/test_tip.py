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
"""Tests for the TIP selectors (Soft-OR, entropy, divergence, quadrants)."""

import fractions
import math

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from opd_jax import selection

B, T, V = 4, 64, 1000


def _floor_frac(rho, n):
  f = fractions.Fraction(rho).limit_denominator(10_000)
  return (n * f.numerator) // f.denominator


def _inputs(seed, b=B, t=T):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(1, t + 1, size=b)
  lengths[0] = t
  mask = np.arange(t)[None, :] < lengths[:, None]
  entropy = (rng.random((b, t)) * math.log(V)).astype(np.float32)
  entropy[0, 3] = 50.0  # An outlier for the 98th-percentile clip.
  divergence = rng.exponential(size=(b, t)).astype(np.float32)
  return entropy, divergence, mask, lengths


def _np_soft_or(entropy, divergence, mask, clip_q=0.98):
  """Reference: clip h at the global quantile, then global min-max."""
  h = entropy.astype(np.float64) / math.log(V)
  h = np.minimum(h, np.quantile(h[mask], clip_q))

  def mm(x):
    v = x[mask]
    return np.where(mask, (x - v.min()) / (v.max() - v.min()), 0.0)

  h_hat, d_hat = mm(h), mm(divergence.astype(np.float64))
  return h_hat, d_hat, np.where(mask, h_hat + d_hat - h_hat * d_hat, 0.0)


def _np_top(scores, mask, count):
  keep = np.zeros_like(mask)
  for b in range(scores.shape[0]):
    valid = np.flatnonzero(mask[b])
    order = valid[np.argsort(-scores[b, valid], kind="stable")]
    keep[b, order[: count[b]]] = True
  return keep


def _pad(x, new_t, fill):
  out = np.asarray(fill(x.shape[:1] + (new_t,) + x.shape[2:])).astype(x.dtype)
  out[:, : x.shape[1]] = x
  return out


class SoftOrTest(parameterized.TestCase):

  def test_scores_match_numpy(self):
    entropy, divergence, mask, _ = _inputs(0)
    got = selection.soft_or_scores(entropy, divergence, mask, vocab_size=V)
    _, _, want = _np_soft_or(entropy, divergence, mask)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

  def test_clip_comes_before_min_max(self):
    entropy, divergence, mask, _ = _inputs(1)
    clipped = selection.soft_or_scores(entropy, divergence, mask, vocab_size=V)
    unclipped = selection.soft_or_scores(
        entropy, divergence, mask, vocab_size=V, clip_quantile=None
    )
    _, _, want = _np_soft_or(entropy, divergence, mask, clip_q=1.0)
    np.testing.assert_allclose(unclipped, want, rtol=1e-5, atol=1e-6)
    # With the clip, the outlier no longer squashes every other entropy.
    self.assertGreater(
        float(jnp.mean(clipped[mask])), float(jnp.mean(unclipped[mask]))
    )

  def test_range_and_soft_or_identity(self):
    entropy, divergence, mask, _ = _inputs(2)
    s = np.asarray(
        selection.soft_or_scores(entropy, divergence, mask, vocab_size=V)
    )
    h_hat, d_hat, _ = _np_soft_or(entropy, divergence, mask)
    self.assertTrue(np.all((s >= 0) & (s <= 1)))
    one = np.isclose(s, 1.0, atol=1e-6) & mask
    either = (np.isclose(h_hat, 1) | np.isclose(d_hat, 1)) & mask
    np.testing.assert_array_equal(one, either)
    self.assertGreaterEqual(either.sum(), 2)  # Clip ties count too.
    np.testing.assert_array_equal(s[~mask], 0.0)

  def test_constant_axis_normalises_to_zero(self):
    entropy, divergence, mask, _ = _inputs(3)
    s = selection.soft_or_scores(
        np.full_like(entropy, 2.0), divergence, mask, vocab_size=V
    )
    _, d_hat, _ = _np_soft_or(entropy, divergence, mask)
    np.testing.assert_allclose(s, d_hat, rtol=1e-5, atol=1e-6)

  @parameterized.parameters(0.2, 0.5)
  def test_counts_and_reference_selection(self, rho):
    entropy, divergence, mask, lengths = _inputs(4)
    sel = selection.soft_or(
        entropy, divergence, mask, rho, vocab_size=V, return_index=True
    )
    counts = np.array([_floor_frac(rho, n) for n in lengths])
    np.testing.assert_array_equal(np.asarray(sel.weights).sum(1), counts)
    _, _, s = _np_soft_or(entropy, divergence, mask)
    np.testing.assert_array_equal(
        np.asarray(sel.weights) > 0, _np_top(s.astype(np.float32), mask, counts)
    )
    self.assertEqual(sel.index.shape[1], math.ceil(rho * T))
    for b in range(B):
      real = np.asarray(sel.index[b])[np.asarray(sel.index_weights[b]) > 0]
      self.assertEqual(
          set(real.tolist()), set(np.flatnonzero(sel.weights[b]).tolist())
      )

  def test_bottom_is_the_negative_control(self):
    entropy, divergence, mask, lengths = _inputs(5)
    top = selection.soft_or(entropy, divergence, mask, 0.5, vocab_size=V)
    bottom = selection.soft_or(
        entropy, divergence, mask, 0.5, vocab_size=V, bottom=True
    )
    s = selection.soft_or_scores(entropy, divergence, mask, vocab_size=V)
    np.testing.assert_array_equal(
        np.asarray(bottom.weights).sum(1), np.asarray(top.weights).sum(1)
    )
    for b in range(B):
      kept = np.asarray(bottom.weights[b]) > 0
      if kept.any() and (mask[b] & ~kept).any():
        self.assertLessEqual(s[b][kept].max(), s[b][mask[b] & ~kept].min())


class EntropyDivergenceTest(parameterized.TestCase):

  def test_entropy_topk_and_divergence_top(self):
    entropy, divergence, mask, lengths = _inputs(6)
    counts = np.array([_floor_frac(0.2, n) for n in lengths])
    ent = selection.entropy_top(entropy, mask, 0.2)
    div = selection.divergence_top(divergence, mask, 0.2)
    np.testing.assert_array_equal(
        np.asarray(ent.weights) > 0, _np_top(entropy, mask, counts)
    )
    np.testing.assert_array_equal(
        np.asarray(div.weights) > 0, _np_top(divergence, mask, counts)
    )

  def test_entropy_sample_mode(self):
    entropy, _, mask, lengths = _inputs(7)
    with self.assertRaisesRegex(ValueError, "key"):
      selection.entropy_top(entropy, mask, 0.5, mode="sample")
    with self.assertRaisesRegex(ValueError, "mode"):
      selection.entropy_top(entropy, mask, 0.5, mode="nope")
    sel = selection.entropy_top(
        entropy,
        mask,
        0.5,
        mode="sample",
        key=jax.random.key(0),
        return_index=True,
    )
    np.testing.assert_array_equal(
        np.asarray(sel.weights).sum(1), [_floor_frac(0.5, n) for n in lengths]
    )

  def test_entropy_sample_frequencies(self):
    rows = 4000
    h = np.broadcast_to(np.array([0.5, 1.5, 3.0], np.float32), (rows, 3))
    mask = np.ones((rows, 3), bool)
    sel = selection.entropy_top(
        h, mask, 1 / 3, mode="sample", key=jax.random.key(1)
    )
    np.testing.assert_allclose(
        np.asarray(sel.weights).mean(0), [0.1, 0.3, 0.6], atol=0.03
    )


class QuadrantTest(parameterized.TestCase):

  def test_quadrants_partition_and_match_numpy(self):
    entropy, divergence, mask, _ = _inputs(8)
    labels = np.asarray(selection.quadrants(entropy, divergence, mask))
    np.testing.assert_array_equal(labels[~mask], 0)
    self.assertTrue(np.all(np.isin(labels[mask], [1, 2, 3, 4])))
    low_h = entropy < np.quantile(entropy[mask], 0.5)
    high_d = divergence > np.quantile(divergence[mask], 0.8)
    want = np.select(
        [~low_h & high_d, ~low_h & ~high_d, low_h & high_d], [1, 2, 3], 4
    )
    np.testing.assert_array_equal(labels[mask], want[mask])
    counts = np.bincount(labels[mask], minlength=5)[1:]
    self.assertEqual(counts.sum(), mask.sum())
    # About 20% of tokens have high divergence (Q1 + Q3).
    high_d_frac = (counts[0] + counts[2]) / mask.sum()
    self.assertAlmostEqual(high_d_frac, 0.2, delta=0.02)

  def test_quadrant_select(self):
    entropy, divergence, mask, _ = _inputs(9)
    labels = np.asarray(selection.quadrants(entropy, divergence, mask))
    sel = selection.quadrant_select(
        entropy, divergence, mask, return_index=True
    )
    np.testing.assert_array_equal(np.asarray(sel.weights) > 0, labels == 3)
    both = selection.quadrant_select(entropy, divergence, mask, which=(1, 3))
    np.testing.assert_array_equal(
        np.asarray(both.weights) > 0, np.isin(labels, [1, 3])
    )
    # A small budget keeps the earliest quadrant tokens, consistently.
    small = selection.quadrant_select(
        entropy, divergence, mask, budget_fraction=0.05, return_index=True
    )
    k = small.index.shape[1]
    self.assertEqual(k, math.ceil(0.05 * T))
    for b in range(B):
      first = np.flatnonzero(labels[b] == 3)[:k]
      np.testing.assert_array_equal(np.flatnonzero(small.weights[b]), first)
    with self.assertRaisesRegex(ValueError, "which"):
      selection.quadrant_select(entropy, divergence, mask, which=5)


class InvarianceTest(parameterized.TestCase):

  def test_padding_t64_to_t128(self):
    entropy, divergence, mask, _ = _inputs(10)
    rng = np.random.default_rng(1)
    junk = lambda shape: rng.random(shape) * 1e3
    ent_p, div_p = _pad(entropy, 2 * T, junk), _pad(divergence, 2 * T, junk)
    mask_p = _pad(mask, 2 * T, lambda s: np.zeros(s, bool))
    fns = {
        "soft_or": (
            lambda e, d, m: selection.soft_or(
                e, d, m, 0.5, vocab_size=V
            ).weights
        ),
        "bottom": (
            lambda e, d, m: selection.soft_or(
                e, d, m, 0.2, vocab_size=V, bottom=True
            ).weights
        ),
        "scores": lambda e, d, m: selection.soft_or_scores(
            e, d, m, vocab_size=V
        ),
        "entropy": lambda e, d, m: selection.entropy_top(e, m, 0.2).weights,
        "divergence": (
            lambda e, d, m: selection.divergence_top(d, m, 0.2).weights
        ),
        "quadrants": selection.quadrants,
        "q3": lambda e, d, m: selection.quadrant_select(e, d, m).weights,
    }
    for name, fn in fns.items():
      short = np.asarray(fn(entropy, divergence, mask))
      long = np.asarray(fn(ent_p, div_p, mask_p))
      np.testing.assert_array_equal(long[:, :T], short, err_msg=name)
      np.testing.assert_array_equal(long[:, T:], 0, err_msg=name)

  def test_jit_compiles_once_per_config(self):
    traces = []

    def fn(e, d, m):
      traces.append(1)
      return selection.soft_or(e, d, m, 0.5, vocab_size=V, return_index=True)

    jitted = jax.jit(fn)
    for seed in range(3):
      entropy, divergence, mask, _ = _inputs(seed)
      jitted(entropy, divergence, mask)
    self.assertLen(traces, 1)

  def test_no_gradient_through_selection(self):
    entropy, divergence, mask, _ = _inputs(11)
    grad = jax.grad(
        lambda e: jnp.sum(
            selection.soft_or_scores(e, divergence, mask, vocab_size=V)
        )
    )(jnp.asarray(entropy))
    np.testing.assert_array_equal(grad, 0.0)


if __name__ == "__main__":
  absltest.main()
