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
"""KV-cached decoding reproduces the uncached forward, left padding included."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from opd_jax import testing
from opd_jax.models.attention import extend_cache
from opd_jax.models.decode import split_layers


@nnx.jit
def _full(model, tokens, mask):
  return model(tokens, attention_mask=mask).logits


@nnx.jit(static_argnames=())
def _step(model, tokens, mask, cache):
  out = model(tokens, attention_mask=mask, cache=cache)
  return out.logits, out.cache


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3"])
def test_prefill_then_decode_matches_uncached(family):
  config = testing.tiny_config(family, llama3_rope=family == "llama")
  model = testing.random_model(config, seed=3)
  b, p, t = 3, 7, 9
  rng = np.random.default_rng(0)
  tokens = rng.integers(3, config.vocab_size, (b, p + t))
  mask = np.ones((b, p + t), bool)
  mask[0, :3] = False  # left-padded prompts of different lengths
  mask[1, :6] = False
  tokens = np.where(mask, tokens, 0)
  full = np.asarray(_full(model, jnp.asarray(tokens), jnp.asarray(mask)))

  cache = model.init_cache(b, p + t + 4)
  logits, cache = _step(
      model, jnp.asarray(tokens[:, :p]), jnp.asarray(mask[:, :p]), cache
  )
  got = [np.asarray(logits)]
  for i in range(p, p + t):
    logits, cache = _step(
        model,
        jnp.asarray(tokens[:, i : i + 1]),
        jnp.asarray(mask[:, i : i + 1]),
        cache,
    )
    got.append(np.asarray(logits))
  got = np.concatenate(got, axis=1)
  err = np.abs(got - full)[mask].max()
  assert err <= 1e-5, err
  assert int(cache.end) == p + t
  np.testing.assert_array_equal(np.asarray(cache.next_pos), mask.sum(1))


def test_cache_too_short_is_an_error():
  config = testing.tiny_config("qwen3")
  model = testing.random_model(config)
  with pytest.raises(ValueError, match="KV cache holds only 4"):
    model(jnp.zeros((1, 6), jnp.int32), cache=model.init_cache(1, 4))


def test_hidden_only_forward_skips_logits():
  config = testing.tiny_config("qwen3")
  model = testing.random_model(config)
  tokens = jnp.arange(8)[None]
  out = model(tokens, return_logits=False)
  assert out.logits is None
  jaxpr = jax.make_jaxpr(lambda m, x: m(x, return_logits=False).hidden)(
      model, tokens
  )
  shapes = {tuple(v.aval.shape) for eq in jaxpr.eqns for v in eq.outvars}
  assert (1, 8, config.vocab_size) not in shapes
  np.testing.assert_allclose(
      model.apply_head(out.hidden), model(tokens).logits, atol=1e-6
  )


def test_split_layers_and_a_grown_cache_decode_the_same():
  config = testing.tiny_config("qwen2")
  model = testing.random_model(config, seed=4)
  split = split_layers(model)
  assert split_layers(split) is split
  # The untied head is kept as [V, D] rows for the decode loop's product.
  assert model.lm_head is not None and getattr(model, "head_rows", None) is None
  np.testing.assert_array_equal(
      split.head_rows[...], np.asarray(model.lm_head.kernel[...]).T
  )
  b, p, t = 2, 5, 4
  tokens = np.random.default_rng(1).integers(3, config.vocab_size, (b, p + t))
  mask = np.ones((b, p + t), bool)
  mask[1, :2] = False
  tokens = np.where(mask, tokens, 0)
  full = np.asarray(_full(model, jnp.asarray(tokens), jnp.asarray(mask)))
  # Uncached forward of the split model restacks its layers.
  np.testing.assert_allclose(
      np.asarray(_full(split, jnp.asarray(tokens), jnp.asarray(mask))),
      full,
      atol=1e-6,
  )
  # Prefill into a cache with no spare slot, then grow it for the decode.
  logits, cache = _step(
      split,
      jnp.asarray(tokens[:, :p]),
      jnp.asarray(mask[:, :p]),
      split.init_cache(b, p),
  )
  got = [np.asarray(logits)]
  for i in range(p, p + t):
    if i == p:
      cache = extend_cache(cache, p + t)
    logits, cache = _step(
        split,
        jnp.asarray(tokens[:, i : i + 1]),
        jnp.asarray(mask[:, i : i + 1]),
        cache,
    )
    got.append(np.asarray(logits))
  err = np.abs(np.concatenate(got, axis=1) - full)[mask].max()
  assert err <= 1e-5, err
  with pytest.raises(ValueError, match="shorter than the cache"):
    extend_cache(cache, 3)


def test_decode_products_match_numpy():
  """The decode step's head and q.k^T, written as fused loops, are matmuls."""
  from opd_jax.models.attention import _few_rows_qk  # pylint: disable=g-import-not-at-top
  from opd_jax.models.decode import decode_head  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(5)
  h = rng.standard_normal((3, 24)).astype(np.float32)
  w = rng.standard_normal((50, 24)).astype(np.float32)
  got = np.asarray(decode_head(jnp.asarray(h), jnp.asarray(w)))
  assert got.shape == (3, 50) and got.dtype == np.float32
  # Both sides are float32 sums in different orders (testing.summation_bound).
  _assert_within_summation_order(got, h @ w.T, h, w.T)
  # bfloat16 weights and rows: the products and the sum in float32.
  hb, wb = jnp.asarray(h, jnp.bfloat16), jnp.asarray(w, jnp.bfloat16)
  hf, wf = np.asarray(hb, np.float32), np.asarray(wb, np.float32)
  _assert_within_summation_order(
      np.asarray(decode_head(hb, wb)), hf @ wf.T, hf, wf.T
  )

  q = rng.standard_normal((2, 3, 4, 16)).astype(np.float32)  # [B, K, M, H]
  k = rng.standard_normal((2, 3, 16, 11)).astype(np.float32)  # [B, K, H, S]
  _assert_within_summation_order(
      np.asarray(_few_rows_qk(jnp.asarray(q), jnp.asarray(k))),
      np.einsum("bkmh,bkhs->bkms", q, k),
      q,
      k,
  )


def _assert_within_summation_order(got, want, a, b):
  """got and want are two float32 orders of the sums in a @ b."""
  err = np.abs(np.float64(got) - np.float64(want))
  bound = testing.summation_bound(a, b)
  assert (err <= bound).all(), (err - bound).max()


@pytest.mark.parametrize("tied", [False, True])
def test_split_model_decodes_with_the_fused_head(tied):
  """A split model's few-row head is `decode_head` (no dot over the head)."""
  config = testing.tiny_config("qwen2", tied=tied)
  model = testing.random_model(config, seed=4)
  split = split_layers(model)
  hidden = jax.random.normal(jax.random.key(0), (2, 1, config.embed_dim))
  jaxpr = jax.make_jaxpr(split.apply_head)(hidden)
  assert not any(eq.primitive.name == "dot_general" for eq in jaxpr.eqns)
  head = model.embedder.embedding[...].T if tied else model.lm_head.kernel[...]
  _assert_within_summation_order(
      np.asarray(split.apply_head(hidden)),
      np.asarray(model.apply_head(hidden)),
      np.asarray(hidden),
      np.asarray(head),
  )
  many = jnp.ones((65, config.embed_dim))  # more rows than a decode step
  jaxpr = jax.make_jaxpr(split.apply_head)(many)
  assert any(eq.primitive.name == "dot_general" for eq in jaxpr.eqns)
