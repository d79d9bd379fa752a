"""Full-sequence attention: blockwise equals dense; remat changes no value.

The blockwise path is the same function as the dense scores in exact
arithmetic, so it is checked in float64 (any algebra error shows at 1e-3,
rounding at 1e-15) and then, in float32, against a bound that summation
order can produce. The model-level tests run every family (Llama, Qwen2
with q/k/v bias, Qwen3 with q/k norm) with left-padded prompts.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from opd_jax import testing
from opd_jax.models import sequence_attention as sa
from opd_jax.models.transformer import check_remat, resolve_remat

_EPS32 = float(np.finfo(np.float32).eps)


def _inputs(dtype, b=3, t=37, k=2, g=3, h=8, pads=(0, 5, 17), seed=0):
  rng = np.random.default_rng(seed)
  q = rng.standard_normal((b, t, k, g, h)).astype(dtype)
  kk = rng.standard_normal((b, t, k, h)).astype(dtype)
  v = rng.standard_normal((b, t, k, h)).astype(dtype)
  mask = np.arange(t)[None] >= np.asarray(pads)[:, None]
  w = rng.standard_normal((b, t, k, g, h)).astype(dtype)
  return q, kk, v, mask, w


def _loss(fn, mask, w):
  """A scalar of the outputs at real positions (pads are never read)."""
  real = mask[:, :, None, None, None]
  return lambda q, k, v: jnp.sum(jnp.where(real, fn(q, k, v) * w, 0.0))


def _both(q, k, v, mask, w, block):
  scale = q.shape[-1] ** -0.5
  dense = lambda q, k, v: sa.dense_attention(q, k, v, mask, scale=scale)
  blockwise = lambda q, k, v: sa.blockwise_attention(
      q, k, v, mask, scale=scale, block_size=block
  )
  out = []
  for fn in (dense, blockwise):
    value = fn(q, k, v)
    grads = jax.grad(_loss(fn, mask, w), argnums=(0, 1, 2))(q, k, v)
    out.append((np.asarray(value), [np.asarray(x) for x in grads]))
  return out


@pytest.mark.parametrize("block", [4, 8, 37, 64])
def test_blockwise_equals_dense_in_float64(block):
  with jax.enable_x64(True):
    q, k, v, mask, w = _inputs(np.float64)
    (d, gd), (f, gf) = _both(q, k, v, mask, w, block)
  real = mask[:, :, None, None, None]
  np.testing.assert_allclose(
      np.where(real, f, 0), np.where(real, d, 0), atol=1e-12
  )
  for a, b in zip(gf, gd):
    np.testing.assert_allclose(a, b, atol=1e-11)


def test_blockwise_equals_dense_in_float32_within_summation_bound():
  """Each output is a convex combination of the values, and each gradient a
  sum of S products: float32 evaluation orders differ by at most about
  S * eps * sum|terms| (the worst-case bound of recursive summation), with
  sum|terms| taken from the float64 reference."""
  q, k, v, mask, w = _inputs(np.float32)
  (d, gd), (f, gf) = _both(q, k, v, mask, w, block=8)
  s = q.shape[1]
  real = mask[:, :, None, None, None]
  bound = s * _EPS32 * np.abs(v).max()
  assert np.abs(np.where(real, f - d, 0)).max() <= bound
  for a, b in zip(gf, gd):
    # |grad| entries are sums of at most S * G terms of size |w| |v| |k|.
    terms = s * q.shape[3] * np.abs(w).max() * np.abs(v).max()
    terms *= np.abs(k).max() + np.abs(q).max() + 1.0
    assert np.abs(a - b).max() <= s * _EPS32 * terms


def test_fully_masked_rows_are_zero_not_nan():
  q, k, v, mask, w = _inputs(np.float32, pads=(0, 37, 3))
  scale = q.shape[-1] ** -0.5
  out = sa.blockwise_attention(q, k, v, mask, scale=scale, block_size=8)
  grads = jax.grad(
      lambda q: jnp.sum(
          sa.blockwise_attention(q, k, v, mask, scale=scale, block_size=8)
      )
  )(q)
  assert np.isfinite(np.asarray(out)).all()
  assert np.isfinite(np.asarray(grads)).all()
  assert not np.asarray(out)[1].any()


def test_blockwise_keeps_no_scores_of_the_whole_sequence():
  """The compiled backward of a long sequence holds O(T block), not T^2."""
  b, t, k, g, h = 1, 2048, 1, 2, 16
  args = [
      jax.ShapeDtypeStruct((b, t, k, g, h), jnp.float32),
      jax.ShapeDtypeStruct((b, t, k, h), jnp.float32),
      jax.ShapeDtypeStruct((b, t, k, h), jnp.float32),
  ]
  mask = jnp.ones((b, t), bool)

  def temp_bytes(implementation):
    fn = lambda q, k, v: jnp.sum(
        sa.sequence_attention(
            q,
            k,
            v,
            mask,
            scale=0.25,
            implementation=implementation,
            block_size=128,
        )
    )
    compiled = jax.jit(jax.grad(fn, argnums=(0, 1, 2))).lower(*args).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  scores = b * k * g * t * t * 4  # one float32 [T, S] score matrix per head
  assert temp_bytes("dense") >= scores
  assert temp_bytes("blockwise") < scores / 8


def test_auto_and_platform_checks():
  assert sa.auto_implementation("tpu", 8192) == "splash"
  assert sa.auto_implementation("gpu", 8192) == "cudnn"
  assert sa.auto_implementation("cpu", sa.DENSE_MAX_KEYS) == "dense"
  assert sa.auto_implementation("cpu", sa.DENSE_MAX_KEYS + 1) == "blockwise"
  with pytest.raises(ValueError, match=r"'splash' cannot run on cpu.*'auto'"):
    sa.check_implementation("splash", "cpu")
  with pytest.raises(ValueError, match=r"'cudnn' cannot run on cpu"):
    sa.check_implementation("cudnn", "cpu")
  with pytest.raises(ValueError, match="expected one of"):
    sa.check_implementation("flash", "cpu")
  sa.check_implementation("blockwise", "tpu")
  assert resolve_remat("auto", 100, "cpu") == "none"
  assert resolve_remat("auto", 4096, "cpu") == "full"
  assert resolve_remat("auto", 100, "gpu") == "full"
  with pytest.raises(ValueError, match=r"remat: 'offload'.*'auto'"):
    check_remat("offload", "cpu")


@nnx.jit(static_argnames=())
def _hidden_and_grads(model, tokens, mask):
  real = mask[:, :, None]

  def loss(model):
    out = model(tokens, attention_mask=mask)
    return jnp.sum(jnp.where(real, out.logits, 0.0) ** 2) * 1e-3, out.logits

  (_, logits), grads = nnx.value_and_grad(loss, has_aux=True)(model)
  return logits, nnx.state(grads, nnx.Param)


def _model(family, **changes):
  config = testing.tiny_config(family, llama3_rope=family == "llama")
  return testing.random_model(config.replace(**changes), seed=5)


_TOKENS_MASK = None


def _batch(vocab):
  rng = np.random.default_rng(1)
  b, t = 3, 29
  mask = np.ones((b, t), bool)
  mask[0, :4] = False
  mask[2, :11] = False
  tokens = np.where(mask, rng.integers(3, vocab, (b, t)), 0)
  return jnp.asarray(tokens), jnp.asarray(mask)


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3"])
def test_model_blockwise_and_remat_equal_dense(family):
  """Logits and every parameter's gradient, left-padded rows, three blocks
  per sequence, with and without remat: the same as the dense path."""
  ref = _model(family, attention="dense", remat="none")
  tokens, mask = _batch(ref.config.vocab_size)
  logits_ref, grads_ref = _hidden_and_grads(ref, tokens, mask)
  real = np.asarray(mask)[:, :, None]
  for changes in (
      dict(attention="blockwise", attention_block_size=8, remat="none"),
      dict(attention="blockwise", attention_block_size=8, remat="full"),
      dict(attention="dense", remat="dots"),
  ):
    model = _model(family, **changes)
    logits, grads = _hidden_and_grads(model, tokens, mask)
    np.testing.assert_allclose(
        np.where(real, logits, 0),
        np.where(real, logits_ref, 0),
        atol=1e-5,
        err_msg=str(changes),
    )
    for (path, a), (_, b) in zip(
        jax.tree_util.tree_flatten_with_path(grads)[0],
        jax.tree_util.tree_flatten_with_path(grads_ref)[0],
    ):
      scale = np.abs(np.asarray(b)).max() + 1e-6
      np.testing.assert_allclose(
          np.asarray(a) / scale,
          np.asarray(b) / scale,
          atol=1e-4,
          err_msg=f"{changes} {jax.tree_util.keystr(path)}",
      )


def test_prefill_through_sequence_attention_matches_cached_path():
  model = _model("qwen3", attention="blockwise", attention_block_size=8)
  tokens, mask = _batch(model.config.vocab_size)
  b, t = tokens.shape

  @nnx.jit(static_argnames=("prefill",))
  def run(model, prefill):
    out = model(
        tokens,
        attention_mask=mask,
        cache=model.init_cache(b, t + 5),
        prefill=prefill,
    )
    return out.logits, out.cache

  (old, old_cache), (new, new_cache) = run(model, False), run(model, True)
  real = np.asarray(mask)[:, :, None]
  np.testing.assert_allclose(
      np.where(real, new, 0), np.where(real, old, 0), atol=1e-5
  )
  # Real slots only: a pad's output (0 here, the mean of the values in the
  # dense scores) feeds the next layer's key of that pad, never read.
  real_slots = np.zeros((b, t + 5), bool)
  real_slots[:, :t] = np.asarray(mask)
  for a, c in zip(new_cache.k, old_cache.k):  # [B, K, H, S]
    keep = real_slots[:, None, None, :]
    np.testing.assert_allclose(
        np.where(keep, a, 0), np.where(keep, c, 0), atol=1e-5
    )
  for a, c in zip(new_cache.v, old_cache.v):  # [B, K, S, H]
    keep = real_slots[:, None, :, None]
    np.testing.assert_allclose(
        np.where(keep, a, 0), np.where(keep, c, 0), atol=1e-5
    )
  np.testing.assert_array_equal(new_cache.key_mask, old_cache.key_mask)


def test_full_remat_keeps_one_layer_input_per_token():
  """Under remat 'full' each added layer costs the backward pass exactly its
  input [B, T, D] float32 (compiled temporaries of 2 vs 6 layers)."""
  from opd_jax.models import Transformer  # pylint: disable=g-import-not-at-top

  b, t = 2, 1024
  temp = {}
  for layers in (2, 6):
    config = testing.tiny_config("qwen3", num_layers=layers).replace(
        attention="blockwise", attention_block_size=256, remat="full"
    )
    graphdef, state = nnx.split(
        nnx.eval_shape(
            lambda config=config: Transformer(config, rngs=nnx.Rngs(0))
        )
    )

    def loss(state, tokens, graphdef=graphdef):
      hidden = nnx.merge(graphdef, state)(tokens, return_logits=False).hidden
      return jnp.sum(hidden**2)

    compiled = (
        jax.jit(jax.grad(loss))
        .lower(state, jax.ShapeDtypeStruct((b, t), jnp.int32))
        .compile()
    )
    temp[layers] = compiled.memory_analysis().temp_size_in_bytes
  per_token_layer = (temp[6] - temp[2]) / (4 * b * t)
  assert per_token_layer == 4 * config.embed_dim, temp
