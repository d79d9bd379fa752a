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
"""Tests for TSD-KD's [B, T] selection: gate, opener, entropy-min set."""

import math

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from opd_jax import selection
from tsd_kd_reference import inputs as _inputs
from tsd_kd_reference import np_em_quantile as _np_em_quantile
from tsd_kd_reference import np_opener as _np_opener
from tsd_kd_reference import np_opener_code as _np_opener_code
from tsd_kd_reference import np_opener_groups as _np_opener_groups


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


if __name__ == "__main__":
  absltest.main()
