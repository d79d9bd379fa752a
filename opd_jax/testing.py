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
"""Hermetic test fixtures: tiny model configs and fake meshes (no network)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from opd_jax import sharding
from opd_jax.models.config import Llama3RopeScaling, ModelConfig
from opd_jax.models.transformer import Transformer


def tiny_config(
    family: str = "qwen3",
    *,
    gqa: bool = True,
    tied: bool = False,
    llama3_rope: bool = False,
    vocab_size: int = 211,
    num_layers: int = 2,
) -> ModelConfig:
  """A 2-layer model of each family, small enough to compile in a second.

  Args:
    family: 'llama', 'qwen2' or 'qwen3' (q/k/v bias for qwen2, q/k norm for
      qwen3).
    gqa: 4 query heads over 2 KV heads; otherwise multi-head (4 over 4).
    tied: tie the head to the embedding.
    llama3_rope: Llama-3 RoPE scaling with a short original context, so the
      scaling changes the frequencies at short positions.
  """
  scaling = None
  if llama3_rope:
    scaling = Llama3RopeScaling(
        factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
        original_max_position_embeddings=64,
    )
  return ModelConfig(
      family=family, vocab_size=vocab_size, embed_dim=48,
      num_layers=num_layers, num_heads=4, num_kv_heads=2 if gqa else 4,
      head_dim=16, mlp_dim=96, rms_norm_eps=1e-6,
      rope_theta=500_000.0 if llama3_rope else 10_000.0, rope_scaling=scaling,
      tie_embeddings=tied, qkv_bias=family == "qwen2",
      qk_norm=family == "qwen3", max_position_embeddings=512,
      bos_token_id=1, eos_token_ids=(2,), pad_token_id=0,
  )


def random_model(
    config: ModelConfig, seed: int = 0, dtype=jnp.float32
) -> Transformer:
  """A model with every parameter random, norms and biases included.

  HF initialises norms to one and biases to zero, which would hide a wrong
  mapping of those tensors; here they are perturbed too.
  """
  model = Transformer(config, dtype=dtype, rngs=nnx.Rngs(seed))
  state = nnx.state(model, nnx.Param)
  keys = iter(jax.random.split(jax.random.key(seed + 1), 64))

  def perturb(path, x):
    name = sharding.path_str(path)
    if name.endswith("scale"):
      return (1.0 + 0.1 * jax.random.normal(next(keys), x.shape)).astype(dtype)
    if name.endswith("bias"):
      return (0.1 * jax.random.normal(next(keys), x.shape)).astype(dtype)
    return x

  nnx.update(model, jax.tree_util.tree_map_with_path(perturb, state))
  return model


def fake_mesh(data: int = 1, fsdp: int = -1, tensor: int = 1):
  """A ('data', 'fsdp', 'tensor') mesh over the available (fake) devices."""
  return sharding.make_mesh(sharding.MeshConfig(data, fsdp, tensor))
