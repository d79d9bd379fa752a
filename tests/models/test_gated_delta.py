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
"""The chunked gated delta rule against its recurrence and transformers'."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from opd_jax import testing
from opd_jax.models import gated_delta as gd


def _inputs(b=2, t=13, hk=2, hv=4, dk=8, dv=6, seed=0, dtype=np.float64):
  """Random q, k (l2-normalised, as the layer feeds them), v, g, beta."""
  rng = np.random.default_rng(seed)
  q = rng.normal(size=(b, t, hk, dk))
  k = rng.normal(size=(b, t, hk, dk))
  q /= np.linalg.norm(q, axis=-1, keepdims=True)
  k /= np.linalg.norm(k, axis=-1, keepdims=True)
  v = rng.normal(size=(b, t, hv, dv))
  g = -rng.uniform(0.01, 1.5, size=(b, t, hv))
  beta = rng.uniform(0.05, 1.0, size=(b, t, hv))
  return [x.astype(dtype) for x in (q, k, v, g, beta)]


def _naive(q, k, v, g, beta, s0=None):
  """The recurrence in float64 numpy, straight from the module docstring."""
  b, t, hk, dk = k.shape
  hv, dv = v.shape[2:]
  rep = hv // hk
  q = np.repeat(q, rep, axis=2) * dk**-0.5
  k = np.repeat(k, rep, axis=2)
  s = np.zeros((b, hv, dk, dv)) if s0 is None else s0.copy()
  out = np.zeros((b, t, hv, dv))
  for i in range(t):
    s = s * np.exp(g[:, i])[..., None, None]
    pred = np.einsum("bhkv,bhk->bhv", s, k[:, i])
    u = beta[:, i, :, None] * (v[:, i] - pred)
    s = s + k[:, i, :, :, None] * u[:, :, None, :]
    out[:, i] = np.einsum("bhkv,bhk->bhv", s, q[:, i])
  return out, s


def test_recurrent_matches_numpy():
  with jax.enable_x64(True):
    x = _inputs()
    s0 = np.random.default_rng(1).normal(size=(2, 4, 8, 6))
    out, s = gd.gated_delta_recurrent(*map(jnp.asarray, x), initial_state=s0)
    ref_out, ref_s = _naive(*x, s0=s0)
    np.testing.assert_allclose(np.asarray(out), ref_out, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(s), ref_s, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "t,chunk", [(1, 4), (7, 3), (7, 64), (13, 1), (13, 4), (16, 8)]
)
def test_chunked_equals_recurrent_float64(t, chunk):
  with jax.enable_x64(True):
    x = [jnp.asarray(a) for a in _inputs(t=t, seed=t)]
    s0 = jnp.asarray(np.random.default_rng(2).normal(size=(2, 4, 8, 6)))
    out, s = gd.gated_delta_chunked(*x, chunk_size=chunk, initial_state=s0)
    ref_out, ref_s = gd.gated_delta_recurrent(*x, initial_state=s0)
    assert out.dtype == jnp.float64
    np.testing.assert_allclose(out, ref_out, rtol=0, atol=1e-12)
    np.testing.assert_allclose(s, ref_s, rtol=0, atol=1e-12)


def test_chunked_gradients_equal_recurrent_autodiff_float64():
  with jax.enable_x64(True):
    x = [jnp.asarray(a) for a in _inputs(t=11, seed=5)]
    s0 = jnp.asarray(np.random.default_rng(3).normal(size=(2, 4, 8, 6)))
    w = jnp.asarray(np.random.default_rng(4).normal(size=(2, 11, 4, 6)))
    ws = jnp.asarray(np.random.default_rng(6).normal(size=(2, 4, 8, 6)))

    def loss(fn, *args):
      out, s = fn(*args[:5], initial_state=args[5])
      return jnp.sum(out * w) + jnp.sum(s * ws)

    chunked = lambda *a, **kw: gd.gated_delta_chunked(*a, chunk_size=4, **kw)
    argnums = tuple(range(6))
    got = jax.grad(lambda *a: loss(chunked, *a), argnums)(*x, s0)
    ref = jax.grad(lambda *a: loss(gd.gated_delta_recurrent, *a), argnums)(
        *x, s0
    )
    for name, a, r in zip(("q", "k", "v", "g", "beta", "state"), got, ref):
      assert np.all(np.isfinite(a)), name
      np.testing.assert_allclose(a, r, rtol=0, atol=1e-10, err_msg=name)


def test_strong_decay_stays_finite_with_gradients():
  # Decays far below exp(-700) inside one chunk: the masked exponents must
  # not overflow, in values or gradients.
  x = [jnp.asarray(a) for a in _inputs(t=16, seed=7, dtype=np.float32)]
  g = x[3] * 400.0
  f = lambda g: jnp.sum(gd.gated_delta_chunked(*x[:3], g, x[4])[0])
  assert np.isfinite(f(g))
  assert np.all(np.isfinite(jax.grad(f)(g)))


def test_left_padding_does_not_enter_the_state():
  with jax.enable_x64(True):
    q, k, v, g, beta = _inputs(b=2, t=12, seed=8)
    mask = np.ones((2, 12), bool)
    mask[1, :5] = False
    # Garbage in the pads: it must not matter.
    noisy = [a.copy() for a in (q, k, v, g, beta)]
    for a in noisy:
      a[1, :5] = 7.0
    out, s = gd.gated_delta_chunked(
        *map(jnp.asarray, noisy), chunk_size=4, mask=jnp.asarray(mask)
    )
    # Row 1 alone, without its pads.
    alone = [a[1:, 5:] for a in (q, k, v, g, beta)]
    ref_out, ref_s = _naive(*alone)
    np.testing.assert_allclose(out[1, 5:], ref_out[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(s[1], ref_s[0], rtol=0, atol=1e-12)
    assert np.all(np.asarray(out[1, :5]) == 0)
    full_out, full_s = _naive(*(a[:1] for a in (q, k, v, g, beta)))
    np.testing.assert_allclose(out[0], full_out[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(s[0], full_s[0], rtol=0, atol=1e-12)


def test_step_continues_a_chunked_prefix():
  with jax.enable_x64(True):
    x = [jnp.asarray(a) for a in _inputs(t=10, seed=9)]
    _, s = gd.gated_delta_chunked(*(a[:, :9] for a in x), chunk_size=4)
    q, k, v, g, beta = (a[:, 9] for a in x)
    rep = v.shape[1] // q.shape[1]
    q = jnp.repeat(q, rep, axis=1) * q.shape[-1] ** -0.5
    k = jnp.repeat(k, rep, axis=1)
    out, s = gd.gated_delta_step(s, q, k, v, g, beta)
    ref_out, ref_s = gd.gated_delta_chunked(*x, chunk_size=4)
    np.testing.assert_allclose(out, ref_out[:, 9], rtol=0, atol=1e-12)
    np.testing.assert_allclose(s, ref_s, rtol=0, atol=1e-12)


def test_bad_shapes_are_named():
  x = [jnp.asarray(a) for a in _inputs(dtype=np.float32)]
  with pytest.raises(ValueError, match="g .* and beta"):
    gd.gated_delta_chunked(*x[:3], x[3][:, :, :2], x[4])
  with pytest.raises(ValueError, match="not a multiple"):
    gd.gated_delta_chunked(
        x[0], x[1], x[2][:, :, :3], x[3][..., :3], x[4][..., :3]
    )
  with pytest.raises(ValueError, match="initial_state"):
    gd.gated_delta_chunked(*x, initial_state=jnp.zeros((2, 4, 8, 5)))


@pytest.mark.parametrize("t,chunk", [(13, 4), (70, 64)])
def test_matches_transformers_torch_functions(t, chunk):
  torch = pytest.importorskip("torch")
  from transformers.models.qwen3_5 import modeling_qwen3_5 as hf  # pylint: disable=g-import-not-at-top

  raw = _inputs(t=t, seed=10)
  # Unnormalised q, k: transformers normalises them in its kernel.
  rng = np.random.default_rng(11)
  raw[0] = raw[0] * rng.uniform(0.5, 3.0, size=raw[0].shape[:-1] + (1,))
  raw[1] = raw[1] * rng.uniform(0.5, 3.0, size=raw[1].shape[:-1] + (1,))
  s0 = rng.normal(size=(2, 4, 8, 6))
  tq = [torch.as_tensor(a) for a in raw]
  ref_chunk, ref_chunk_s = hf.torch_chunk_gated_delta_rule(
      *tq,
      chunk_size=chunk,
      initial_state=torch.as_tensor(s0),
      output_final_state=True,
      use_qk_l2norm_in_kernel=True,
  )
  ref_rec, ref_rec_s = hf.torch_recurrent_gated_delta_rule(
      *tq,
      initial_state=torch.as_tensor(s0),
      output_final_state=True,
      use_qk_l2norm_in_kernel=True,
  )
  # transformers computes in float32 whatever the input dtype; ours runs in
  # float64 here. Its chunked path's values go through sums of at most
  # C + K products per chunk (the solve, then the reads of the state), and
  # each chunk's error is carried on (decayed, |e^g| <= 1) by the later
  # ones: within 2 gamma_{C+K} max|o| per chunk. Measured: 9e-7 at T = 70.
  with jax.enable_x64(True):
    q, k = (gd.l2_normalize(jnp.asarray(a)) for a in raw[:2])
    out, s = gd.gated_delta_chunked(
        q, k, *map(jnp.asarray, raw[2:]), chunk_size=chunk, initial_state=s0
    )
  chunks = -(-t // chunk)
  for ref, ref_s in ((ref_chunk, ref_chunk_s), (ref_rec, ref_rec_s)):
    for ours, theirs in ((out, ref.numpy()), (s, ref_s.numpy())):
      bound = 2 * testing.gamma(chunk + 8) * (chunks + 1) * np.abs(theirs).max()
      assert np.abs(np.asarray(ours) - theirs).max() <= bound
