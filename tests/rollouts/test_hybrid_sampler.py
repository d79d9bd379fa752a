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
"""The sampler on a hybrid (Gated DeltaNet + attention) Qwen3.5 model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from opd_jax import testing
from opd_jax.models import ModelConfig
from opd_jax.rollouts import sampler
from opd_jax.rollouts.branching import continue_from
from opd_jax.rollouts.sampling import Sampling


def _config():
  return ModelConfig(
      family="qwen3_5",
      vocab_size=97,
      embed_dim=32,
      num_layers=3,
      num_heads=4,
      num_kv_heads=2,
      head_dim=16,
      mlp_dim=64,
      qk_norm=True,
      max_position_embeddings=256,
      layer_types=("linear_attention", "full_attention", "linear_attention"),
      partial_rotary_factor=0.25,
      linear_conv_kernel=4,
      linear_num_key_heads=2,
      linear_num_value_heads=4,
      linear_key_head_dim=8,
      linear_value_head_dim=8,
      delta_chunk_size=4,
  )


def test_greedy_rollout_equals_uncached_argmax():
  model = testing.random_model(_config(), seed=3)
  rng = np.random.default_rng(0)
  prompt = rng.integers(3, 97, (2, 7)).astype(np.int32)
  mask = np.ones_like(prompt, dtype=bool)
  mask[0, :2] = False
  prompt[0, :2] = 0
  steps = 6
  out = sampler.sample(
      model,
      jnp.asarray(prompt),
      jnp.asarray(mask),
      jax.random.key(0),
      max_new_tokens=steps,
      sampling=Sampling(temperature=0.0),
  )
  assert np.all(np.asarray(out.response_mask))
  # Reference: the whole sequence through the uncached (chunked) forward,
  # one token more each time.
  tokens, seq_mask = prompt, mask
  for _ in range(steps):
    logits = model(jnp.asarray(tokens), attention_mask=jnp.asarray(seq_mask))
    nxt = np.asarray(jnp.argmax(logits.logits[:, -1], axis=-1))[:, None]
    tokens = np.concatenate([tokens, nxt.astype(np.int32)], axis=1)
    seq_mask = np.concatenate([seq_mask, np.ones((2, 1), bool)], axis=1)
  np.testing.assert_array_equal(np.asarray(out.response), tokens[:, 7:])


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_a_branch_equals_sampling_from_a_fresh_prefill_of_its_prefix(
    temperature,
):
  """continue_from at cut c of a rollout row gives what `sample` gives on
  prompt + response[:c] with the same key (the recurrent state at the cut
  is the prefix's, not the whole rollout's)."""
  model = testing.random_model(_config(), seed=4)
  rng = np.random.default_rng(1)
  prompt = rng.integers(3, 97, (2, 5)).astype(np.int32)
  mask = np.ones_like(prompt, dtype=bool)
  mask[1, :2] = False
  prompt[1, :2] = 0
  kw = dict(max_new_tokens=5, sampling=Sampling(temperature=temperature))
  rollout = sampler.sample(
      model, jnp.asarray(prompt), jnp.asarray(mask), jax.random.key(0), **kw
  )
  cut = jnp.asarray([[0, 3], [2, 5]], jnp.int32)
  out = continue_from(model, rollout, cut, jax.random.key(7), **kw)
  # Its prompts are the prefixes, right-aligned in P + T columns.
  response, width = np.asarray(rollout.response), prompt.shape[1] + 5
  for b in range(2):
    for n in range(2):
      ids = np.concatenate([prompt[b][mask[b]], response[b, : cut[b, n]]])
      row_mask = np.arange(width) >= width - len(ids)
      np.testing.assert_array_equal(out.prompt_mask[2 * b + n], row_mask)
      np.testing.assert_array_equal(out.prompt[2 * b + n][row_mask], ids)
  # The same key over the same B*N prefixes: the same draws.
  fresh = sampler.sample(
      model, out.prompt, out.prompt_mask, jax.random.key(7), **kw
  )
  np.testing.assert_array_equal(
      np.asarray(out.response), np.asarray(fresh.response)
  )
  np.testing.assert_allclose(
      np.asarray(out.logprobs), np.asarray(fresh.logprobs), atol=1e-5
  )


def test_a_greedy_branch_replays_the_greedy_rollout():
  """Greedy from cut c of a greedy rollout continues it token for token:
  the recurrent state at the cut is the one the rollout had there."""
  model = testing.random_model(_config(), seed=5)
  prompt = jnp.asarray(np.random.default_rng(2).integers(3, 97, (2, 4)))
  mask = jnp.ones((2, 4), bool)
  greedy = dict(sampling=Sampling(temperature=0.0))
  long = sampler.sample(
      model, prompt, mask, jax.random.key(0), max_new_tokens=10, **greedy
  )
  rollout = long.replace(
      response=long.response[:, :5],
      response_mask=long.response_mask[:, :5],
      logprobs=long.logprobs[:, :5],
  )
  cut = jnp.asarray([[0, 2, 5], [1, 3, 4]], jnp.int32)
  out = continue_from(
      model, rollout, cut, jax.random.key(1), max_new_tokens=5, **greedy
  )
  for b in range(2):
    for n in range(3):
      c = int(cut[b, n])
      np.testing.assert_array_equal(
          np.asarray(out.response[3 * b + n]),
          np.asarray(long.response[b, c : c + 5]),
      )
