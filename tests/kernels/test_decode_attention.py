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
"""The C++ decode attention equals float64 numpy and the model's JAX path."""

import functools

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


@functools.partial(jax.jit, static_argnames="scale")
def _attend(q, k_new, v_new, k_cache, v_cache, key_mask, start, scale):
  return kernels.decode_attention(
      q, k_new, v_new, k_cache, v_cache, key_mask, start, scale=scale
  )


def _reference(q, k_new, v_new, k_cache, v_cache, key_mask, start, scale):
  """The step in float64 numpy: write the slot, then masked softmax."""
  k = np.array(k_cache, np.float64)
  v = np.array(v_cache, np.float64)
  slots = k.shape[-1]
  write = min(max(start, 0), slots - 1)
  k[:, :, :, write] = k_new
  v[:, :, write, :] = v_new
  logits = np.einsum("bkgh,bkhs->bkgs", np.float64(q), k) * scale
  allowed = key_mask[:, None, None, :] & (np.arange(slots) <= start)
  logits = np.where(allowed, logits, -np.inf)
  top = logits.max(-1, keepdims=True)
  p = np.exp(logits - np.where(np.isfinite(top), top, 0.0))
  # No allowed slot: XLA's softmax over equal floors is uniform.
  p = np.where(allowed.any(-1, keepdims=True), p, 1.0)
  p /= p.sum(-1, keepdims=True)
  return np.einsum("bkgs,bksh->bkgh", p, v), k, v


def _attention_bound(q, k, v, allowed, scale):
  """What float32 rounding, in any order, can change in the attention.

  First order in u = 2^-24, from the float64 operands (k [B,K,H,S] and v
  [B,K,S,H] with the step's slot written; allowed [B,S] or broadcastable
  to [B,K,G,S]):
  - a logit l_s = scale q.k_s is off by at most
    e_s = gamma_(H+2) scale |q|.|k_s| (H products and sums, the scale's
    multiply and the scale itself rounded to float32);
  - p_s = exp(l_s - m) / Z is off, relatively, by at most
    e_s + max_j e_j (the numerator's and Z's logits) + u |l_s - m| (the
    subtraction's rounding, in the exponent) + 2 u (exp, to about 1 ulp
    in the kernel and XLA) + u (the division) + gamma_S (Z's sum of S);
  - out = sum_s p_s v_s is then off by at most
    sum_s |dp_s| |v_s| + gamma_S sum_s p_s |v_s|.
  A row with no allowed slot averages v uniformly: only the last two
  roundings apply.
  """
  u, slots = testing.UNIT_ROUNDOFF, k.shape[-1]
  head = q.shape[-1]
  q, k, v = (np.float64(a) for a in (q, k, v))
  logits = np.einsum("bkgh,bkhs->bkgs", q, k) * scale
  e = (
      testing.gamma(head + 2)
      * scale
      * np.einsum("bkgh,bkhs->bkgs", np.abs(q), np.abs(k))
  )
  allowed = np.broadcast_to(allowed, logits.shape)
  any_allowed = allowed.any(-1, keepdims=True)
  logits = np.where(allowed, logits, -np.inf)
  top = np.where(any_allowed, logits.max(-1, keepdims=True), 0.0)
  p = np.where(any_allowed, np.exp(logits - top), 1.0)
  p /= p.sum(-1, keepdims=True)
  e = np.where(allowed, e, 0.0)
  shift = np.where(allowed, np.abs(logits - top), 0.0)
  rel = e + e.max(-1, keepdims=True) + u * shift
  rel = rel + 3 * u + testing.gamma(slots)
  dp = p * rel
  return np.einsum("bkgs,bksh->bkgh", dp, np.abs(v)) + testing.gamma(
      slots
  ) * np.einsum("bkgs,bksh->bkgh", p, np.abs(v))


def _inputs(b, kv, g, h, s, seed, dtype=jnp.float32):
  """q (float32), k_new, v_new, k_cache, v_cache (dtype) and a key mask."""
  rng = np.random.default_rng(seed)
  normal = lambda *shape, dt=dtype: np.asarray(
      jnp.asarray(rng.standard_normal(shape), dt)
  )
  mask = rng.random((b, s)) < 0.8
  return (
      normal(b, kv, g, h, dt=jnp.float32),
      normal(b, kv, h),
      normal(b, kv, h),
      normal(b, kv, h, s),
      normal(b, kv, s, h),
      mask,
  )


# (B, K, G, H, S, start): group counts 1-5, head dims below, at and off the
# kernel's 8- and 32-lane blocks, the first and last slot, and a start past
# the buffer (the write clamps like dynamic_update_slice).
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize(
    "b, kv, g, h, s, start",
    [
        (2, 2, 2, 64, 50, 20),
        (3, 1, 3, 8, 9, 8),
        (1, 2, 1, 13, 37, 36),
        (2, 1, 5, 40, 17, 3),
        (1, 1, 1, 32, 16, 0),
        (4, 2, 2, 64, 300, 299),
        (2, 2, 4, 16, 12, 15),
    ],
)
def test_decode_attention_equals_float64(enabled, dtype, b, kv, g, h, s, start):
  # A bfloat16 cache is read as float32 exactly: the same bound holds.
  q, k_new, v_new, k_cache, v_cache, mask = _inputs(b, kv, g, h, s, s, dtype)
  mask[:, min(start, s - 1)] = True  # the step's own slot
  mask[0] = False  # a row with no valid slot
  k_before = k_cache.copy()
  k_cache = jnp.asarray(k_cache)
  args = (q, k_new, v_new, k_cache, v_cache, mask, jnp.int32(start))
  text = _attend.lower(*args, scale=h**-0.5).as_text()
  assert "opd_decode_attention" in text
  out, k_got, v_got = _attend(*args, scale=h**-0.5)
  assert k_got.dtype == v_got.dtype == dtype and out.dtype == jnp.float32
  want, k_want, v_want = _reference(*args[:6], start, h**-0.5)
  assert (k_got != k_cache).any()  # the step's slot was written
  np.testing.assert_array_equal(np.float64(k_got), k_want)
  np.testing.assert_array_equal(np.float64(v_got), v_want)
  allowed = mask[:, None, None, :] & (np.arange(s) <= start)
  bound = _attention_bound(q, k_want, v_want, allowed, h**-0.5)
  err = np.abs(np.float64(out) - want)
  assert (err <= bound).all(), (err - bound).max()
  # The caller's buffers are not written: without donation XLA copies an
  # aliased argument before the call.
  np.testing.assert_array_equal(k_cache, k_before)


