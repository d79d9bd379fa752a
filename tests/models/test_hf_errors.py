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
"""Bad checkpoints fail loudly, naming the file, tensor and expected value."""

import json
import os

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from opd_jax import testing
from opd_jax.models import (
    CheckpointError,
    UnsupportedConfigError,
    load_hf,
    save_hf,
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("ckpt") / "model")
  save_hf(testing.random_model(testing.tiny_config("qwen2")), path)
  return path


def _copy(src, dst):
  os.makedirs(dst)
  for name in os.listdir(src):
    with (
        open(os.path.join(src, name), "rb") as f,
        open(os.path.join(dst, name), "wb") as g,
    ):
      g.write(f.read())
  return dst


def test_missing_directory(tmp_path):
  with pytest.raises(CheckpointError, match="does not exist"):
    load_hf(str(tmp_path / "nope"))


def test_missing_config(tmp_path):
  os.makedirs(tmp_path / "empty")
  with pytest.raises(CheckpointError, match="config.json not found"):
    load_hf(str(tmp_path / "empty"))


def test_unsupported_architecture(checkpoint, tmp_path):
  path = _copy(checkpoint, str(tmp_path / "m"))
  cfg_path = os.path.join(path, "config.json")
  with open(cfg_path) as f:
    raw = json.load(f)
  raw["model_type"] = "gpt_neox"
  raw["architectures"] = ["GPTNeoXForCausalLM"]
  with open(cfg_path, "w") as f:
    json.dump(raw, f)
  with pytest.raises(UnsupportedConfigError, match="model_type='gpt_neox'"):
    load_hf(path)


def test_missing_tensor(checkpoint, tmp_path):
  path = _copy(checkpoint, str(tmp_path / "m"))
  file = os.path.join(path, "model.safetensors")
  tensors = load_file(file)
  del tensors["model.layers.1.self_attn.k_proj.bias"]
  save_file(tensors, file)
  with pytest.raises(
      CheckpointError,
      match=r"missing.*model\.layers\.1\.self_attn\.k_proj\.bias",
  ):
    load_hf(path)


def test_wrong_shape(checkpoint, tmp_path):
  path = _copy(checkpoint, str(tmp_path / "m"))
  file = os.path.join(path, "model.safetensors")
  tensors = load_file(file)
  tensors["model.layers.0.mlp.up_proj.weight"] = np.zeros((95, 48), np.float32)
  save_file(tensors, file)
  with pytest.raises(
      CheckpointError,
      match=r"model\.safetensors: tensor model\.layers\.0\.mlp\.up_proj\.weight"
      r" has shape \[95, 48\], expected \[96, 48\]",
  ):
    load_hf(path)


def test_truncated_file(checkpoint, tmp_path):
  path = _copy(checkpoint, str(tmp_path / "m"))
  file = os.path.join(path, "model.safetensors")
  with open(file, "rb") as f:
    data = f.read()
  with open(file, "wb") as f:
    f.write(data[: len(data) - 100])
  with pytest.raises(CheckpointError, match=r"model\.safetensors: cannot read"):
    load_hf(path)


def test_unexpected_tensor(checkpoint, tmp_path):
  path = _copy(checkpoint, str(tmp_path / "m"))
  file = os.path.join(path, "model.safetensors")
  tensors = load_file(file)
  tensors["model.layers.0.mlp.experts.0.weight"] = np.zeros((2, 2), np.float32)
  save_file(tensors, file)
  with pytest.raises(CheckpointError, match="unexpected tensors"):
    load_hf(path)


def test_index_names_missing_shard(tmp_path):
  path = str(tmp_path / "m")
  save_hf(
      testing.random_model(testing.tiny_config("qwen3")),
      path,
      max_shard_bytes=20_000,
  )
  shards = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
  os.remove(os.path.join(path, shards[-1]))
  with pytest.raises(CheckpointError, match=f"{shards[-1]} is listed"):
    load_hf(path)


def _rewrite_tensor(path, name, fn):
  file = os.path.join(path, "model.safetensors")
  tensors = load_file(file)
  tensors[name] = fn(tensors[name])
  save_file(tensors, file)


def _set(index, value):
  def fn(x):
    x = x.copy()
    x[index] = value
    return x

  return fn


