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
"""ModelConfig presets and the HF config mapping, including rejected fields."""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from opd_jax import testing
from opd_jax.models import (
    PRESETS,
    ModelConfig,
    Transformer,
    UnsupportedConfigError,
    from_hf_config,
    preset,
    to_hf_config,
)

# Parameter counts of the public checkpoints (from their model cards).
_KNOWN_SIZES = {
    "qwen3_0p6b": 0.596e9,
    "qwen3_1p7b": 1.72e9,
    "qwen3_4b": 4.02e9,
    "qwen3_8b": 8.19e9,
    "qwen2p5_1p5b": 1.54e9,
    "qwen2p5_7b": 7.62e9,
    "qwen2p5_14b": 14.77e9,
    "llama3p2_1b": 1.24e9,
    "llama3p1_8b": 8.03e9,
    "smollm2_135m": 0.1348e9,
    "qwen3_30b_a3b": 30.5e9,
    "qwen3_235b_a22b": 235e9,
    # The text halves of Qwen3.5-0.8B and -27B (the cards' 0.8B and 27B count
    # the vision tower too); equal to transformers' Qwen3_5ForCausalLM
    # (tests/models/test_qwen3_5.py).
    "qwen3p5_0p8b": 0.752e9,
    "qwen3p5_27b": 26.9e9,
}
# Activated parameters of the MoE checkpoints (model cards: 3.3B, 22B).
_KNOWN_ACTIVE = {"qwen3_30b_a3b": 3.3e9, "qwen3_235b_a22b": 22e9}


@pytest.mark.parametrize("name", PRESETS)
def test_presets_have_published_sizes(name):
  config = preset(name)
  assert config.num_params() == pytest.approx(_KNOWN_SIZES[name], rel=0.01)
  assert from_hf_config(to_hf_config(config)) == config


@pytest.mark.parametrize("name", sorted(_KNOWN_ACTIVE))
def test_moe_presets_have_published_active_sizes(name):
  config = preset(name)
  assert config.num_params(active=True) == pytest.approx(
      _KNOWN_ACTIVE[name], rel=0.02
  )


def test_moe_builds_abstractly_with_matching_count():
  config = testing.tiny_moe_config(num_layers=4, mlp_only_layers=(0, 2))
  model = nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0)))
  n = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  assert n == config.num_params()
  assert config.moe_layer_mask() == (False, True, False, True)


@pytest.mark.parametrize(
    "changes,match",
    [
        (dict(experts_per_token=9), "experts_per_token"),
        (dict(num_experts=0), "num_experts"),
        (dict(moe_mlp_dim=0), "moe_mlp_dim"),
        (dict(mlp_only_layers=(5,)), "mlp_only_layers"),
        (dict(family="qwen3"), "num_experts"),
    ],
)
def test_bad_moe_configs_are_refused(changes, match):
  with pytest.raises(ValueError, match=match):
    testing.tiny_moe_config().replace(**changes)


def test_preset_builds_abstractly_with_matching_count():
  config = ModelConfig.qwen3_0p6b()
  model = nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0)))
  n = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  assert n == config.num_params()


def test_unknown_preset():
  with pytest.raises(ValueError, match="Unknown model preset 'gpt2'"):
    preset("gpt2")


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3"])
def test_hf_config_round_trip(family):
  config = testing.tiny_config(family, llama3_rope=family == "llama")
  assert from_hf_config(to_hf_config(config)) == config


def test_legacy_rope_scaling_type_key():
  hf = to_hf_config(testing.tiny_config("llama", llama3_rope=True))
  rope = hf.pop("rope_parameters")
  hf["rope_scaling"] = {**rope, "type": rope.pop("rope_type")}
  assert from_hf_config(hf).rope_scaling.factor == 8.0


def test_bad_config_values():
  with pytest.raises(ValueError, match="num_heads must be a multiple"):
    testing.tiny_config("qwen3").replace(num_kv_heads=3)
  with pytest.raises(ValueError, match="family"):
    testing.tiny_config("gemma")


@pytest.mark.parametrize(
    "family,change,match",
    [
        (
            "qwen2",
            {"qkv_bias": False},
            r"qkv_bias: family 'qwen2' requires"
            r" qkv_bias=True \(the HF Qwen2ForCausalLM architecture always has",
        ),
        (
            "llama",
            {"qkv_bias": True},
            "qkv_bias: family 'llama' requires qkv_bias=False",
        ),
        ("qwen3", {"qkv_bias": True}, "family 'qwen3' requires qkv_bias=False"),
        ("qwen3", {"qk_norm": False}, "family 'qwen3' requires qk_norm=True"),
        ("llama", {"qk_norm": True}, "family 'llama' requires qk_norm=False"),
    ],
)
def test_flags_the_family_cannot_save_are_refused_when_built(
    family, change, match
):
  """A config that save_hf could not write faithfully never exists."""
  with pytest.raises(ValueError, match=match):
    testing.tiny_config(family).replace(**change)


def test_compile_time_flat_in_depth():
  """The scanned decoder's program does not grow with the number of layers."""
  sizes = []
  for layers in (2, 8):
    config = testing.tiny_config("qwen3", num_layers=layers)
    model = nnx.eval_shape(lambda c=config: Transformer(c, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(model)
    fn = lambda s, x, g=graphdef: nnx.merge(g, s)(x).logits
    text = jax.jit(fn).lower(state, jnp.zeros((1, 8), jnp.int32)).as_text()
    sizes.append(len(text))
  assert sizes[1] < 1.05 * sizes[0]
