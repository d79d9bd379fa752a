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
"""Published config.json files load; fields are judged by their effect."""

import json
import os

from absl import logging
import pytest

from opd_jax.models import (
    ModelConfig,
    UnsupportedConfigError,
    check_hf_config,
    config as config_lib,
    from_hf_config,
    preset,
)

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def _fixture(name):
  with open(os.path.join(FIXTURES, name + ".json")) as f:
    return json.load(f)


# fixture -> (preset, ModelConfig fields that differ from the preset).
# The fixtures are the config.json files as published on the Hugging Face
# hub, byte for byte in their fields; the last one is what transformers 5
# writes for SmolLM2 loaded from a GGUF file.
PUBLISHED = {
    "smollm2_135m_instruct": (
        "smollm2_135m",
        dict(bos_token_id=1, eos_token_ids=(2,), pad_token_id=2),
    ),
    "smollm2_135m_gguf_transformers5": (
        "smollm2_135m",
        dict(bos_token_id=1, eos_token_ids=(2,), pad_token_id=2),
    ),
    "llama3p2_1b_instruct": ("llama3p2_1b", {}),
    "llama3p1_8b_instruct": ("llama3p1_8b", {}),
    "qwen2p5_1p5b_instruct": ("qwen2p5_1p5b", {}),
    "qwen3_0p6b": ("qwen3_0p6b", {}),
    "qwen3_1p7b": ("qwen3_1p7b", {}),
    "qwen3_8b": ("qwen3_8b", {}),
    "qwen3_30b_a3b": ("qwen3_30b_a3b", {}),
}


@pytest.mark.parametrize(
    "changes,match",
    [
        (dict(num_experts_per_tok=129), "experts_per_token"),
        (dict(shared_expert_intermediate_size=512), "shared expert"),
        (dict(scoring_func="sigmoid"), "scoring_func"),
        (dict(n_group=8), "n_group"),
        (dict(mlp_only_layers="0,1"), "mlp_only_layers"),
        (dict(num_experts=None), "num_experts"),
    ],
)
def test_moe_fields_opd_jax_would_not_reproduce_are_refused(changes, match):
  raw = {**_fixture("qwen3_30b_a3b"), **changes}
  with pytest.raises(ValueError, match=match):
    from_hf_config(raw)


def test_moe_fields_are_unknown_to_dense_families():
  raw = {**_fixture("qwen3_8b"), "num_experts": 8}
  with pytest.raises(UnsupportedConfigError, match="num_experts"):
    from_hf_config(raw)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_configs_load_as_their_preset(name):
  preset_name, changes = PUBLISHED[name]
  config = from_hf_config(_fixture(name))
  assert config == preset(preset_name).replace(**changes)
  assert config.num_params() == preset(preset_name).num_params()


def test_qwen2p5_0p5b_instruct_loads():
  config = from_hf_config(_fixture("qwen2p5_0p5b_instruct"))
  assert config == ModelConfig(
      family="qwen2",
      vocab_size=151936,
      embed_dim=896,
      num_layers=24,
      num_heads=14,
      num_kv_heads=2,
      head_dim=64,
      mlp_dim=4864,
      rms_norm_eps=1e-6,
      rope_theta=1e6,
      tie_embeddings=True,
      qkv_bias=True,
      max_position_embeddings=32768,
      bos_token_id=151643,
      eos_token_ids=(151645,),
  )
  # 494,032,768 parameters (model card: 0.49B).
  assert config.num_params() == 494_032_768


def test_ignored_fields_are_listed():
  _, ignored = check_hf_config(_fixture("smollm2_135m_gguf_transformers5"))
  for field in (
      "is_llama_config",
      "rope_interleaved",
      "_model_name_or_path",
      "unk_token_id",
      "dtype",
      "transformers_version",
      "transformers.js_config",
      "pretraining_tp",
      "use_cache",
      "attention_dropout",
      "mlp_bias",
      "attention_bias",
  ):
    assert field in ignored
  for read in ("hidden_size", "rope_parameters", "eos_token_id"):
    assert read not in ignored


def test_one_warning_per_distinct_list(monkeypatch):
  messages = []
  monkeypatch.setattr(
      logging, "warning", lambda msg, *args: messages.append(msg % args)
  )
  monkeypatch.setattr(config_lib, "_WARNED", set())
  raw = _fixture("smollm2_135m_instruct")
  from_hf_config(raw)
  from_hf_config(raw)
  assert len(messages) == 1
  assert "is_llama_config" in messages[0]
  assert "rope_interleaved" in messages[0]


def _with(base, **changes):
  raw = _fixture(base)
  for k, v in changes.items():
    if v is _DROP:
      raw.pop(k)
    else:
      raw[k] = v
  return raw


_DROP = object()
_SLIDING = dict(use_sliding_window=True, sliding_window=4096)