@pytest.mark.parametrize(
    "dtype, tolerance",
    # bfloat16: the JAX path rounds the probabilities to bfloat16 where the
    # kernel keeps float32, so logits of scale 0.5 differ by bfloat16
    # rounding (2^-8 relative) carried through the layers: 2e-3 observed,
    # as far as either path is from the float32 model (3e-3).
    [(jnp.float32, 1e-5), (jnp.bfloat16, 1e-2)],
)
def test_a_split_model_decodes_like_the_jax_path(
    enabled, monkeypatch, dtype, tolerance
):
  config = testing.tiny_config("qwen2")
  prompt = jnp.asarray([[0, 5, 7, 9], [3, 4, 1, 2]], jnp.int32)
  prompt_mask = jnp.asarray([[False, True, True, True], [True] * 4])

  def decode(model):
    cache = model.init_cache(2, 12)
    out = model(prompt, attention_mask=prompt_mask, cache=cache)
    logits = [out.logits[:, -1]]
    step = nnx.jit(lambda m, t, c: m(t, cache=c))
    text = step.lower(model, prompt[:, :1], out.cache).as_text()
    for i in range(4):
      out = step(model, jnp.argmax(logits[-1], -1)[:, None], out.cache)
      logits.append(out.logits[:, -1])
    return text, jnp.stack(logits), out.cache

  model = testing.random_model(config, seed=0, dtype=dtype)
  text, got, cache = decode(split_layers(model))
  assert text.count("opd_decode_attention") == config.num_layers
  monkeypatch.setenv("OPD_JAX_CPU_KERNELS", "0")
  text, want, want_cache = decode(split_layers(model))
  assert "opd_decode_attention" not in text
  np.testing.assert_allclose(got, want, rtol=0, atol=tolerance)
  for a, b in zip(cache.k + cache.v, want_cache.k + want_cache.v):
    np.testing.assert_allclose(
        np.float32(a), np.float32(b), rtol=0, atol=tolerance
    )


def test_prefill_float16_and_unsplit_models_keep_the_jax_path(enabled):
  config = testing.tiny_config("qwen2")
  model = testing.random_model(config, seed=0)
  call = nnx.jit(lambda m, t, c: m(t, cache=c).logits)
  one = jnp.ones((2, 1), jnp.int32)
  split = split_layers(model)
  prefill = call.lower(
      split, jnp.ones((2, 3), jnp.int32), split.init_cache(2, 8)
  )
  assert "opd_decode_attention" not in prefill.as_text()
  f16 = split_layers(testing.random_model(config, seed=0, dtype=jnp.float16))
  text = call.lower(f16, one, f16.init_cache(2, 8)).as_text()
  assert "opd_decode_attention" not in text
  text = call.lower(model, one, model.init_cache(2, 8)).as_text()
  assert "opd_decode_attention" not in text


# (argument, how it is spoiled, the error's words): one bad input each.
_BAD_INPUTS = [
    (
        "v_cache",
        lambda x: x[:, :, :9],
        r"v_cache must be float32 \(2, 2, 10, 8\)",
    ),
    ("k_new", lambda x: x.astype(np.float16), "k_new must be float32"),
    ("q", lambda x: x[:, 0], r"q \[B, K, G, H\].*\(2, 2, 8\)"),
    (
        "k_cache",
        lambda x: x.astype(np.float16),
        "k_cache must be float32 or bfloat16",
    ),
    ("key_mask", lambda x: x[:, :5], r"key_mask \[B, S\] = \(2, 10\)"),
]


@pytest.mark.parametrize("name, spoil, words", _BAD_INPUTS)
def test_bad_inputs_name_the_tensor(enabled, name, spoil, words):
  names = ("q", "k_new", "v_new", "k_cache", "v_cache", "key_mask")
  args = dict(zip(names, _inputs(2, 2, 2, 8, 10, seed=0)))
  args[name] = spoil(args[name])
  with pytest.raises(ValueError, match=words):
    kernels.decode_attention(**args, start=jnp.int32(3), scale=1.0)


def test_disabled_kernels_refuse_to_run(monkeypatch):
  monkeypatch.setenv("OPD_JAX_CPU_KERNELS", "0")
  q, k_new, v_new, k_cache, v_cache, mask = _inputs(1, 1, 1, 8, 4, seed=0)
  with pytest.raises(RuntimeError, match="not available"):
    kernels.decode_attention(
        q, k_new, v_new, k_cache, v_cache, mask, jnp.int32(0), scale=1.0
    )
