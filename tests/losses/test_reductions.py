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
"""Tests of the masked (sum, count) reductions."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from opd_jax import losses

MODES = ("token_mean", "seq_mean", "sum")

# Dyadic values and power-of-two row lengths: every partial sum is exact in
# float32, so split and whole batches must agree bit for bit.
VALUES = np.array(
    [
        [1.5, 2.0, 0.25, 7.0],
        [3.0, -1.0, 4.5, 0.5],
        [9.0, 9.0, 9.0, 9.0],
        [0.75, 2.5, -3.0, 1.0],
    ],
    np.float32,
)
MASK = np.array(
    [[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 0, 0]], np.float32
)


class ReductionTest(parameterized.TestCase):

  def test_hand_computed(self):
    valid = [1.5, 2.0, 3.0, -1.0, 4.5, 0.5, 0.75]
    np.testing.assert_allclose(
        losses.token_mean(VALUES, MASK).value(), np.mean(valid)
    )
    # Row means 1.75, 1.75, 0.75; the empty row is left out.
    seq = losses.seq_mean(VALUES, MASK)
    self.assertEqual(float(seq.count), 3.0)
    np.testing.assert_allclose(seq.value(), (1.75 + 1.75 + 0.75) / 3)
    np.testing.assert_allclose(
        losses.sum_reduction(VALUES, MASK).value(), np.sum(valid)
    )

  @parameterized.parameters(*MODES)
  def test_halves_add_up_exactly(self, mode):
    whole = losses.reduce(VALUES, MASK, mode)
    parts = [
        losses.reduce(VALUES[s], MASK[s], mode)
        for s in (slice(0, 2), slice(2, 4))
    ]
    combined = parts[0] + parts[1]
    self.assertEqual(float(combined.value()), float(whole.value()))
    self.assertEqual(float(combined.count), float(whole.count))
    # The builtin sum() works too (it starts from 0).
    self.assertEqual(float(sum(parts).value()), float(whole.value()))

  @parameterized.parameters(*MODES)
  def test_halves_add_up_on_random_values(self, mode):
    rng = np.random.default_rng(0)
    values = np.float32(rng.standard_normal((6, 5)))
    mask = rng.random((6, 5)) < 0.6
    whole = losses.reduce(values, mask, mode).value()
    halves = losses.reduce(values[:3], mask[:3], mode) + losses.reduce(
        values[3:], mask[3:], mode
    )
    np.testing.assert_allclose(halves.value(), whole, rtol=1e-6)

  @parameterized.parameters(*MODES)
  def test_masked_nan_does_not_leak(self, mode):
    values = VALUES.copy()
    values[2, :] = np.nan  # the all-masked row
    values[0, 3] = np.inf
    red = lambda v: losses.reduce(v, MASK, mode).value()
    np.testing.assert_allclose(red(values), red(VALUES))
    grad = jax.grad(red)(values)
    self.assertTrue(np.isfinite(grad).all())
    np.testing.assert_array_equal(grad[MASK == 0], 0.0)

  def test_empty_mask_gives_zero(self):
    for mode in MODES:
      self.assertEqual(
          float(losses.reduce(VALUES, np.zeros_like(MASK), mode).value()), 0.0
      )

  def test_weighted_mean_is_a_pytree_and_jits(self):
    f = jax.jit(lambda v, m: losses.token_mean(v, m))
    out = f(VALUES, MASK)
    self.assertIsInstance(out, losses.WeightedMean)
    self.assertLen(jax.tree.leaves(out), 2)
    doubled = jax.tree.map(lambda x: 2 * x, out)
    np.testing.assert_allclose(doubled.value(), out.value())

  def test_boolean_mask(self):
    np.testing.assert_allclose(
        losses.token_mean(VALUES, MASK.astype(bool)).value(),
        losses.token_mean(VALUES, MASK).value(),
    )

  def test_unknown_mode_lists_allowed(self):
    with self.assertRaisesRegex(ValueError, "seq_mean.*sum.*token_mean"):
      losses.reduce(VALUES, MASK, "mean")
    with self.assertRaisesRegex(ValueError, "same shape"):
      losses.token_mean(VALUES, MASK[:, :2])


if __name__ == "__main__":
  absltest.main()
