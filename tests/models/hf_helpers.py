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
"""Builds tiny random Hugging Face checkpoints with `transformers` (torch) for tests."""

import json
import os

import numpy as np

from opd_jax.models import to_hf_config

torch = None  # imported lazily so that collection works without torch


def _torch():
  global torch
  if torch is None:
    import torch as _t  # pylint: disable=g-import-not-at-top

    torch = _t
  return torch


def hf_model(config, seed: int = 0, **extra_fields):
  """A random `transformers` model for our ModelConfig, every tensor random.

  `extra_fields` are added to (or override) the HF config fields.
  """
  t = _torch()
  import transformers  # pylint: disable=g-import-not-at-top

  hf_config = transformers.AutoConfig.for_model(
      **{**to_hf_config(config), **extra_fields}
  )
  t.manual_seed(seed)
  model = transformers.AutoModelForCausalLM.from_config(
      hf_config, dtype=t.float32
  )
  with t.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("norm.weight"):
        p.copy_(1.0 + 0.1 * t.randn_like(p))
      elif name.endswith("bias"):
        p.copy_(0.1 * t.randn_like(p))
  return model.eval()


def save_hf_model(model, path: str, *, legacy_rope: bool = False) -> str:
  """`save_pretrained`; optionally rewrite config.json as transformers 4.x did.

  transformers 4.x wrote `rope_theta` and `rope_scaling` instead of 5.x's
  `rope_parameters`; most hub checkpoints look like that.
  """
  model.save_pretrained(path)
  if legacy_rope:
    config_path = os.path.join(path, "config.json")
    with open(config_path) as f:
      raw = json.load(f)
    rope = raw.pop("rope_parameters")
    raw["rope_theta"] = rope.pop("rope_theta")
    raw["rope_scaling"] = None if rope["rope_type"] == "default" else rope
    with open(config_path, "w") as f:
      json.dump(raw, f)
  return path


def hf_logits(model, tokens, attention_mask=None) -> np.ndarray:
  """float32 logits [B, T, V] of a `transformers` model."""
  t = _torch()
  tokens = t.as_tensor(np.asarray(tokens), dtype=t.long)
  kwargs = {}
  if attention_mask is not None:
    kwargs["attention_mask"] = t.as_tensor(
        np.asarray(attention_mask), dtype=t.long
    )
  with t.no_grad():
    return model(tokens, **kwargs).logits.float().numpy()
