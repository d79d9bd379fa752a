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
"""The C++ few-row product equals float64 numpy, and falls back cleanly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from opd_jax import kernels
from opd_jax import testing
from opd_jax.kernels import cpu
from opd_jax.models import layers
from opd_jax.models.decode import split_layers

_rows_dot = jax.jit(kernels.rows_dot)


def _uses_kernel(fn, *args) -> bool:
  return "opd_rows_dot" in jax.jit(fn).lower(*args).as_text()


def _assert_within_float32_rounding(got, x, w):
  """|got - x.w| <= gamma_K sum_k |x_k w_k|: any float32 order of the sum."""
  x64, w64 = np.asarray(x, np.float64), np.asarray(w, np.float64)
  bound = testing.summation_bound(x64, w64.T, evaluations=1)
  err = np.abs(np.asarray(got, np.float64) - x64 @ w64.T)
  assert (err <= bound).all(), (err - bound).max()


@pytest.fixture
def enabled(monkeypatch):
  monkeypatch.delenv("OPD_JAX_CPU_KERNELS", raising=False)
  assert kernels.cpu_kernels_enabled(), "the C++ kernel did not build"


@pytest.mark.parametrize("m", [1, 4, 5, 64])
@pytest.mark.parametrize("k", [3, 8, 13, 256])
@pytest.mark.parametrize("n", [1, 2, 49, 301])
def test_rows_dot_equals_float64(enabled, m, k, n):
  rng = np.random.default_rng(m * 1000 + k * 10 + n)
  x = jnp.asarray(rng.standard_normal((m, k)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((n, k)), jnp.float32)
  assert _uses_kernel(kernels.rows_dot, x, w)
  got = _rows_dot(x, w)
  assert got.shape == (m, n) and got.dtype == jnp.float32
  _assert_within_float32_rounding(got, x, w)


@pytest.mark.parametrize("x_dtype", [jnp.bfloat16, jnp.float32])
@pytest.mark.parametrize("m, k, n", [(1, 8, 2), (5, 13, 49), (8, 256, 301)])
def test_bfloat16_weights_are_read_exactly(enabled, x_dtype, m, k, n):
  # A bfloat16 widens to float32 exactly, so the kernel's result is the
  # float32 product of the widened operands.
  rng = np.random.default_rng(m + k + n)
  x = jnp.asarray(rng.standard_normal((m, k)), x_dtype)
  w = jnp.asarray(rng.standard_normal((n, k)), jnp.bfloat16)
  assert _uses_kernel(kernels.rows_dot, x, w)
  got = _rows_dot(x, w)
  assert got.dtype == jnp.float32
  _assert_within_float32_rounding(got, x, w)


def test_two_kernels_at_once_share_the_thread_pool(enabled):
  # Independent products may run concurrently on XLA's pool; each claims
  # its chunks and none waits on a queued task.
  rng = np.random.default_rng(0)
  xs = [
      jnp.asarray(rng.standard_normal((8, 64)), jnp.float32) for _ in range(4)
  ]
  w = jnp.asarray(rng.standard_normal((5000, 64)), jnp.float32)
  got = jax.jit(lambda xs, w: [kernels.rows_dot(x, w) for x in xs])(xs, w)
  for x, g in zip(xs, got):
    _assert_within_float32_rounding(g, x, w)


def test_other_dtypes_and_disabled_kernels_use_the_dot(enabled, monkeypatch):
  # bfloat16 x against float32 w would round w in the dot: not the kernel's
  # product, so the dot runs.
  x = jnp.ones((2, 16), jnp.bfloat16)
  w = jnp.ones((3, 16), jnp.float32)
  assert not _uses_kernel(kernels.rows_dot, x, w)
  np.testing.assert_array_equal(kernels.rows_dot(x, w), np.full((2, 3), 16.0))
  f16 = jnp.ones((3, 16), jnp.float16)
  assert not _uses_kernel(kernels.rows_dot, f16[:2], f16)
  monkeypatch.setenv("OPD_JAX_CPU_KERNELS", "0")
  assert not kernels.cpu_kernels_enabled()
  x32, w32 = x.astype(jnp.float32), w.astype(jnp.float32)
  assert not _uses_kernel(kernels.rows_dot, x32, w32)


def test_mismatched_shapes_name_both():
  with pytest.raises(ValueError, match=r"x \[M, K\].*\(2, 16\).*\(3, 15\)"):
    kernels.rows_dot(jnp.ones((2, 16)), jnp.ones((3, 15)))


@pytest.fixture
def fresh_build(monkeypatch, tmp_path):
  """A process that has not tried to build the kernels yet."""
  monkeypatch.delenv("OPD_JAX_CPU_KERNELS", raising=False)
  monkeypatch.setenv("OPD_JAX_CACHE", str(tmp_path))
  cpu._load.cache_clear()
  yield tmp_path
  cpu._load.cache_clear()  # later tests load the real build again


def test_a_failed_build_warns_once_and_falls_back(fresh_build, monkeypatch):
  monkeypatch.setenv("CXX", "false")  # a "compiler" that always fails
  with pytest.warns(UserWarning, match="building the CPU kernels failed"):
    assert not kernels.cpu_kernels_enabled()
  assert not kernels.cpu_kernels_enabled()  # no second attempt, no warning
  assert not list((fresh_build / "kernels").glob("*"))  # no partial library
  x, w = jnp.ones((2, 4)), jnp.ones((3, 4))
  np.testing.assert_array_equal(kernels.rows_dot(x, w), np.full((2, 3), 4.0))


def test_no_compiler_warns_and_falls_back(fresh_build, monkeypatch):
  monkeypatch.setattr(cpu, "_compiler", lambda: None)
  with pytest.warns(UserWarning, match="no C\\+\\+ compiler"):
    assert not kernels.cpu_kernels_enabled()


def test_a_build_is_cached(fresh_build):
  assert kernels.cpu_kernels_enabled()
  (lib,) = (fresh_build / "kernels").glob("cpu_kernels-*.so")
  stamp = lib.stat().st_mtime_ns
  cpu._load.cache_clear()
  assert kernels.cpu_kernels_enabled()
  assert lib.stat().st_mtime_ns == stamp  # loaded, not rebuilt


def _decode_step_hlo(model, rows=3):
  cache = model.init_cache(rows, 8)
  tokens = jnp.ones((rows, 1), jnp.int32)
  step = nnx.jit(lambda m, t, c: m(t, cache=c).logits)
  return step.lower(model, tokens, cache).as_text()


def test_a_split_float32_model_decodes_with_the_kernel(enabled, monkeypatch):
  config = testing.tiny_config("qwen2")
  model = testing.random_model(config, seed=0)
  split = split_layers(model)
  projections = [
      n
      for _, n in nnx.iter_graph(split.layers)
      if isinstance(n, layers.Projection)
  ]
  assert len(projections) == 7 * config.num_layers
  o_proj = split.layers[0].attn.o_proj
  np.testing.assert_array_equal(
      o_proj.rows[...],
      np.asarray(o_proj.kernel[...]).reshape(-1, config.embed_dim).T,
  )
  # The 7 L projections and, at up to 8 rows, the head.
  calls = _decode_step_hlo(split).count("opd_rows_dot")
  assert calls >= 7 * config.num_layers + 1
  assert _decode_step_hlo(split, rows=9).count("opd_rows_dot") == calls - 1
  # More rows than DECODE_KERNEL_ROWS (a prefill) use the dot.
  prefill = jnp.ones((1, layers.DECODE_KERNEL_ROWS + 1), jnp.int32)
  text = nnx.jit(lambda m, t: m(t).logits).lower(split, prefill).as_text()
  assert "opd_rows_dot" not in text
  # A bfloat16 model reads its bfloat16 rows; with the kernels off, the dot.
  bf16 = testing.random_model(config, seed=0, dtype=jnp.bfloat16)
  assert _decode_step_hlo(split_layers(bf16)).count("opd_rows_dot_bf16") == (
      calls
  )
  monkeypatch.setenv("OPD_JAX_CPU_KERNELS", "0")
  assert "opd_rows_dot" not in _decode_step_hlo(split_layers(model))
