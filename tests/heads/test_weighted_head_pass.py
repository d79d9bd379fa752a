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
"""`weighted_head_pass`: the gradient formed in the forward pass equals
autodiff of the plain sum, in every argument, chunked or not."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from opd_jax import heads
from opd_jax import losses
from opd_jax.heads import chunked

B, N, DS, DT, V = 2, 11, 6, 5, 17


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  arr = lambda *s: jnp.asarray(rng.standard_normal(s), jnp.float32)
  mask = rng.random((B, N)) > 0.3
  weights = jnp.asarray(mask * rng.random((B, N)), jnp.float32)
  return arr(B, N, DS), arr(DS, V), arr(B, N, DT), arr(DT, V), weights


def _jsd(zs, zt, where):
  return losses.generalized_jsd(zs, zt, where=where, beta=0.3)


def _reference(hs, ws, ht, wt, weights):
  """sum(weights * D) from full logits, plain autodiff."""
  zs = jnp.einsum("bnd,dv->bnv", hs, ws, precision="highest")
  zt = jnp.einsum("bnd,dv->bnv", ht, wt, precision="highest")
  return jnp.sum(weights * _jsd(zs, zt, weights != 0))


def _close(got, want):
  """Equal up to float32 summation order: each entry is a sum over the
  batch, positions and vocabulary, summed in another order than the
  reference's, so the bound scales with the largest entry (errors seen:
  below 1e-6 of it)."""
  np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max())


class WeightedHeadPassTest(parameterized.TestCase):

  @parameterized.parameters(None, 3, 4, 11)
  def test_value_and_every_gradient_equal_autodiff(self, chunk):
    hs, ws, ht, wt, weights = _inputs()

    def ours(hs, ws, ht, wt, weights):
      values, total = chunked.weighted_head_pass(
          _jsd, hs, ws, ht, wt, weights, weights != 0, chunk_size=chunk
      )
      return total, values

    (total, values), grads = jax.jit(
        jax.value_and_grad(ours, argnums=(0, 1, 2, 3, 4), has_aux=True)
    )(hs, ws, ht, wt, weights)
    ref_total, ref_grads = jax.value_and_grad(_reference, argnums=(0, 1, 4))(
        hs, ws, ht, wt, weights
    )
    np.testing.assert_allclose(total, ref_total, rtol=1e-5)
    np.testing.assert_allclose(jnp.sum(weights * values), total, rtol=1e-6)
    for got, want in zip((grads[0], grads[1], grads[4]), ref_grads):
      _close(got, want)
    for g in grads[2:4]:  # the teacher side carries no gradient
      np.testing.assert_array_equal(g, 0.0)

  def test_values_carry_no_gradient(self):
    hs, ws, ht, wt, weights = _inputs(1)
    g = jax.grad(
        lambda hs: jnp.sum(
            chunked.weighted_head_pass(
                _jsd, hs, ws, ht, wt, weights, weights != 0
            )[0]
        )
    )(hs)
    np.testing.assert_array_equal(g, 0.0)

  def test_bfloat16_operands_keep_their_dtypes(self):
    *f32, weights = _inputs(2)
    hs, ws, ht, wt = (x.astype(jnp.bfloat16) for x in f32)
    grads = jax.grad(
        lambda hs, ws: chunked.weighted_head_pass(
            _jsd, hs, ws, ht, wt, weights, weights != 0, chunk_size=4
        )[1],
        argnums=(0, 1),
    )(hs, ws)
    self.assertEqual([g.dtype for g in grads], [jnp.bfloat16, jnp.bfloat16])
    f32 = [x.astype(jnp.float32) for x in (hs, ws, ht, wt)]  # bf16 values
    want = jax.grad(_reference, argnums=(0, 1))(*f32, weights)
    for got, w in zip(grads, want):  # bf16 products: 8 mantissa bits
      np.testing.assert_allclose(
          got.astype(jnp.float32), w, atol=0.02 * np.abs(w).max()
      )

  def test_differentiable_weights_in_the_loss(self):
    # A method whose token weights depend on the student (none does today)
    # gets d loss / d weights, counted once.
    hs, ws, ht, wt, weights = _inputs(3)
    for reduction in ("token_mean", "seq_mean", "sum"):
      ours = jax.grad(
          lambda w: heads.dense_divergence_loss(
              hs, ws, ht, wt, w, divergence="jsd",
              divergence_kwargs={"beta": 0.3}, reduction=reduction,
              chunk_size=4,
          ).value()
      )(weights)  # fmt: skip

      def reference(w):
        zs, zt = hs @ ws, ht @ wt
        return losses.reduce(_jsd(zs, zt, w != 0), w, reduction).value()

      want = jax.grad(reference)(weights)
      _close(ours, want)

  def test_weights_shape_is_checked(self):
    hs, ws, ht, wt, weights = _inputs()
    with self.assertRaisesRegex(
        ValueError, r"weights must have shape \(2, 11\)"
    ):
      chunked.weighted_head_pass(_jsd, hs, ws, ht, wt, weights[:, :3])


if __name__ == "__main__":
  absltest.main()
