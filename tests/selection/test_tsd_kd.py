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
"""Tests for the TSD-KD gate, opener, entropy-min set and Plackett–Luce loss."""

import itertools
import math

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from opd_jax import selection

B, T, K = 4, 64, 5


def _inputs(seed, b=B, t=T):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(1, t + 1, size=b)
  lengths[0] = t
  mask = np.arange(t)[None, :] < lengths[:, None]
  hs = (rng.random((b, t)) * 3).astype(np.float32)
  ht = (rng.random((b, t)) * 3).astype(np.float32)
  return hs, ht, mask, lengths


def _np_opener(hs, mask, c):
  """Paper definition: positions up to m* = min{m: cum fraction >= c}."""
  out = np.zeros_like(mask)
  for b in range(hs.shape[0]):
    valid = np.flatnonzero(mask[b])
    e = hs[b, valid].astype(np.float64)
    if e.sum() == 0:
      out[b, valid] = True
      continue
    frac = np.cumsum(e) / e.sum()
    m_star = int(np.argmax(frac >= c))
    out[b, valid[: m_star + 1]] = True
  return out


def _np_opener_code(hs, mask, c):
  """The released code: one prefix length from the flattened batch."""
  flat = hs[mask].astype(np.float64)
  frac = np.cumsum(flat / flat.sum())
  n_star = int(np.argmax(frac >= c))
  return mask & (np.arange(hs.shape[1])[None, :] < n_star)


def _np_opener_groups(hs, mask, c, rows):
  """The released code run on each micro-batch of `rows` rows in turn."""
  parts = [
      _np_opener_code(hs[i : i + rows], mask[i : i + rows], c)
      for i in range(0, hs.shape[0], rows)
  ]
  return np.concatenate(parts)


def _np_em_quantile(hs, mask, ratio, rows=None):
  """The code's EM set: entropies >= torch.quantile(valid, 1 - ratio), per
  micro-batch of `rows` rows (pads excluded)."""
  rows = rows or hs.shape[0]
  out = np.zeros_like(mask)
  for i in range(0, hs.shape[0], rows):
    h, m = hs[i : i + rows], mask[i : i + rows]
    if m.any():
      q = np.quantile(h[m].astype(np.float64), 1.0 - ratio)
      out[i : i + rows] = m & (h >= q)
  return out


def _np_pl_nll(s, reverse=True):
  """-log P_PL of the given order (suffix sums) or its code mirror."""
  s = s - s.mean()
  total = 0.0
  for j in range(len(s)):
    rest = s[j:] if reverse else s[: j + 1]
    total += np.log(np.sum(np.exp(rest))) - s[j]
  return total


class GateTest(absltest.TestCase):

  def test_gate_values_and_no_gradient(self):
    hs, ht, _, _ = _inputs(0)
    gate = selection.confidence_gate(hs, ht, tau=2.0)
    np.testing.assert_allclose(
        gate, 1 / (1 + np.exp(-(hs - ht) / 2.0)), rtol=1e-6
    )
    grad = jax.grad(lambda h: jnp.sum(selection.confidence_gate(h, ht)))(
        jnp.asarray(hs)
    )
    np.testing.assert_array_equal(grad, 0.0)
    with self.assertRaisesRegex(ValueError, "teacher_entropy"):
      selection.confidence_gate(hs, ht[:, :3])