def _write_config(path, text: bytes):
  with open(os.path.join(path, "config.json"), "wb") as f:
    f.write(text)


def _edit_config(path, **changes):
  with open(os.path.join(path, "config.json")) as f:
    raw = json.load(f)
  raw.update(changes)
  _write_config(path, json.dumps(raw).encode())


# (how the checkpoint is broken, expected error type, message fragment).
BAD_CHECKPOINTS = [
    (
        "nan",
        lambda p: _rewrite_tensor(
            p, "model.layers.1.mlp.down_proj.weight", _set((3, 4), np.nan)
        ),
        CheckpointError,
        r"model\.safetensors: tensor model\.layers\.1\.mlp"
        r"\.down_proj\.weight holds 1 NaN and 0 infinite value\(s\) of 4608"
        r" \(first at index \[3, 4\]\)",
    ),
    (
        "inf",
        lambda p: _rewrite_tensor(
            p, "model.embed_tokens.weight", _set((0, 1), -np.inf)
        ),
        CheckpointError,
        r"tensor model\.embed_tokens\.weight holds 0 NaN and 1" r" infinite",
    ),
    (
        "inf-bias",
        lambda p: _rewrite_tensor(
            p, "model.layers.0.self_attn.q_proj.bias", _set(5, np.inf)
        ),
        CheckpointError,
        r"q_proj\.bias holds 0 NaN and 1 infinite",
    ),
    (
        "int8",
        lambda p: _rewrite_tensor(
            p,
            "model.layers.0.self_attn.v_proj.weight",
            lambda x: x.astype(np.int8),
        ),
        CheckpointError,
        r"tensor model\.layers\.0\.self_attn\.v_proj\.weight"
        r" has dtype I8, expected a floating-point type",
    ),
    (
        "int32",
        lambda p: _rewrite_tensor(
            p, "model.norm.weight", lambda x: x.astype(np.int32)
        ),
        CheckpointError,
        r"model\.norm\.weight has dtype I32",
    ),
    (
        "not-json",
        lambda p: _write_config(p, b'{"model_type": "qwen2",'),
        CheckpointError,
        r"m/config\.json is not valid JSON: Expecting",
    ),
    (
        "not-utf8",
        lambda p: _write_config(p, b'{"model_type": "\xff"}'),
        CheckpointError,
        r"m/config\.json is not UTF-8 text \(byte 0xff at" r" offset 16\)",
    ),
    (
        "json-list",
        lambda p: _write_config(p, b"[1, 2]"),
        UnsupportedConfigError,
        r"m/config\.json: HF config: expected a JSON" r" object, got list",
    ),
    (
        "bad-heads",
        lambda p: _edit_config(p, num_key_value_heads=3),
        CheckpointError,
        r"m/config\.json: ModelConfig\.num_heads must be a"
        r" multiple of num_kv_heads",
    ),
    (
        "sliding",
        lambda p: _edit_config(
            p, use_sliding_window=True, sliding_window=8, max_window_layers=1
        ),
        UnsupportedConfigError,
        r"m/config\.json: HF config field"
        r" use_sliding_window=True is not supported: a sliding window of 8"
        r" tokens on layers 1\.\.1",
    ),
]


@pytest.mark.parametrize(
    "case,breaker,error,match",
    BAD_CHECKPOINTS,
    ids=[c[0] for c in BAD_CHECKPOINTS],
)
def test_bad_checkpoint_is_named(
    checkpoint, tmp_path, case, breaker, error, match
):
  del case
  path = _copy(checkpoint, str(tmp_path / "m"))
  breaker(path)
  with pytest.raises(error, match=match):
    load_hf(path)


def test_role_prefixes_every_error(checkpoint, tmp_path):
  path = _copy(checkpoint, str(tmp_path / "m"))
  _rewrite_tensor(path, "model.norm.weight", _set(0, np.nan))
  with pytest.raises(
      CheckpointError, match=r"^config\.teacher: .*model\.norm\.weight holds 1"
  ):
    load_hf(path, role="config.teacher")
  with pytest.raises(
      CheckpointError,
      match=r"^config\.student: Checkpoint" r" directory .* does not exist",
  ):
    load_hf(str(tmp_path / "nope"), role="config.student")
