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
"""Tests of the fused chunked statistics pass."""

import functools

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from opd_jax import losses
from opd_jax.heads import stats


def _inputs(b=2, t=10, ds=6, dt=8, v=11, seed=0, dtype=np.float32):
  rng = np.random.default_rng(seed)
  hs = rng.standard_normal((b, t, ds))
  ws = rng.standard_normal((ds, v))
  ht = rng.standard_normal((b, t, dt))
  wt = rng.standard_normal((dt, v))
  ids = rng.integers(0, v, (b, t)).astype(np.int32)
  where = rng.random((b, t)) < 0.8
  return (*(jnp.asarray(x, dtype) for x in (hs, ws, ht, wt)), ids, where)


def _dense_stats(hs, ws, ht, wt, ids, where, temperature, beta, top_k):
  """The same statistics from materialised [B, T, V] logits."""
  zs = jnp.einsum("btd,dv->btv", hs, ws, precision="highest")
  zt = jnp.einsum("btd,dv->btv", ht, wt, precision="highest")
  kw = dict(where=where, temperature=temperature)
  lp = lambda z: jnp.where(
      where, losses.token_logprobs(z, ids, temperature=temperature), 0.0
  )
  out = dict(
      student_entropy=losses.entropy(zs, **kw),
      teacher_entropy=losses.entropy(zt, **kw),
      reverse_kl=losses.reverse_kl(zs, zt, **kw),
      forward_kl=losses.forward_kl(zs, zt, **kw),
      jsd=losses.generalized_jsd(zs, zt, beta=beta, **kw),
      student_logprob=lp(zs),
      teacher_logprob=lp(zt),
  )
  if top_k:
    _, top = jax.lax.top_k(zs, top_k)
    out["student_topk_ids"] = top
    out["teacher_logits_at_topk"] = (
        jnp.take_along_axis(zt, top, -1) / temperature
    )
  return out


def _all_avals(jaxpr):
  """Yields the output avals of every equation, sub-jaxprs included."""
  for eqn in jaxpr.eqns:
    for var in eqn.outvars:
      yield var.aval
    for param in eqn.params.values():
      subs = param if isinstance(param, (tuple, list)) else (param,)
      for sub in subs:
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          yield from _all_avals(inner)


class TokenStatsTest(parameterized.TestCase):

  @parameterized.parameters(
      dict(chunk_size=4, temperature=1.0, top_k=0),  # T=10: padded chunks
      dict(chunk_size=3, temperature=0.8, top_k=3),
      dict(chunk_size=64, temperature=1.3, top_k=2),  # one chunk
  )
  def test_equals_dense_computation(self, chunk_size, temperature, top_k):
    args = _inputs()
    fn = jax.jit(
        functools.partial(
            stats.token_stats,
            chunk_size=chunk_size,
            temperature=temperature,
            jsd_beta=0.3,
            top_k=top_k,
        )
    )
    got = fn(*args[:5], where=args[5])
    want = _dense_stats(*args, temperature, 0.3, top_k)
    for name, value in want.items():
      g = getattr(got, name)
      self.assertEqual(g.shape, value.shape, name)
      if name == "student_topk_ids":
        self.assertEqual(g.dtype, jnp.int32)
        np.testing.assert_array_equal(g, value, err_msg=name)
      else:
        self.assertEqual(g.dtype, jnp.float32, name)
        np.testing.assert_allclose(g, value, rtol=1e-5, atol=1e-5, err_msg=name)
    if not top_k:
      self.assertIsNone(got.student_topk_ids)

  def test_bfloat16_heads(self):
    args = _inputs(dtype=jnp.bfloat16)
    got = stats.token_stats(*args[:5], where=args[5], chunk_size=4)
    self.assertEqual(got.reverse_kl.dtype, jnp.float32)
    up = [jnp.float32(x) for x in args[:4]]
    want = _dense_stats(*up, *args[4:], 1.0, 0.5, 0)
    np.testing.assert_allclose(
        got.reverse_kl, want["reverse_kl"], rtol=1e-4, atol=1e-4
    )

  def test_no_gradient_flows(self):
    args = _inputs()
    grads = jax.grad(
        lambda hs, ws: stats.token_stats(
            hs, ws, *args[2:5], chunk_size=4
        ).reverse_kl.sum(),
        argnums=(0, 1),
    )(*args[:2])
    for g in grads:
      np.testing.assert_array_equal(g, 0.0)

  def test_never_holds_batch_seq_vocab(self):
    b, t, v, chunk = 2, 512, 2048, 16
    args = _inputs(b=b, t=t, v=v)
    fn = functools.partial(stats.token_stats, chunk_size=chunk, top_k=4)
    jaxpr = jax.make_jaxpr(fn)(*args[:5], where=args[5]).jaxpr
    biggest = max(
        np.prod(a.shape) for a in _all_avals(jaxpr) if hasattr(a, "shape")
    )
    self.assertEqual(biggest, b * chunk * v)
    temp = (
        jax.jit(fn)
        .lower(*args[:5], where=args[5])
        .compile()
        .memory_analysis()
        .temp_size_in_bytes
    )
    # A few [B, chunk, V] float32 buffers (T / chunk = 32), below half of
    # one [B, T, V] buffer.
    self.assertLess(temp, b * t * v * 4 // 2)

  def test_input_validation(self):
    hs, ws, ht, wt, ids, where = _inputs()
    with self.assertRaisesRegex(ValueError, "student_head"):
      stats.token_stats(hs, ws[:-1], ht, wt, ids)
    with self.assertRaisesRegex(ValueError, "vocabulary"):
      stats.token_stats(hs, ws, ht, wt[:, :-1], ids)
    with self.assertRaisesRegex(ValueError, "ids"):
      stats.token_stats(hs, ws, ht, wt, ids[:, :-1])
    with self.assertRaisesRegex(ValueError, "where"):
      stats.token_stats(hs, ws, ht, wt, ids, where=where[:, :-1])


if __name__ == "__main__":
  absltest.main()
