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
"""The rollout sampler: greedy parity, determinism, frequencies, EOS, cache growth."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from opd_jax import testing
from opd_jax.rollouts import Sampling, sample
from opd_jax.rollouts import sampler
from opd_jax.rollouts.sampling import inverse_cdf

# 0.999 quantile of the chi-square distribution with 11 degrees of freedom.
_CHI2_11_999 = 31.26


@pytest.fixture(scope="module")
def model():
  return testing.random_model(testing.tiny_config("qwen3"), seed=2)


def _prompts(vocab, b=3, p=6, seed=0):
  prompt = np.random.default_rng(seed).integers(3, vocab, (b, p))
  mask = np.ones((b, p), bool)
  mask[0, :2] = False
  mask[2, :4] = False
  return jnp.asarray(np.where(mask, prompt, 0)), jnp.asarray(mask)


def test_greedy_equals_uncached_argmax(model):
  prompt, mask = _prompts(model.config.vocab_size)
  out = sample(
      model,
      prompt,
      mask,
      jax.random.key(0),
      max_new_tokens=7,
      sampling=Sampling(temperature=0.0),
  )
  tokens, m = np.asarray(prompt), np.asarray(mask)
  for _ in range(7):
    logits = model(jnp.asarray(tokens), attention_mask=jnp.asarray(m)).logits
    nxt = np.asarray(jnp.argmax(logits[:, -1], -1))
    tokens = np.concatenate([tokens, nxt[:, None]], 1)
    m = np.concatenate([m, np.ones((len(m), 1), bool)], 1)
  np.testing.assert_array_equal(np.asarray(out.response), tokens[:, 6:])
  assert bool(out.response_mask.all())
  # logprobs are the model's log-softmax at the chosen tokens.
  full = jax.nn.log_softmax(
      model(jnp.asarray(tokens), attention_mask=jnp.asarray(m)).logits[:, 5:-1]
  )
  want = np.take_along_axis(np.asarray(full), tokens[:, 6:, None], -1)[..., 0]
  np.testing.assert_allclose(np.asarray(out.logprobs), want, atol=1e-5)


def test_same_key_same_tokens(model):
  prompt, mask = _prompts(model.config.vocab_size)
  kw = dict(max_new_tokens=6, sampling=Sampling(temperature=1.0))
  a = sample(model, prompt, mask, jax.random.key(3), **kw)
  b = sample(model, prompt, mask, jax.random.key(3), **kw)
  c = sample(model, prompt, mask, jax.random.key(4), **kw)
  np.testing.assert_array_equal(np.asarray(a.response), np.asarray(b.response))
  assert not np.array_equal(np.asarray(a.response), np.asarray(c.response))


def test_nothing_after_eos_is_unmasked(model):
  prompt, mask = _prompts(model.config.vocab_size, b=8, seed=1)
  # Many EOS ids so that rows end at different steps.
  eos = tuple(range(3, 60))
  out = sample(
      model,
      prompt,
      mask,
      jax.random.key(5),
      max_new_tokens=10,
      sampling=Sampling(temperature=1.0),
      eos_ids=eos,
      pad_id=0,
  )
  resp, m = np.asarray(out.response), np.asarray(out.response_mask)
  assert m.sum() < m.size, "no row ended; the test needs EOS to happen"
  for row, mrow in zip(resp, m):
    n = mrow.sum()
    assert mrow[:n].all() and not mrow[n:].any()  # a prefix
    if n < len(row):
      assert row[n - 1] in eos  # ended by EOS, which stays in the mask
      assert (row[n:] == 0).all()
    assert not np.isin(row[: max(n - 1, 0)], eos).any()
  assert (np.asarray(out.logprobs)[~m] == 0).all()


def _first_token_dist(model, prompt, mask, temperature):
  logits = model(prompt, attention_mask=mask).logits[0, -1]
  return np.asarray(jax.nn.softmax(logits / temperature))


def _chi2(counts, probs):
  expected = probs * counts.sum()
  return float(((counts - expected) ** 2 / expected).sum())


def test_sampled_frequencies_match_softmax():
  config = testing.tiny_config("llama", vocab_size=12)
  model = testing.random_model(config, seed=7)
  # Larger logits (the final norm scales them) so that the distribution is
  # far from uniform.
  model.final_norm.scale[...] = model.final_norm.scale[...] * 40
  n = 6000
  prompt = jnp.tile(jnp.asarray([[1, 5, 7]]), (n, 1))
  mask = jnp.ones_like(prompt, bool)
  probs = _first_token_dist(model, prompt[:1], mask[:1], 0.7)
  assert probs.max() > 0.2  # not uniform
  out = sample(
      model,
      prompt,
      mask,
      jax.random.key(11),
      max_new_tokens=1,
      sampling=Sampling(temperature=0.7),
  )
  counts = np.bincount(np.asarray(out.response[:, 0]), minlength=12)
  assert _chi2(counts, probs) < _CHI2_11_999


def test_top_k_and_top_p_truncate():
  lp = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]))
  s = Sampling(top_k=2)
  kept = np.isfinite(np.asarray(s.truncate(lp))) & (
      np.asarray(s.truncate(lp)) > -1e30
  )
  np.testing.assert_array_equal(kept, [[True, True, False, False]])
  for p, want in [
      (0.5, [1, 0, 0, 0]),
      (0.6, [1, 1, 0, 0]),
      (0.81, [1, 1, 1, 0]),
      (1.0, [1, 1, 1, 1]),
  ]:
    t = np.asarray(Sampling(top_p=p).truncate(lp))
    np.testing.assert_array_equal(t > -1e30, [want], err_msg=str(p))
  draws = jax.vmap(lambda k: Sampling(top_k=2).get_next_tokens(lp[0], k))(
      jax.random.split(jax.random.key(0), 2000)
  )
  assert set(np.unique(np.asarray(draws))) == {0, 1}


def test_mixture_sampling_follows_mixture():
  config = testing.tiny_config("qwen2", vocab_size=12)
  student = testing.random_model(config, seed=1)
  teacher = testing.random_model(config, seed=2)
  for m in (student, teacher):
    m.final_norm.scale[...] = m.final_norm.scale[...] * 40
  n = 6000
  prompt = jnp.tile(jnp.asarray([[1, 4, 9]]), (n, 1))
  mask = jnp.ones_like(prompt, bool)
  ps = _first_token_dist(student, prompt[:1], mask[:1], 1.0)
  pt = _first_token_dist(teacher, prompt[:1], mask[:1], 1.0)
  out = sample(
      [student, teacher],
      prompt,
      mask,
      jax.random.key(2),
      max_new_tokens=1,
      weights=(0.7, 0.3),
  )
  counts = np.bincount(np.asarray(out.response[:, 0]), minlength=12)
  assert _chi2(counts, 0.7 * ps + 0.3 * pt) < _CHI2_11_999
  tok = np.asarray(out.response[:, 0])
  np.testing.assert_allclose(
      np.asarray(out.logprobs[:, 0]),
      np.log(0.7 * ps[tok] + 0.3 * pt[tok]),
      atol=1e-5,
  )


def test_mixture_with_a_prompt_per_model_follows_each_models_prompt():
  # A teacher after a context the student does not see: each model decodes
  # after its own left-padded prompt (other widths, other padding); the
  # log-probs are the mixture's, log(0.6 p_s + 0.4 p_t), of uncached
  # forwards of [own prompt | response so far].
  config = testing.tiny_config("qwen2", vocab_size=12)
  student = testing.random_model(config, seed=1)
  teacher = testing.random_model(config, seed=2)
  sp, sm = _prompts(12, b=3, p=5, seed=3)  # row 2: one real token
  tp, tm = _prompts(12, b=3, p=9, seed=4)
  t = 5
  draw = lambda prompts, masks: sample(
      [student, teacher],
      prompts,
      masks,
      jax.random.key(5),
      max_new_tokens=t,
      sampling=Sampling(temperature=1.0),
      weights=(0.6, 0.4),
  )
  out = draw((sp, tp), (sm, tm))
  np.testing.assert_array_equal(np.asarray(out.prompt), np.asarray(sp))
  response = np.asarray(out.response)

  def next_token_probs(model, prompt, mask):
    tokens = np.concatenate([np.asarray(prompt), response], 1)
    m = np.concatenate([np.asarray(mask), np.ones(response.shape, bool)], 1)
    logits = model(jnp.asarray(tokens), attention_mask=jnp.asarray(m)).logits
    p = prompt.shape[1]
    return np.asarray(jax.nn.softmax(logits[:, p - 1 : p - 1 + t], -1))

  mix = 0.6 * next_token_probs(student, sp, sm) + 0.4 * next_token_probs(
      teacher, tp, tm
  )
  want = np.log(np.take_along_axis(mix, response[..., None], -1)[..., 0])
  assert bool(out.response_mask.all())
  np.testing.assert_allclose(np.asarray(out.logprobs), want, atol=1e-5)
  # One prompt for all models is the same program with the prompt repeated.
  np.testing.assert_array_equal(
      np.asarray(draw(sp, sm).response),
      np.asarray(draw((sp, sp), (sm, sm)).response),
  )


def test_bad_arguments(model):
  prompt, mask = _prompts(model.config.vocab_size)
  with pytest.raises(ValueError, match="weights"):
    sample(
        [model, model],
        prompt,
        mask,
        jax.random.key(0),
        max_new_tokens=2,
        weights=(0.5, 0.6),
    )
  with pytest.raises(ValueError, match="max_new_tokens"):
    sample(model, prompt, mask, jax.random.key(0), max_new_tokens=0)
  with pytest.raises(ValueError, match=r"2 model\(s\) need 2 prompt\(s\)"):
    sample(
        [model, model], (prompt,), (mask,), jax.random.key(0), max_new_tokens=2
    )
  with pytest.raises(ValueError, match="both be arrays or both be sequences"):
    sample(
        [model, model],
        (prompt, prompt),
        mask,
        jax.random.key(0),
        max_new_tokens=2,
    )
  with pytest.raises(ValueError, match=r"prompt\[1\] and prompt_mask\[1\]"):
    sample(
        [model, model],
        (prompt, prompt[:2]),
        (mask, mask[:2]),
        jax.random.key(0),
        max_new_tokens=2,
    )
  with pytest.raises(ValueError, match="top_p"):
    Sampling(top_p=0.0)


def test_cache_schedule_doubles_up_to_the_last_step():
  assert sampler.cache_schedule(1) == (0,)
  assert sampler.cache_schedule(100) == (99,)
  assert sampler.cache_schedule(129) == (128,)
  assert sampler.cache_schedule(1024) == (128, 256, 512, 1023)
  assert sampler.cache_schedule(7, first=2) == (2, 4, 6)


def test_growing_the_cache_changes_no_token(model, monkeypatch):
  # Greedy parity and same-key sampling across cache segments of 2, 4, 6
  # steps (the extended slots are empty and masked).
  prompt, mask = _prompts(model.config.vocab_size)
  kw = dict(max_new_tokens=7, sampling=Sampling(temperature=1.0))
  one = sample(model, prompt, mask, jax.random.key(8), **kw)
  monkeypatch.setattr(sampler, "_FIRST_SEGMENT", 2)
  many = sample(model, prompt, mask, jax.random.key(8), **kw)
  np.testing.assert_array_equal(
      np.asarray(one.response), np.asarray(many.response)
  )
  np.testing.assert_allclose(
      np.asarray(one.logprobs), np.asarray(many.logprobs), atol=1e-5
  )
  test_greedy_equals_uncached_argmax(model)


def _reference_inverse_cdf(probs, u):
  cdf = np.cumsum(probs.astype(np.float64), -1)
  return np.array(
      [np.searchsorted(c, x * c[-1], side="right") for c, x in zip(cdf, u)]
  )


def test_inverse_cdf_matches_searchsorted():
  rng = np.random.default_rng(0)
  v = 300  # not a multiple of the 128-id block
  probs = rng.random((64, v)) ** 4
  probs[:, 128:256] = 0.0  # a whole block without mass
  probs[::2, :5] = 0.0
  probs /= probs.sum(-1, keepdims=True)
  u = rng.random(64)
  u[0], u[1] = 0.0, 1.0 - 2**-24
  with np.errstate(divide="ignore"):
    lp = jnp.asarray(np.log(probs), jnp.float32)
  got = np.asarray(inverse_cdf(lp, jnp.asarray(u, jnp.float32)))
  want = _reference_inverse_cdf(probs, u)
  # float32 sums may move a draw across a boundary it nearly touches.
  assert (got == want).mean() > 0.95, (got, want)
  assert (probs[np.arange(64), got] > 0).all()  # never a zero-mass id
  # Leading dims are kept.
  assert inverse_cdf(lp.reshape(8, 8, v), jnp.zeros((8, 8))).shape == (8, 8)


def test_top_k_frequencies_follow_the_truncated_distribution():
  probs = np.asarray([0.3, 0.25, 0.2, 0.1, 0.08, 0.07])
  lp = jnp.log(jnp.asarray(probs, jnp.float32))
  n = 6000
  draws = jax.vmap(lambda k: Sampling(top_k=3).get_next_tokens(lp, k))(
      jax.random.split(jax.random.key(1), n)
  )
  counts = np.bincount(np.asarray(draws), minlength=6)
  assert counts[3:].sum() == 0
  kept = probs[:3] / probs[:3].sum()
  # 0.999 quantile of chi-square with 2 degrees of freedom.
  assert _chi2(counts[:3], kept) < 13.82