# (fixture, changed fields, fragment of the error message).
REFUSED = [
    (
        "smollm2_135m_instruct",
        dict(rope_interleaved=True),
        "rope_interleaved=True is not supported: interleaved",
    ),
    (
        "smollm2_135m_instruct",
        dict(mlp_bias=True),
        "mlp_bias=True is not supported",
    ),
    (
        "smollm2_135m_instruct",
        dict(attention_bias=True),
        "attention_bias=True is not supported",
    ),
    (
        "qwen3_0p6b",
        dict(attention_bias=True),
        "attention_bias=True is not supported",
    ),
    (
        "smollm2_135m_instruct",
        dict(hidden_act="gelu"),
        "hidden_act='gelu' is not supported: only SiLU",
    ),
    (
        "qwen3_0p6b",
        dict(
            rope_scaling={
                "rope_type": "yarn",
                "factor": 4.0,
                "original_max_position_embeddings": 32768,
            }
        ),
        "rope_scaling.rope_type='yarn' is not supported",
    ),
    (
        "qwen3_0p6b",
        dict(
            rope_parameters={
                "rope_type": "dynamic",
                "rope_theta": 1e6,
                "factor": 2.0,
            }
        ),
        "rope_parameters.rope_type='dynamic'",
    ),
    (
        "qwen3_0p6b",
        dict(
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 1e6,
                "partial_rotary_factor": 0.5,
            }
        ),
        "partial_rotary_factor=0.5",
    ),
    (
        "qwen2p5_1p5b_instruct",
        _SLIDING,
        "a sliding window of 4096 tokens on layers 21..27",
    ),
    (
        "qwen3_0p6b",
        dict(**_SLIDING, max_window_layers=0),
        "sliding window of 4096 tokens on layers 0..27",
    ),
    (
        "qwen3_0p6b",
        dict(
            **_SLIDING,
            layer_types=["full_attention"] * 27 + ["sliding_attention"],
        ),
        "on layers 27..27",
    ),
    (
        "qwen3_0p6b",
        dict(layer_types=["linear_attention"] * 28),
        "layer_types=['linear_attention']",
    ),
    (
        "qwen3_0p6b",
        dict(quantization_config={"quant_method": "awq"}),
        (
            "quantization_config={'quant_method': 'awq'} is not supported:"
            " quantized"
        ),
    ),
    (
        "qwen3_0p6b",
        dict(moe_num_experts=8),
        "moe_num_experts=8 is unknown to opd_jax's qwen3 implementation",
    ),
    ("qwen3_0p6b", dict(model_type="mistral"), "model_type='mistral'"),
    ("qwen3_0p6b", dict(architectures=["Qwen3Model"]), "architectures"),
    (
        "qwen3_0p6b",
        dict(hidden_size=_DROP),
        "hidden_size: expected an int, got None (missing)",
    ),
    (
        "qwen3_0p6b",
        dict(num_hidden_layers="28"),
        "num_hidden_layers: expected an int, got '28'",
    ),
]


@pytest.mark.parametrize("base,changes,match", REFUSED)
def test_fields_that_change_the_computation_are_refused(base, changes, match):
  with pytest.raises(UnsupportedConfigError) as err:
    from_hf_config(_with(base, **changes))
  assert match in str(err.value)


def test_not_an_object():
  with pytest.raises(UnsupportedConfigError, match="expected a JSON object"):
    from_hf_config([1, 2])


# (fixture, changed fields, an expected entry of the ignored list).
HARMLESS = [
    ("smollm2_135m_instruct", dict(pretraining_tp=2), "pretraining_tp=2 ("),
    (
        "smollm2_135m_instruct",
        dict(attention_dropout=0.1),
        "attention_dropout=0.1 (not applied",
    ),
    # transformers' Llama has no sliding window at all.
    ("smollm2_135m_instruct", _SLIDING, "sliding_window"),
    # transformers: no window unless use_sliding_window.
    (
        "qwen3_0p6b",
        dict(sliding_window=4096, max_window_layers=0),
        "sliding_window",
    ),
    # A window as long as every position never masks anything.
    (
        "qwen2p5_1p5b_instruct",
        dict(use_sliding_window=True),
        "use_sliding_window",
    ),
    # transformers' Qwen2 never reads attention_bias (q/k/v always biased).
    ("qwen2p5_1p5b_instruct", dict(attention_bias=False), "attention_bias"),
    ("qwen3_0p6b", dict(some_new_flag=None), "some_new_flag"),
    ("qwen3_0p6b", dict(hidden_act="swish"), "torch_dtype"),
]


@pytest.mark.parametrize("base,changes,entry", HARMLESS)
def test_harmless_values_load(base, changes, entry):
  config, ignored = check_hf_config(_with(base, **changes))
  assert config == from_hf_config(_fixture(base))
  assert any(i.startswith(entry) for i in ignored), ignored
