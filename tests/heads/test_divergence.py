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
"""Tests of the gathered (selective) and chunked dense divergence losses."""

import functools

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from opd_jax import losses
from opd_jax import heads
from opd_jax import selection

B, T, DS, DT, V, K = 2, 9, 5, 7, 13, 4


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  arr = lambda *s: jnp.asarray(rng.standard_normal(s), jnp.float32)
  response = np.ones((B, T), bool)
  response[1, 6:] = False  # a shorter second rollout
  # At most K selected response positions per row; row 1 has fewer.
  select = np.zeros((B, T), np.float32)
  select[0, [0, 3, 4, 8]] = 1.0
  select[1, [2, 5]] = 1.0
  return arr(B, T, DS), arr(DS, V), arr(B, T, DT), arr(DT, V), select


def _grads(loss_fn, hs, ws):
  return jax.value_and_grad(loss_fn, argnums=(0, 1))(hs, ws)


# Every divergence, reduction and chunking appears at least once.
CASES = [
    dict(
        testcase_name=f"{d}_{r}_{c}",
        divergence=d,
        reduction=r,
        chunk=c,
        kwargs=kw,
    )
    for d, kw, r, c in (
        ("reverse_kl", None, "token_mean", None),
        ("reverse_kl", None, "seq_mean", 3),
        ("jsd", {"beta": 0.3}, "sum", None),
        ("forward_kl", None, "token_mean", 3),
        ("tvd", None, "sum", 2),
        ("skew_reverse_kl", {"alpha": 0.2}, "seq_mean", None),
    )
]


class SelectiveTest(parameterized.TestCase):

  @parameterized.named_parameters(*CASES)
  def test_selective_equals_dense_under_same_mask(
      self, divergence, reduction, chunk, kwargs
  ):
    hs, ws, ht, wt, select = _inputs()
    index, weights = selection.mask_to_index(jnp.asarray(select), K)
    kw = dict(
        divergence=divergence,
        divergence_kwargs=kwargs,
        temperature=0.9,
        reduction=reduction,
        chunk_size=chunk,
    )
    sel_loss = lambda hs, ws: heads.selective_divergence_loss(
        hs, ws, ht, wt, index, weights, **kw
    ).value()
    dense_loss = lambda hs, ws: heads.dense_divergence_loss(
        hs, ws, ht, wt, jnp.asarray(select), **kw
    ).value()
    (v_sel, g_sel), (v_dense, g_dense) = (
        _grads(jax.jit(f), hs, ws) for f in (sel_loss, dense_loss)
    )
    np.testing.assert_allclose(v_sel, v_dense, rtol=1e-5, atol=1e-6)
    for a, b in zip(g_sel, g_dense):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

  def test_dense_matches_full_logit_reference(self):
    hs, ws, ht, wt, select = _inputs(1)
    mask = select > 0

    def reference(hs, ws):
      zs = jnp.einsum("btd,dv->btv", hs, ws, precision="highest")
      zt = jnp.einsum("btd,dv->btv", ht, wt, precision="highest")
      return losses.token_mean(
          losses.reverse_kl(zs, zt, where=mask), mask
      ).value()

    def ours(hs, ws):
      return heads.dense_divergence_loss(
          hs, ws, ht, wt, mask, chunk_size=None
      ).value()

    (v0, g0), (v1, g1) = _grads(reference, hs, ws), _grads(ours, hs, ws)
    np.testing.assert_allclose(v1, v0, rtol=1e-5)
    for a, b in zip(g1, g0):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

  def test_chunked_full_tokens_equal_unchunked(self):
    hs, ws, ht, wt, _ = _inputs(2)
    mask = jnp.ones((B, T)).at[1, 7:].set(0.0)
    loss = lambda chunk: jax.jit(
        lambda hs, ws: heads.dense_divergence_loss(
            hs, ws, ht, wt, mask, chunk_size=chunk
        ).value()
    )
    v0, g0 = _grads(loss(None), hs, ws)
    for chunk in (2, 4):  # T=9: both pad the last chunk
      v1, g1 = _grads(loss(chunk), hs, ws)
      np.testing.assert_allclose(v1, v0, rtol=1e-5)
      for a, b in zip(g1, g0):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

  def test_teacher_gets_no_gradient(self):
    hs, ws, ht, wt, select = _inputs(3)
    index, weights = selection.mask_to_index(jnp.asarray(select), K)
    grads = jax.grad(
        lambda ht, wt: heads.selective_divergence_loss(
            hs, ws, ht, wt, index, weights, chunk_size=2
        ).value(),
        argnums=(0, 1),
    )(ht, wt)
    for g in grads:
      np.testing.assert_array_equal(g, 0.0)

  def test_bfloat16_hidden_and_heads(self):
    hs, ws, ht, wt, select = _inputs(4)
    index, weights = selection.mask_to_index(jnp.asarray(select), K)
    f = functools.partial(
        heads.selective_divergence_loss, index=index, index_weights=weights
    )
    got = f(*(jnp.bfloat16(x) for x in (hs, ws, ht, wt))).value()
    self.assertEqual(got.dtype, jnp.float32)
    np.testing.assert_allclose(got, f(hs, ws, ht, wt).value(), rtol=0.05)

  def test_input_validation(self):
    hs, ws, ht, wt, select = _inputs()
    index, weights = selection.mask_to_index(jnp.asarray(select), K)
    with self.assertRaisesRegex(ValueError, "divergence must be one of"):
      heads.selective_divergence_loss(
          hs, ws, ht, wt, index, weights, divergence="kl"
      )
    with self.assertRaisesRegex(ValueError, "index_weights"):
      heads.selective_divergence_loss(hs, ws, ht, wt, index, weights[:, :2])
    with self.assertRaisesRegex(ValueError, "mode must be one of"):
      heads.dense_divergence_loss(
          hs, ws, ht, wt, jnp.asarray(select), reduction="mean"
      )
    with self.assertRaisesRegex(ValueError, "teacher_hidden"):
      heads.dense_divergence_loss(hs, ws, ht[:, :-1], wt, jnp.asarray(select))


if __name__ == "__main__":
  absltest.main()
