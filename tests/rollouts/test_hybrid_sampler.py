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


def test_continue_from_refuses_a_hybrid_model_in_one_line():
  model = testing.random_model(_config(), seed=4)
  prompt = jnp.full((1, 4), 5, jnp.int32)
  out = sampler.sample(
      model,
      prompt,
      jnp.ones((1, 4), bool),
      jax.random.key(1),
      max_new_tokens=3,
  )
  with pytest.raises(NotImplementedError, match="continue_from: a qwen3_5"):
    continue_from(
        model,
        out,
        jnp.zeros((1, 1), jnp.int32),
        jax.random.key(2),
        max_new_tokens=2,
    )
