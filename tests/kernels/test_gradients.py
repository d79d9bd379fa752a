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
"""Gradients through the C++ kernels equal those of the pure-JAX path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from opd_jax import kernels
from opd_jax import testing
from opd_jax.models.decode import split_layers


@pytest.fixture
def enabled(monkeypatch):
  monkeypatch.delenv("OPD_JAX_CPU_KERNELS", raising=False)
  assert kernels.cpu_kernels_enabled(), "the C++ kernel did not build"


def test_rows_dot_gradients_equal_the_dots(enabled):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((5, 24)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((7, 24)), jnp.float32)
  c = jnp.asarray(rng.standard_normal((5, 7)), jnp.float32)
  loss = lambda f: lambda x, w: jnp.sum(jnp.tanh(f(x, w)) * c)
  text = jax.jit(jax.grad(loss(kernels.rows_dot), (0, 1))).lower(x, w)
  assert "opd_rows_dot" in text.as_text()
  got = jax.grad(loss(kernels.rows_dot), (0, 1))(x, w)
  want = jax.grad(loss(lambda x, w: x @ w.T), (0, 1))(x, w)
  bounds = _tanh_loss_grad_bounds(*(np.asarray(a) for a in (x, w, c)))
  for g, r, bound in zip(got, want, bounds):
    err = np.abs(np.float64(g) - np.float64(r))
    assert (err <= bound).all(), (err - bound).max()


def _tanh_loss_grad_bounds(x, w, c):
  """What float32 order can change in the gradients of sum(tanh(x w^T) c).

  Both paths compute z = x w^T (the kernel and XLA's dot sum K = 24 terms
  in different orders: |dz| <= 2 gamma_K |x| |w|^T, `summation_bound`),
  then the same elementwise G = c (1 - tanh(z)^2) and the backward dots
  dx = G w, dw = G^T x (XLA's in both; allowed a different order too). A
  gradient entry is a difference of terms of size |G| |w|, so its error
  scales with those terms, not with the entry (0.0067 from terms of ~0.3
  on another CPU, |diff| 1.45e-6: beyond rtol 1e-5 + atol 1e-6).

  |dG| <= |c| max|d/dz (1 - tanh^2)| |dz| + elementwise rounding, with
  max|2 tanh (1 - tanh^2)| = 4 / (3 sqrt 3), and 8 u |c| per evaluation for
  tanh (a few ulp), the square, the difference and the product; then
  |d(G w)| <= |dG| |w| + 2 gamma_N |G| |w| (N terms), and so for G^T x.
  """
  x, w, c = (np.float64(a) for a in (x, w, c))
  dz = testing.summation_bound(x, w.T)
  g = c * (1 - np.tanh(x @ w.T) ** 2)
  dg = np.abs(c) * (4 / (3 * np.sqrt(3)) * dz + 2 * 8 * testing.UNIT_ROUNDOFF)
  return (
      dg @ np.abs(w) + testing.summation_bound(g, w),
      dg.T @ np.abs(x) + testing.summation_bound(g.T, x),
  )


def _decode_step_grads(model):
  """Gradients of a loss on one decode step, per Param, and the step's HLO.

  The prefill (plain JAX either way) builds the cache outside the
  gradient; one compile per call.
  """
  prompt = jnp.asarray([[0, 5, 7, 9], [3, 4, 1, 2]], jnp.int32)
  mask = jnp.asarray([[False, True, True, True], [True] * 4])
  cache = model(prompt, attention_mask=mask, cache=model.init_cache(2, 8)).cache
  weights = jnp.linspace(-1.0, 1.0, model.config.vocab_size)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def loss(params, rest, cache):
    step = nnx.merge(graphdef, params, rest)(
        jnp.asarray([[6], [8]], jnp.int32), cache=cache
    )
    return jnp.sum(jax.nn.log_softmax(step.logits) * weights)

  grad = jax.jit(jax.grad(loss)).lower(params, rest, cache).compile()
  return grad.as_text(), grad(params, rest, cache)


def test_a_split_model_has_the_gradients_of_the_jax_path(enabled, monkeypatch):
  # The kernels' custom calls have no derivative of their own: rows_dot and
  # decode_attention differentiate their twins, and the kept [out, in]
  # copies of the weights pass their tangents to the parameters.
  config = testing.tiny_config("qwen2")
  model = testing.random_model(config, seed=0)
  text, got = _decode_step_grads(split_layers(model))
  assert "opd_rows_dot" in text and "opd_decode_attention" in text
  monkeypatch.setenv("OPD_JAX_CPU_KERNELS", "0")
  text, want = _decode_step_grads(split_layers(model))
  assert "opd_rows_dot" not in text and "opd_decode_attention" not in text
  got, want = jax.tree.leaves(got), jax.tree.leaves(want)
  assert len(got) == len(want) > 0
  for g, w in zip(got, want):
    scale = float(jnp.abs(w).max())
    assert scale > 0
    # The kernels sum in another order, so each entry differs by float32
    # rounding of terms as large as the leaf's largest, not its own.
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * scale)
