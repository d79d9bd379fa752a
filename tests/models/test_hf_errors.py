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
    CheckpointError, UnsupportedConfigError, load_hf, save_hf,
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("ckpt") / "model")
  save_hf(testing.random_model(testing.tiny_config("qwen2")), path)
  return path


def _copy(src, dst):
  os.makedirs(dst)
  for name in os.listdir(src):
    with open(os.path.join(src, name), "rb") as f, \
         open(os.path.join(dst, name), "wb") as g:
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
  with pytest.raises(CheckpointError,
                     match=r"missing.*model\.layers\.1\.self_attn\.k_proj\.bias"):
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
      r" has shape \[95, 48\], expected \[96, 48\]"):
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
  save_hf(testing.random_model(testing.tiny_config("qwen3")), path,
          max_shard_bytes=20_000)
  shards = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
  os.remove(os.path.join(path, shards[-1]))
  with pytest.raises(CheckpointError, match=f"{shards[-1]} is listed"):
    load_hf(path)
