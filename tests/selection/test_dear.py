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

import math

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from opd_jax import selection
from dear_reference import floor_frac as _floor_frac
from dear_reference import np_dear as _np_dear
from dear_reference import np_relevance as _np_relevance

B, T, D = 4, 64, 8


def _inputs(seed, b=B, t=T, min_len=1):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(min_len, t + 1, size=b)
  lengths[0] = t
  mask = np.arange(t)[None, :] < lengths[:, None]
  entropy = rng.random((b, t)).astype(np.float32)
  divergence = rng.exponential(size=(b, t)).astype(np.float32)
  hidden = rng.normal(size=(b, t, D)).astype(np.float32)
  return entropy, divergence, hidden, mask, lengths


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

  def test_no_anchor_no_evidence(self):
    # p = 0.1 on rollouts of 5..9 tokens: floor(p L) = 0 decision anchors,
    # so nothing can be evidence (it used to keep floor(q L) first tokens).
    entropy, divergence, hidden, _, _ = _inputs(7, b=5, t=9)
    lengths = np.arange(5, 10)
    mask = np.arange(9)[None, :] < lengths[:, None]
    parts = selection.dear_tokens(
        entropy, divergence, hidden, mask, p=0.1, q=0.5
    )
    np.testing.assert_array_equal(parts.decision, False)
    np.testing.assert_array_equal(parts.evidence, False)
    sel = selection.dear_select(
        entropy, divergence, hidden, mask, p=0.1, q=0.5, return_index=True
    )
    np.testing.assert_array_equal(sel.weights, 0.0)
    np.testing.assert_array_equal(sel.index_weights, 0.0)

  def test_causal_evidence_needs_an_earlier_anchor(self):
    entropy, divergence, hidden, mask, _ = _inputs(8)
    parts = selection.dear_tokens(
        entropy, divergence, hidden, mask, q=0.9, anchor_causal=True
    )
    decision = np.asarray(parts.decision)
    evidence = np.asarray(parts.evidence)
    for b in range(B):
      first = np.flatnonzero(decision[b])[0]
      self.assertFalse(evidence[b, : first + 1].any())
      self.assertTrue(evidence[b, first + 1 :].any())
    dec, evi = _np_dear(entropy, divergence, hidden, mask, q=0.9, causal=True)
    np.testing.assert_array_equal(decision, dec)
    np.testing.assert_array_equal(evidence, evi)

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
