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
"""The C++ sequence attention (forward and VJP) equals the float64 dense path.

The kernel sums in float32, so it is checked against the dense scores
evaluated in float64 on the same float32 inputs: the gap is float32
rounding, bounded like the blockwise path's in test_sequence_attention.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from opd_jax import kernels
from opd_jax.models import sequence_attention as sa

_EPS32 = float(np.finfo(np.float32).eps)


@pytest.fixture
def enabled(monkeypatch):
  monkeypatch.delenv("OPD_JAX_CPU_KERNELS", raising=False)
  assert kernels.cpu_kernels_enabled(), "the C++ kernel did not build"


def _inputs(b, t, k, g, h, pads, holes=(), seed=0):
  rng = np.random.default_rng(seed)
  q = rng.standard_normal((b, t, k, g, h)).astype(np.float32)
  kk = rng.standard_normal((b, t, k, h)).astype(np.float32)
  v = rng.standard_normal((b, t, k, h)).astype(np.float32)
  mask = np.arange(t)[None] >= np.asarray(pads)[:, None]
  for row, pos in holes:  # pads inside a row (a response's tail, say)
    mask[row, pos] = False
  w = rng.standard_normal((b, t, k, g, h)).astype(np.float32)
  return q, kk, v, mask, w


def _value_and_grads(fn, q, k, v, mask, w):
  """Outputs, and the gradients of a weighted sum over queries that have at
  least one allowed key (a left pad's output is 0 here, a mean in dense)."""
  seen = (np.cumsum(mask, axis=1) > 0)[:, :, None, None, None]
  loss = lambda q, k, v: jnp.sum(jnp.where(seen, fn(q, k, v) * w, 0.0))
  out = np.where(seen, np.asarray(fn(q, k, v)), 0.0)
  grads = jax.grad(loss, argnums=(0, 1, 2))(q, k, v)
  return out, [np.asarray(x) for x in grads]


@pytest.mark.parametrize(
    "shape",
    [
        # (B, T, K, G, H): one tile, a block boundary, GQA, H = 40 (a
        # 32-lane strip plus an 8-lane one), T past two 32-row blocks.
        (2, 5, 1, 1, 8),
        (3, 37, 2, 3, 16),
        (2, 70, 1, 2, 40),
        (2, 131, 2, 1, 32),
    ],
)
def test_kernel_equals_dense_float64(enabled, shape):
  b, t, k, g, h = shape
  pads = [0, t // 3, 2][:b]
  q, kk, v, mask, w = _inputs(b, t, k, g, h, pads, holes=[(0, t - 1)])
  scale = h**-0.5
  kernel = lambda q, k, v: kernels.sequence_attention(
      q, k, v, jnp.asarray(mask), scale=scale
  )
  out, grads = _value_and_grads(jax.jit(kernel), q, kk, v, mask, w)
  with jax.enable_x64(True):
    dense = lambda q, k, v: sa.dense_attention(q, k, v, mask, scale=scale)
    args = [np.float64(x) for x in (q, kk, v)]
    ref_out, ref_grads = _value_and_grads(dense, *args, mask, np.float64(w))
  # Outputs are convex combinations of the values; gradients sums of about
  # T G products of |w| |v| (|q| + |k| + 1) terms (recursive summation).
  assert np.abs(out - ref_out).max() <= t * _EPS32 * np.abs(v).max()
  terms = t * g * np.abs(w).max() * np.abs(v).max()
  terms *= np.abs(kk).max() + np.abs(q).max() + 1.0
  for a, r in zip(grads, ref_grads):
    assert np.abs(a - r).max() <= t * _EPS32 * terms
    # And much closer than the bound in practice:
    np.testing.assert_allclose(a, r, atol=2e-5 * np.abs(r).max())


def test_kernel_rows_with_no_key_are_zero_and_finite(enabled):
  q, k, v, mask, _ = _inputs(3, 40, 1, 2, 8, pads=(0, 40, 7))
  fn = lambda q: kernels.sequence_attention(
      q, k, v, jnp.asarray(mask), scale=0.3
  )
  out = np.asarray(jax.jit(fn)(q))
  grad = np.asarray(jax.grad(lambda q: jnp.sum(fn(q)))(q))
  assert np.isfinite(out).all() and np.isfinite(grad).all()
  assert not out[1].any() and not out[2, :7].any()
  assert not grad[1].any()


def test_kernel_keeps_the_callers_dtype_for_bfloat16(enabled):
  q, k, v, mask, _ = _inputs(2, 33, 1, 2, 16, pads=(0, 4))
  args = [jnp.asarray(x, jnp.bfloat16) for x in (q, k, v)]
  fn = lambda q, k, v: kernels.sequence_attention(
      q, k, v, jnp.asarray(mask), scale=0.25
  )
  out = jax.jit(fn)(*args)
  grads = jax.grad(lambda *a: jnp.sum(fn(*a).astype(jnp.float32)), (0, 1, 2))(
      *args
  )
  assert out.dtype == jnp.bfloat16
  assert all(x.dtype == jnp.bfloat16 for x in grads)
  ref = sa.dense_attention(
      *[x.astype(jnp.float32) for x in args], mask, scale=0.25
  )
  real = mask[:, :, None, None, None]
  np.testing.assert_allclose(
      np.where(real, np.float32(out), 0), np.where(real, ref, 0), atol=2e-2
  )


def test_auto_runs_the_kernel_on_one_cpu_device_only_when_it_fits(enabled):
  f32 = jnp.zeros((1, 4, 1, 1, 8), jnp.float32)
  k32 = jnp.zeros((1, 4, 1, 8), jnp.float32)
  assert sa._kernel_fits(f32, k32)  # pylint: disable=protected-access
  with jax.enable_x64(True):
    f64 = jnp.zeros((1, 4, 1, 1, 8), jnp.float64)
    assert not sa._kernel_fits(f64, f64[:, :, :, 0])  # pylint: disable=protected-access
  odd = jnp.zeros((1, 4, 1, 1, 12), jnp.float32)
  assert not sa._kernel_fits(odd, odd[:, :, :, 0])  # pylint: disable=protected-access
  assert sa.auto_implementation("cpu", 8192, kernel=True) == "cpu_kernel"
  assert sa.auto_implementation("gpu", 8192, kernel=True) == "cudnn"


def test_kernel_refuses_other_shapes(enabled):
  q = jnp.zeros((1, 4, 1, 1, 8), jnp.float32)
  with pytest.raises(ValueError, match=r"k, v \[B, T, K, H\]"):
    kernels.sequence_attention(
        q, q[:, :3, :, 0], q[:, :3, :, 0], jnp.ones((1, 4), bool), scale=1.0
    )
  with pytest.raises(ValueError, match=r"key_mask \[B, T\]"):
    kernels.sequence_attention(
        q, q[:, :, :, 0], q[:, :, :, 0], jnp.ones((1, 5), bool), scale=1.0
    )
