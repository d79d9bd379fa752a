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
"""Tests for DEAR decision anchors, anchor relevance and evidence tokens."""

import fractions
import math

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from opd_jax import selection

B, T, D = 4, 64, 8


def _floor_frac(x, n):
  f = fractions.Fraction(x).limit_denominator(10_000)
  return (n * f.numerator) // f.denominator


def _inputs(seed, b=B, t=T, min_len=1):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(min_len, t + 1, size=b)
  lengths[0] = t
  mask = np.arange(t)[None, :] < lengths[:, None]
  entropy = rng.random((b, t)).astype(np.float32)
  divergence = rng.exponential(size=(b, t)).astype(np.float32)
  hidden = rng.normal(size=(b, t, D)).astype(np.float32)
  return entropy, divergence, hidden, mask, lengths


def _np_top(scores, valid, count):
  idx = np.flatnonzero(valid)
  order = idx[np.argsort(-scores[idx], kind="stable")]
  out = np.zeros_like(valid)
  out[order[:count]] = True
  return out


def _np_relevance(hidden, decision, causal=False, window=None):
  """Brute force over the full [T, T] cosine matrix of one sequence."""
  h = hidden / np.linalg.norm(hidden, axis=-1, keepdims=True)
  cos = h @ h.T  # [T(j), T(i)]
  t = len(h)
  j, i = np.meshgrid(np.arange(t), np.arange(t), indexing="ij")
  ok = decision[None, :] & np.ones((t, t), bool)
  if causal:
    ok &= i < j
  if window is not None:
    ok &= np.abs(i - j) <= window
  return np.where(ok, cos, -np.inf).max(axis=1)


def _np_dear(entropy, divergence, hidden, mask, p=0.2, q=0.2, **kw):
  """Reference DEAR for one batch, row by row."""
  dec = np.zeros_like(mask)
  evi = np.zeros_like(mask)
  for b in range(mask.shape[0]):
    n = int(mask[b].sum())
    dec[b] = _np_top(entropy[b], mask[b], _floor_frac(p, n))
    a = _np_relevance(hidden[b], dec[b], **kw)
    rest = mask[b] & ~dec[b]
    has = rest & np.isfinite(a)

    def mm(x, valid):
      if not valid.any() or x[valid].max() == x[valid].min():
        return np.zeros_like(x)
      v = x[valid]
      return np.where(valid, (x - v.min()) / (v.max() - v.min()), 0.0)

    score = np.where(rest, mm(a, has) * (1 + mm(divergence[b], rest)), 0.0)
    evi[b] = _np_top(
        score.astype(np.float32), rest, _floor_frac(q, int(rest.sum()))
    )
  return dec, evi


class RelevanceTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("all", False, None),
      ("causal", True, None),
      ("window", False, 5),
      ("causal_window", True, 7),
  )
  def test_matches_brute_force(self, causal, window):
    entropy, _, hidden, mask, _ = _inputs(0)
    anchors = selection.top_fraction_per_sequence(
        entropy, mask, 0.2, return_index=True
    )
    got = np.asarray(
        selection.anchor_relevance(
            hidden,
            anchors.index,
            anchors.index_weights > 0,
            causal=causal,
            window=window,
        )
    )
    self.assertEqual(anchors.index.shape, (B, math.ceil(0.2 * T)))
    for b in range(B):
      want = _np_relevance(
          hidden[b],
          np.asarray(anchors.weights[b]) > 0,
          causal=causal,
          window=window,
      )
      finite = np.isfinite(want)
      np.testing.assert_array_equal(np.isfinite(got[b]), finite)
      np.testing.assert_allclose(got[b][finite], want[finite], atol=1e-5)


class DearTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("default", {}),
      ("causal", {"causal": True}),
      ("window", {"window": 4}),
  )
  def test_matches_numpy_reference(self, kw):
    entropy, divergence, hidden, mask, _ = _inputs(1)
    parts = selection.dear_tokens(
        entropy,
        divergence,
        hidden,
        mask,
        anchor_causal=kw.get("causal", False),
        anchor_window=kw.get("window"),
    )
    dec, evi = _np_dear(entropy, divergence, hidden, mask, **kw)
    np.testing.assert_array_equal(parts.decision, dec)
    np.testing.assert_array_equal(parts.evidence, evi)
    self.assertFalse(np.any(np.asarray(parts.decision & parts.evidence)))

  def test_counts_and_retained_fraction(self):
    entropy, divergence, hidden, mask, lengths = _inputs(2, b=8, t=128)
    sel = selection.dear_select(
        entropy, divergence, hidden, mask, return_index=True
    )
    kept = np.asarray(sel.weights).sum(1)
    for b, n in enumerate(lengths):
      n_d = _floor_frac(0.2, n)
      self.assertEqual(kept[b], n_d + _floor_frac(0.2, n - n_d))
    # About p + q (1 - p) = 36% of the tokens, less the floors.
    self.assertAlmostEqual(kept.sum() / mask.sum(), 0.36, delta=0.03)
    self.assertEqual(sel.index.shape, (8, math.ceil(0.36 * 128)))

  def test_index_and_class_weights(self):
    entropy, divergence, hidden, mask, _ = _inputs(3)
    parts = selection.dear_tokens(entropy, divergence, hidden, mask)
    sel = selection.dear_select(
        entropy,
        divergence,
        hidden,
        mask,
        decision_weight=3.0,
        evidence_weight=2.0,
        return_index=True,
    )
    want = 3.0 * np.asarray(parts.decision) + 2.0 * np.asarray(parts.evidence)
    np.testing.assert_array_equal(sel.weights, want)
    index, iw = np.asarray(sel.index), np.asarray(sel.index_weights)
    for b in range(B):
      real = iw[b] > 0
      self.assertEqual(
          set(index[b][real].tolist()), set(np.flatnonzero(want[b]).tolist())
      )
      np.testing.assert_array_equal(iw[b][real], want[b][index[b][real]])

  def test_rejects_bad_inputs(self):
    entropy, divergence, hidden, mask, _ = _inputs(4)
    with self.assertRaisesRegex(ValueError, "hidden"):
      selection.dear_select(entropy, divergence, hidden[:, :3], mask)
    with self.assertRaisesRegex(ValueError, "norm_scope"):
      selection.dear_select(
          entropy, divergence, hidden, mask, norm_scope="nope"
      )

  def test_padding_invariance_and_single_compile(self):
    traces = []

    def fn(e, d, h, m):
      traces.append(1)
      sel = selection.dear_select(e, d, h, m, anchor_causal=True)
      return sel.weights

    jitted = jax.jit(fn)
    rng = np.random.default_rng(5)
    for seed in range(2):
      entropy, divergence, hidden, mask, _ = _inputs(10 + seed)
      pad = lambda x: np.concatenate(
          [x, rng.random(x.shape).astype(x.dtype) * 9], axis=1
      )
      mask_p = np.concatenate([mask, np.zeros_like(mask)], axis=1)
      short = np.asarray(jitted(entropy, divergence, hidden, mask))
      long = np.asarray(
          jitted(pad(entropy), pad(divergence), pad(hidden), mask_p)
      )
      np.testing.assert_array_equal(long[:, :T], short)
      np.testing.assert_array_equal(long[:, T:], 0.0)
    self.assertLen(traces, 2)  # One per shape.

  def test_no_gradient_through_selection(self):
    entropy, divergence, hidden, mask, _ = _inputs(6)
    grad = jax.grad(
        lambda h: jnp.sum(
            selection.dear_tokens(entropy, divergence, h, mask).score
        )
    )(jnp.asarray(hidden))
    np.testing.assert_array_equal(grad, 0.0)


if __name__ == "__main__":
  absltest.main()