class OpenerTest(parameterized.TestCase):

  @parameterized.parameters(0.05, 0.1, 0.5)
  def test_per_sequence_matches_numpy_loop(self, c):
    for seed in range(3):
      hs, _, mask, _ = _inputs(seed)
      got = selection.opener_mask(hs, mask, threshold=c)
      np.testing.assert_array_equal(got, _np_opener(hs, mask, c))

  def test_spec_formula_and_zero_entropy(self):
    hs = np.array([[1.0, 0.0, 3.0, 6.0, 9.0], [0, 0, 0, 0, 0]], np.float32)
    mask = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]], bool)
    # Row 0: fractions 0.1, 0.1, 0.4, 1.0 -> c = 0.1 is reached at t = 0.
    got = selection.opener_mask(hs, mask, threshold=0.1)
    np.testing.assert_array_equal(got[0], [1, 0, 0, 0, 0])
    got = selection.opener_mask(hs, mask, threshold=0.2)
    np.testing.assert_array_equal(got[0], [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(got[1], mask[1])

  def test_batch_flat_matches_released_code(self):
    for seed in range(3):
      hs, _, mask, _ = _inputs(seed)
      got = selection.opener_mask(hs, mask, threshold=0.1, batch_flat=True)
      np.testing.assert_array_equal(got, _np_opener_code(hs, mask, 0.1))
      self.assertGreater(int(got.sum()), 0)

  @parameterized.parameters((4, 1), (4, 2), (5, 2), (5, 3), (4, 4), (4, 9))
  def test_groups_match_the_code_per_micro_batch(self, b, rows):
    for seed in range(3):
      hs, _, mask, _ = _inputs(seed, b=b)
      got = selection.opener_mask(hs, mask, threshold=0.1, group_rows=rows)
      want = _np_opener_groups(hs, mask, 0.1, rows)
      np.testing.assert_array_equal(got, want)
    # One group of the whole batch is the whole-batch rule.
    hs, _, mask, _ = _inputs(5, b=b)
    np.testing.assert_array_equal(
        selection.opener_mask(hs, mask, group_rows=b),
        selection.opener_mask(hs, mask, batch_flat=True),
    )

  def test_groups_hand_case(self):
    # Group 0 = rows 0-1: flattened [1, 1, 8 | 0, 10] / 20 -> fractions
    # 0.05, 0.1, ... -> n* = 1 (c = 0.1 is first reached at index 1): the
    # first position of each row. Group 1 = row 2: [9, 1] -> n* = 0.
    hs = np.array([[1, 1, 8], [0, 10, 0], [9, 1, 0]], np.float32)
    mask = np.array([[1, 1, 1], [1, 1, 0], [1, 1, 0]], bool)
    got = selection.opener_mask(hs, mask, threshold=0.1, group_rows=2)
    np.testing.assert_array_equal(got, [[1, 0, 0], [1, 0, 0], [0, 0, 0]])

  def test_group_rows_refusals(self):
    hs, _, mask, _ = _inputs(0)
    with self.assertRaisesRegex(ValueError, "group_rows must be >= 0"):
      selection.opener_mask(hs, mask, group_rows=-1)
    with self.assertRaisesRegex(TypeError, "group_rows must be an int"):
      selection.opener_mask(hs, mask, group_rows=2.0)
    with self.assertRaisesRegex(ValueError, "set one"):
      selection.opener_mask(hs, mask, batch_flat=True, group_rows=2)


class EntropyMinTest(parameterized.TestCase):

  @parameterized.parameters(0.1, 0.25, 0.9)
  def test_set_size_and_membership(self, ratio):
    hs, _, mask, _ = _inputs(1)
    in_set = np.asarray(selection.entropy_min_set(hs, mask, ratio=ratio))
    n_valid = int(mask.sum())
    self.assertEqual(in_set.sum(), math.ceil(ratio * n_valid - 1e-9))
    self.assertFalse(np.any(in_set & ~mask))
    self.assertGreaterEqual(hs[in_set].min(), hs[mask & ~in_set].max())

  @parameterized.parameters(
      (0.9, None), (0.5, None), (0.1, None), (0.9, 2), (0.9, 3), (0.3, 1)
  )
  def test_quantile_rule_matches_the_code(self, ratio, rows):
    for seed in range(3):
      hs, _, mask, _ = _inputs(seed)
      got = selection.entropy_min_set(
          hs, mask, ratio=ratio, rule="quantile", group_rows=rows or 0
      )
      np.testing.assert_array_equal(got, _np_em_quantile(hs, mask, ratio, rows))

  def test_quantile_rule_hand_case(self):
    # Ten distinct entropies 0..9: the 0.1 quantile is 0.9, so 1..9 are in
    # (9 of 10, the code's ~90%); ties at the threshold are kept; a pad of
    # entropy 100 never is; ratio 0 is empty.
    hs = np.array([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 100]], np.float32)
    mask = np.arange(11)[None] < 10
    got = selection.entropy_min_set(hs, mask, ratio=0.9, rule="quantile")
    np.testing.assert_array_equal(got[0], [0] + [1] * 9 + [0])
    ties = np.array([[1, 1, 1, 2]], np.float32)
    got = selection.entropy_min_set(
        ties, np.ones((1, 4), bool), ratio=0.9, rule="quantile"
    )
    np.testing.assert_array_equal(got[0], [1, 1, 1, 1])
    got = selection.entropy_min_set(hs, mask, ratio=0.0, rule="quantile")
    self.assertFalse(np.any(got))
    with self.assertRaisesRegex(ValueError, "rule must be one of"):
      selection.entropy_min_set(hs, mask, rule="percentile")
    with self.assertRaisesRegex(ValueError, "needs rule='quantile'"):
      selection.entropy_min_set(hs, mask, group_rows=2)

  def test_loss_value_and_gradient(self):
    hs, _, mask, _ = _inputs(2)
    in_set = np.asarray(selection.entropy_min_set(hs, mask))
    total, count = selection.entropy_min_loss(hs, mask)
    self.assertAlmostEqual(float(total), hs[in_set].sum(), places=3)
    self.assertEqual(float(count), in_set.sum())
    grad = jax.grad(lambda h: selection.entropy_min_loss(h, mask)[0])(
        jnp.asarray(hs)
    )
    np.testing.assert_array_equal(grad, in_set.astype(np.float32))


class PlackettLuceTest(parameterized.TestCase):

  def test_paper_gradient_raises_teachers_favourite(self):
    zs = jnp.zeros((1, 1, 4))
    zt = jnp.array([[[4.0, 3.0, 2.0, 1.0]]])
    grad = lambda cc: jax.grad(
        lambda z: jnp.sum(selection.plackett_luce_nll(z, zt, code_compat=cc))
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
    grad = jax.grad(lambda z: jnp.sum(selection.plackett_luce_nll(z, zt)))(zs)[
        0, 0
    ]
    want = np.array([-0.75, -0.75 + 1 / 3, -0.75 + 1 / 3 + 1 / 2, 13 / 12])
    np.testing.assert_allclose(grad[np.array([1, 3, 2, 0])], want, atol=1e-6)

  @parameterized.parameters(False, True)
  def test_matches_numpy(self, code_compat):
    rng = np.random.default_rng(3)
    zs = rng.normal(size=(2, 3, K)).astype(np.float32)
    zt = rng.normal(size=(2, 3, K)).astype(np.float32)
    got = selection.plackett_luce_nll(
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
          -float(
              selection.plackett_luce_nll(s[None, None], zt[None, None])[0, 0]
          )
      )
    self.assertAlmostEqual(total, 1.0, places=5)

  def test_indirect_loss_reduces_over_opener(self):
    rng = np.random.default_rng(4)
    zs = rng.normal(size=(B, T, K)).astype(np.float32)
    zt = rng.normal(size=(B, T, K)).astype(np.float32)
    hs, _, mask, _ = _inputs(4)
    opener = selection.opener_mask(hs, mask)
    total, count = selection.indirect_loss(zs, zt, opener)
    nll = np.asarray(selection.plackett_luce_nll(zs, zt))
    self.assertAlmostEqual(float(total), nll[np.asarray(opener)].sum(), 3)
    self.assertEqual(float(count), np.asarray(opener).sum())
    grad = jax.grad(lambda z: selection.indirect_loss(z, zt, opener)[0])(
        jnp.asarray(zs)
    )
    self.assertTrue(np.all(np.asarray(grad)[~np.asarray(opener)] == 0))


class ObjectiveTest(absltest.TestCase):

  def _pieces(self, seed, t=T):
    hs, ht, mask, _ = _inputs(seed, t=t)
    rng = np.random.default_rng(seed + 100)
    return dict(
        student_entropy=hs,
        teacher_entropy=ht,
        direct_divergence=rng.random((B, t)).astype(np.float32),
        student_candidate_logits=rng.normal(size=(B, t, K)).astype(np.float32),
        teacher_candidate_logits=rng.normal(size=(B, t, K)).astype(np.float32),
        mask=mask,
    )

  def test_value_matches_the_pieces(self):
    p = self._pieces(0)
    loss, terms = selection.tsd_kd_objective(**p)
    mask = p["mask"]
    gate = np.asarray(
        selection.confidence_gate(p["student_entropy"], p["teacher_entropy"])
    )
    direct = (gate * p["direct_divergence"])[mask].mean()
    opener = selection.opener_mask(p["student_entropy"], mask)
    ind = selection.indirect_loss(
        p["student_candidate_logits"], p["teacher_candidate_logits"], opener
    )
    em = selection.entropy_min_loss(p["student_entropy"], mask)
    want = 0.1 * ind[0] / ind[1] + direct + em[0] / em[1]
    self.assertAlmostEqual(float(loss), float(want), places=4)
    self.assertEqual(set(terms), {"indirect", "direct", "em"})
    # The EM weight scales the EM term alone.
    loss3, terms3 = selection.tsd_kd_objective(**p, em_weight=3.0)
    self.assertAlmostEqual(
        float(loss3), float(want + 2.0 * em[0] / em[1]), places=4
    )
    for k in terms:
      np.testing.assert_array_equal(terms3[k], terms[k])
    loss0, _ = selection.tsd_kd_objective(**p, em_weight=0.0)
    self.assertAlmostEqual(float(loss0), float(want - em[0] / em[1]), 4)

  def test_code_reading_uses_its_sets(self):
    p = self._pieces(2)
    hs, mask = p["student_entropy"], p["mask"]
    _, terms = selection.tsd_kd_objective(
        **p,
        opener_group_rows=2,
        em_ratio=0.9,
        em_rule="quantile",
        em_group_rows=2,
        pl_code_compat=True,
    )
    em_set = _np_em_quantile(hs, mask, 0.9, 2)
    opener = _np_opener_groups(hs, mask, 0.1, 2)
    self.assertAlmostEqual(float(terms["em"][0]), hs[em_set].sum(), places=3)
    self.assertEqual(float(terms["em"][1]), em_set.sum())
    nll = np.asarray(
        selection.plackett_luce_nll(
            p["student_candidate_logits"],
            p["teacher_candidate_logits"],
            code_compat=True,
        )
    )
    self.assertAlmostEqual(float(terms["indirect"][0]), nll[opener].sum(), 3)
    self.assertEqual(float(terms["indirect"][1]), opener.sum())

  def test_gradients_are_finite_and_masked(self):
    p = self._pieces(1)
    mask = p.pop("mask")
    diff = ("student_entropy", "direct_divergence", "student_candidate_logits")
    grads = jax.grad(
        lambda d: selection.tsd_kd_objective(mask=mask, **p, **d)[0]
    )({k: jnp.asarray(p.pop(k)) for k in diff})
    for name, g in grads.items():
      g = np.asarray(g)
      self.assertTrue(np.all(np.isfinite(g)), name)
      self.assertTrue(np.all(g[~mask] == 0), name)

  def test_padding_invariance_and_single_compile(self):
    traces = []

    def fn(p):
      traces.append(1)
      hs, mask = p["student_entropy"], p["mask"]
      return (
          selection.tsd_kd_objective(**p)[0],
          selection.tsd_kd_objective(
              **p,
              opener_group_rows=3,
              em_ratio=0.9,
              em_rule="quantile",
              em_group_rows=3,
              pl_code_compat=True,
          )[0],
          selection.opener_mask(hs, mask),
          selection.opener_mask(hs, mask, batch_flat=True),
          selection.opener_mask(hs, mask, group_rows=3),
          selection.entropy_min_set(hs, mask),
          selection.entropy_min_set(
              hs, mask, ratio=0.9, rule="quantile", group_rows=3
          ),
          selection.confidence_gate(hs, p["teacher_entropy"]) * mask,
      )

    jitted = jax.jit(fn)
    rng = np.random.default_rng(9)
    for seed in range(2):
      short = self._pieces(seed)
      long = {}
      for k, v in short.items():
        pad = [(0, 0), (0, T)] + [(0, 0)] * (v.ndim - 2)
        fill = False if v.dtype == bool else 0
        long[k] = np.pad(v, pad, constant_values=fill)
        if v.dtype != bool:
          long[k][:, T:] = rng.random(long[k][:, T:].shape) * 5
      out_s, out_l = jitted(short), jitted(long)
      self.assertAlmostEqual(float(out_s[0]), float(out_l[0]), places=5)
      self.assertAlmostEqual(float(out_s[1]), float(out_l[1]), places=5)
      for a, b in zip(out_s[2:], out_l[2:]):
        np.testing.assert_array_equal(np.asarray(b)[:, :T], a)
        np.testing.assert_array_equal(np.asarray(b)[:, T:], 0)
    self.assertLen(traces, 2)  # One trace per shape, none per new value.


if __name__ == "__main__":
  absltest.main()
