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
"""Branching: continuations from cuts inside rollouts, validity, distribution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from opd_jax import testing
from opd_jax.rollouts import (
    Rollout,
    Sampling,
    branch_prefixes,
    continue_from,
    sample,
    valid_cuts,
)

GREEDY = Sampling(temperature=0.0)
# 0.999 quantile of the chi-square distribution with 11 degrees of freedom.
_CHI2_11_999 = 31.26


@pytest.fixture(scope="module")
def model():
  return testing.random_model(testing.tiny_config("qwen3"), seed=2)


def _prompts(vocab, b=3, p=6, seed=0):
  """Left-padded prompts of lengths 4, 6 and 2."""
  prompt = np.random.default_rng(seed).integers(3, vocab, (b, p))
  mask = np.ones((b, p), bool)
  mask[0, :2] = False
  mask[2, :4] = False
  return jnp.asarray(np.where(mask, prompt, 0)), jnp.asarray(mask)


def _truncate(r: Rollout, t: int) -> Rollout:
  """The first t response tokens of a rollout, as a rollout."""
  return r.replace(
      response=r.response[:, :t],
      response_mask=r.response_mask[:, :t],
      logprobs=r.logprobs[:, :t],
  )


def _manual(prompt, prompt_mask, response, response_mask):
  return Rollout(
      prompt=jnp.asarray(prompt),
      prompt_mask=jnp.asarray(prompt_mask),
      response=jnp.asarray(response),
      response_mask=jnp.asarray(response_mask),
      logprobs=jnp.zeros(np.shape(response)),
  )


def test_greedy_continuation_replays_the_greedy_rollout(model):
  prompt, mask = _prompts(model.config.vocab_size)
  long = sample(
      model, prompt, mask, jax.random.key(0), max_new_tokens=16, sampling=GREEDY
  )
  rollout = _truncate(long, 8)
  cut = jnp.asarray([[0, 3, 7, 8], [1, 2, 5, 8], [0, 4, 6, 8]], jnp.int32)
  out = continue_from(
      model, rollout, cut, jax.random.key(1), max_new_tokens=8, sampling=GREEDY
  )
  assert out.response.shape == (12, 8)
  assert out.prompt.shape == (12, 6 + 8)
  want = np.asarray(long.response)
  want_lp = np.asarray(long.logprobs)
  got, got_lp = np.asarray(out.response), np.asarray(out.logprobs)
  for b in range(3):
    for n in range(4):
      c = int(cut[b, n])
      np.testing.assert_array_equal(got[4 * b + n], want[b, c : c + 8])
      np.testing.assert_allclose(
          got_lp[4 * b + n], want_lp[b, c : c + 8], atol=1e-5
      )
  assert bool(out.response_mask.all())


def test_same_key_same_continuations(model):
  prompt, mask = _prompts(model.config.vocab_size)
  kw = dict(max_new_tokens=6, sampling=Sampling(temperature=1.0))
  rollout = sample(model, prompt, mask, jax.random.key(0), **kw)
  cut = jnp.asarray([[1, 1], [2, 3], [0, 5]], jnp.int32)
  a = continue_from(model, rollout, cut, jax.random.key(3), **kw)
  b = continue_from(model, rollout, cut, jax.random.key(3), **kw)
  c = continue_from(model, rollout, cut, jax.random.key(4), **kw)
  np.testing.assert_array_equal(np.asarray(a.response), np.asarray(b.response))
  np.testing.assert_array_equal(np.asarray(a.logprobs), np.asarray(b.logprobs))
  assert not np.array_equal(np.asarray(a.response), np.asarray(c.response))
  # Two cuts at the same place in one call still draw independently.
  assert not np.array_equal(
      np.asarray(a.response[0]), np.asarray(a.response[1])
  )


def test_continuation_distribution_is_the_conditional():
  config = testing.tiny_config("llama", vocab_size=12)
  m = testing.random_model(config, seed=7)
  # Larger logits so that the distribution is far from uniform.
  m.final_norm.scale[...] = m.final_norm.scale[...] * 40
  prompt = jnp.asarray([[0, 1, 5, 7]])
  pmask = jnp.asarray([[False, True, True, True]])
  rollout = _manual(prompt, pmask, [[4, 9, 3, 0]], [[True, True, True, False]])
  n, c, temp = 6000, 2, 0.7
  out = continue_from(
      m,
      rollout,
      jnp.full((1, n), c, jnp.int32),
      jax.random.key(11),
      max_new_tokens=1,
      sampling=Sampling(temperature=temp),
  )
  prefix = jnp.asarray([[1, 5, 7, 4, 9]])
  probs = np.asarray(jax.nn.softmax(m(prefix).logits[0, -1] / temp))
  assert probs.max() > 0.2  # not uniform
  counts = np.bincount(np.asarray(out.response[:, 0]), minlength=12)
  expected = probs * n
  assert float(((counts - expected) ** 2 / expected).sum()) < _CHI2_11_999
  # The recorded log-probs are that conditional's.
  np.testing.assert_allclose(
      np.asarray(out.logprobs[:, 0]),
      np.log(probs[np.asarray(out.response[:, 0])]),
      atol=1e-5,
  )


def test_teacher_as_sampler(model):
  teacher = testing.random_model(
      testing.tiny_config("qwen3").replace(embed_dim=64, mlp_dim=128), seed=5
  )
  prompt, mask = _prompts(model.config.vocab_size)
  rollout = sample(
      model,
      prompt,
      mask,
      jax.random.key(0),
      max_new_tokens=6,
      sampling=Sampling(temperature=1.0),
  )
  cut = jnp.asarray([[2], [0], [5]], jnp.int32)
  out = continue_from(
      teacher,
      rollout,
      cut,
      jax.random.key(1),
      max_new_tokens=5,
      sampling=GREEDY,
  )
  # Reference: the teacher's uncached greedy decode after each prefix, on a
  # fixed-width left-padded buffer (one compile).
  last_logits = jax.jit(
      lambda ids, m: teacher(ids, attention_mask=m).logits[:, -1]
  )
  width = 6 + 6 + 5
  rows = [
      np.concatenate([
          np.asarray(prompt[b])[np.asarray(mask[b])],
          np.asarray(rollout.response[b, : int(cut[b, 0])]),
      ])
      for b in range(3)
  ]
  for _ in range(5):
    ids = np.zeros((3, width), np.int32)
    m = np.zeros((3, width), bool)
    for b, row in enumerate(rows):
      ids[b, width - len(row) :], m[b, width - len(row) :] = row, True
    nxt = np.asarray(jnp.argmax(last_logits(ids, m), -1))
    rows = [np.append(row, t) for row, t in zip(rows, nxt)]
  for b in range(3):
    np.testing.assert_array_equal(np.asarray(out.response[b]), rows[b][-5:])
  # A student/teacher mixture runs through the same path.
  mix = continue_from(
      [model, teacher],
      rollout,
      cut,
      jax.random.key(2),
      max_new_tokens=5,
      sampling=Sampling(temperature=1.0),
      weights=(0.5, 0.5),
  )
  assert bool(mix.response_mask.all())
  # Its log-probs are the mixture's, log(p_s / 2 + p_t / 2), of each drawn
  # token after its prefix (an uncached forward over prefix + continuation).
  ids = jnp.concatenate([mix.prompt, mix.response], axis=1)
  ids_mask = jnp.concatenate([mix.prompt_mask, mix.response_mask], axis=1)
  w = mix.prompt.shape[1]
  drawn = np.asarray(mix.response)[..., None]
  per_model = [
      np.take_along_axis(
          np.asarray(
              jax.nn.log_softmax(
                  m(ids, attention_mask=ids_mask).logits[:, w - 1 : -1], -1
              )
          ),
          drawn,
          -1,
      )[..., 0]
      for m in (model, teacher)
  ]
  np.testing.assert_allclose(
      np.asarray(mix.logprobs),
      np.logaddexp(*per_model) + np.log(0.5),
      atol=1e-5,
  )


def test_prefixes_against_numpy():
  rng = np.random.default_rng(0)
  prompt, pmask = _prompts(50, b=3, p=5)
  response = rng.integers(3, 50, (3, 4))
  rmask = np.asarray([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], bool)
  response = np.where(rmask, response, 0)
  cut = np.asarray([[0, 4], [2, 1], [1, 3]])
  ids, m, valid = branch_prefixes(
      prompt,
      pmask,
      jnp.asarray(response),
      jnp.asarray(rmask),
      jnp.asarray(cut),
      pad_id=0,
  )
  np.testing.assert_array_equal(valid, [True, True, True, True, True, False])
  for b in range(3):
    for n in range(2):
      row = 2 * b + n
      c = cut[b, n] if valid[row] else 0
      real = np.concatenate(
          [np.asarray(prompt[b])[np.asarray(pmask[b])], response[b, :c]]
      )
      want = np.zeros(9, int)
      want[9 - len(real) :] = real
      np.testing.assert_array_equal(np.asarray(ids[row]), want)
      np.testing.assert_array_equal(
          np.asarray(m[row]), np.arange(9) >= 9 - len(real)
      )


def test_valid_cuts_rules():
  eos = 2
  response = jnp.asarray([[5, 6, eos, 0], [5, 6, 7, 8], [5, 6, 0, 0]])
  rmask = jnp.asarray([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]], bool)
  cut = jnp.asarray([[-1, 0, 2, 3, 4]] * 3)
  got = np.asarray(valid_cuts(response, rmask, cut, eos_ids=(eos,)))
  np.testing.assert_array_equal(
      got,
      [
          [False, True, True, False, False],  # 3 = after EOS, 4 = padding
          [False, True, True, True, True],  # 4 = length limit: continue it
          [False, True, True, False, False],  # 3, 4 = padding
      ],
  )


def test_invalid_cuts_are_masked(model):
  prompt, mask = _prompts(model.config.vocab_size)
  eos = 2
  rollout = _manual(
      prompt,
      mask,
      [[5, 6, eos, 0, 0], [5, 6, 7, 8, 9], [7, 0, 0, 0, 0]],
      [[1, 1, 1, 0, 0], [1] * 5, [1, 0, 0, 0, 0]],
  )
  cut = jnp.asarray([[3, 1], [-2, 5], [4, 1]], jnp.int32)
  out = continue_from(
      model,
      rollout,
      cut,
      jax.random.key(0),
      max_new_tokens=4,
      sampling=Sampling(temperature=1.0),
      eos_ids=(eos,),
      pad_id=0,
  )
  valid = np.asarray([False, True, False, True, False, True])
  rmask = np.asarray(out.response_mask)
  np.testing.assert_array_equal(rmask[:, 0], valid)
  assert not rmask[~valid].any()
  assert (np.asarray(out.response)[~valid] == 0).all()
  assert (np.asarray(out.logprobs)[~valid] == 0).all()
  assert np.isfinite(np.asarray(out.logprobs)).all()


def test_same_prefix_any_left_padding(model):
  """A prompt padded to P=6 or P=10 continues identically (greedy)."""
  prompt, mask = _prompts(model.config.vocab_size)
  wide = jnp.concatenate([jnp.zeros((3, 4), jnp.int32), prompt], axis=1)
  wide_mask = jnp.concatenate([jnp.zeros((3, 4), bool), mask], axis=1)
  response = jnp.asarray([[5, 6, 7], [8, 9, 10], [11, 12, 13]])
  rmask = jnp.ones((3, 3), bool)
  cut = jnp.asarray([[0, 2], [1, 3], [3, 2]], jnp.int32)
  kw = dict(max_new_tokens=5, sampling=GREEDY)
  a = continue_from(
      model,
      _manual(prompt, mask, response, rmask),
      cut,
      jax.random.key(0),
      **kw,
  )
  b = continue_from(
      model,
      _manual(wide, wide_mask, response, rmask),
      cut,
      jax.random.key(0),
      **kw,
  )
  np.testing.assert_array_equal(np.asarray(a.response), np.asarray(b.response))
  np.testing.assert_allclose(
      np.asarray(a.logprobs), np.asarray(b.logprobs), atol=1e-5
  )


def test_bad_cut_shape(model):
  prompt, mask = _prompts(model.config.vocab_size)
  rollout = _manual(
      prompt, mask, jnp.ones((3, 2), jnp.int32), jnp.ones((3, 2), bool)
  )
  with pytest.raises(ValueError, match=r"cut must be \[B, N\]"):
    continue_from(
        model,
        rollout,
        jnp.zeros((2, 1), jnp.int32),
        jax.random.key(0),
        max_new_tokens=2,
    )
  with pytest.raises(TypeError, match="cut must be integer"):
    continue_from(
        model, rollout, jnp.zeros((3, 1)), jax.random.key(0), max_new_tokens=2
    )
