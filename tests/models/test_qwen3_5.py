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
"""Qwen3.5 (Gated DeltaNet + gated attention) against transformers."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import hf_helpers
import scripts_worker  # tests/, on the path beside conftest.py
from opd_jax import testing
from opd_jax.models import (
    ModelConfig,
    check_hf_config,
    from_hf_config,
    load_hf,
    preset,
    save_hf,
    to_hf_config,
)
from opd_jax.models.hf_io import CheckpointError
from opd_jax.models.hf_guard import UnsupportedConfigError

pytest.importorskip("torch")

# Never relax: float32 parity of two implementations of the same math
# (test_hf_parity.ATOL).
ATOL = 1e-4

LAYERS = ("linear_attention", "linear_attention", "full_attention")
tiny_qwen3_5 = testing.tiny_qwen3_5_config


@nnx.jit
def _forward(model, tokens, mask):
  return model(tokens, attention_mask=mask).logits


def _hf_model(config, seed):
  import torch  # pylint: disable=g-import-not-at-top

  hf = hf_helpers.hf_model(config, seed=seed)
  with torch.no_grad():  # A_log away from its init too (decays of all sizes)
    for name, p in hf.named_parameters():
      if name.endswith("A_log"):
        p.copy_(torch.log(torch.empty_like(p).uniform_(0.01, 4.0)))
  return hf


def _tokens(vocab, batch=2, length=21, seed=0):
  return np.random.default_rng(seed).integers(0, vocab, (batch, length))


@pytest.mark.parametrize(
    "tied,chunk", [(False, 64), (True, 8)], ids=["untied", "tied-chunk8"]
)
def test_logits_match_transformers(tmp_path, tied, chunk):
  config = tiny_qwen3_5(tied=tied)
  hf = _hf_model(config, seed=1)
  path = hf_helpers.save_hf_model(hf, str(tmp_path / "hf"))
  model = load_hf(path)
  assert model.config == config
  model.set_execution(delta_chunk_size=chunk)  # not saved: execution only
  tokens = _tokens(config.vocab_size, length=21)
  ours = _forward(model, jnp.asarray(tokens), jnp.ones(tokens.shape, bool))
  err = np.abs(np.asarray(ours) - hf_helpers.hf_logits(hf, tokens)).max()
  print(f"qwen3_5 parity tied={tied} chunk={chunk}: {err:.2e}")
  assert err <= ATOL


def test_left_padded_batch_matches_transformers(tmp_path):
  config = tiny_qwen3_5(chunk=4)
  hf = _hf_model(config, seed=2)
  model = load_hf(hf_helpers.save_hf_model(hf, str(tmp_path / "hf")))
  model.set_execution(delta_chunk_size=4)
  tokens = _tokens(config.vocab_size, batch=3, length=19, seed=7)
  mask = np.ones_like(tokens, dtype=bool)
  mask[0, :5] = False
  mask[2, :11] = False
  ours = _forward(model, jnp.asarray(tokens), jnp.asarray(mask))
  ref = hf_helpers.hf_logits(hf, tokens, mask)
  assert np.abs(np.asarray(ours) - ref)[mask].max() <= ATOL
  # ... and a padded row equals the same row alone, unpadded.
  alone = _forward(model, jnp.asarray(tokens[2:, 11:]), jnp.ones((1, 8), bool))
  assert np.abs(np.asarray(ours)[2, 11:] - np.asarray(alone)[0]).max() <= ATOL


def test_save_hf_loads_in_transformers_and_back(tmp_path):
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  config = tiny_qwen3_5(("linear_attention", "full_attention"))
  hf = _hf_model(config, seed=4)
  model = load_hf(hf_helpers.save_hf_model(hf, str(tmp_path / "hf")))
  save_hf(model, str(tmp_path / "out"))
  again_hf = transformers.AutoModelForCausalLM.from_pretrained(
      str(tmp_path / "out"), dtype=torch.float32
  ).eval()
  assert type(again_hf).__name__ == "Qwen3_5ForCausalLM"
  tokens = _tokens(config.vocab_size, seed=5)
  mask = jnp.ones(tokens.shape, bool)
  ours = np.asarray(_forward(model, jnp.asarray(tokens), mask))
  assert np.abs(ours - hf_helpers.hf_logits(again_hf, tokens)).max() <= ATOL
  again = load_hf(str(tmp_path / "out"))
  assert again.config == config
  np.testing.assert_array_equal(
      np.asarray(_forward(again, jnp.asarray(tokens), mask)), ours
  )


def _to_multimodal(src, dst):
  """A text checkpoint rewritten in the multimodal (`qwen3_5`) layout, with
  a vision tensor and an MTP tensor, which the text model ignores."""
  from safetensors.numpy import load_file, save_file  # pylint: disable=g-import-not-at-top

  os.makedirs(dst)
  tensors = load_file(os.path.join(src, "model.safetensors"))
  out = {
      k.replace("model.", "model.language_model.", 1): v
      for k, v in tensors.items()
  }
  out["model.visual.patch_embed.proj.weight"] = np.ones((4, 3), np.float32)
  out["mtp.fc.weight"] = np.ones((2, 2), np.float32)
  save_file(out, os.path.join(dst, "model.safetensors"))
  with open(os.path.join(src, "config.json")) as f:
    text = json.load(f)
  text.pop("architectures")
  outer = {
      "architectures": ["Qwen3_5ForConditionalGeneration"],
      "model_type": "qwen3_5",
      "text_config": text,
      "vision_config": {"depth": 2, "hidden_size": 8},
      "image_token_id": 90,
      "video_token_id": 91,
      "vision_start_token_id": 92,
      "vision_end_token_id": 93,
      "tie_word_embeddings": text["tie_word_embeddings"],
      "transformers_version": "5.23.0",
  }
  with open(os.path.join(dst, "config.json"), "w") as f:
    json.dump(outer, f)
  return dst


def test_multimodal_layout_loads_its_text_half(tmp_path):
  config = tiny_qwen3_5()
  hf = _hf_model(config, seed=6)
  path = hf_helpers.save_hf_model(hf, str(tmp_path / "hf"))
  model = load_hf(_to_multimodal(path, str(tmp_path / "mm")))
  assert model.config == config
  tokens = _tokens(config.vocab_size, seed=8)
  ours = _forward(model, jnp.asarray(tokens), jnp.ones(tokens.shape, bool))
  assert (
      np.abs(np.asarray(ours) - hf_helpers.hf_logits(hf, tokens)).max() <= ATOL
  )


def test_a_cut_keeps_the_layer_types_and_the_text_half(tmp_path):
  """make_student on a multimodal Qwen3.5: the student is its text model
  (no vision tower, no MTP head) with each kept layer's type, reads the
  same in transformers and opd_jax, and keeps the teacher's weights."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from opd_jax.models import cut  # pylint: disable=g-import-not-at-top

  types = ("linear_attention", "full_attention", "linear_attention") * 2
  config = tiny_qwen3_5(types)
  hf = _hf_model(config, seed=12)
  text = hf_helpers.save_hf_model(hf, str(tmp_path / "hf"))
  teacher = _to_multimodal(text, str(tmp_path / "mm"))
  with pytest.raises(ValueError, match=r"keep_layers: layers \[0, 2, 5\] are"):
    cut.cut_layers(teacher, str(tmp_path / "no_full"), (0, 2, 5))
  out = str(tmp_path / "student")
  written = cut.cut_layers(teacher, out, (0, 1, 5))
  assert written["model_type"] == "qwen3_5_text"
  assert written["layer_types"] == [types[0], types[1], types[5]]
  student = load_hf(out)
  hf_student = transformers.AutoModelForCausalLM.from_pretrained(
      out, dtype=torch.float32
  ).eval()
  assert type(hf_student).__name__ == "Qwen3_5ForCausalLM"
  tokens = _tokens(config.vocab_size, seed=13)
  ours = _forward(student, jnp.asarray(tokens), jnp.ones(tokens.shape, bool))
  ref = hf_helpers.hf_logits(hf_student, tokens)
  assert np.abs(np.asarray(ours) - ref).max() <= ATOL
  # The kept layers are the teacher's, bit for bit.
  mine = dict(hf_student.named_parameters())
  for name, p in hf.named_parameters():
    if ".layers.5." in name:
      kept = mine[name.replace(".layers.5.", ".layers.2.")]
      np.testing.assert_array_equal(kept.detach().numpy(), p.detach().numpy())


def _edit_config(path, **changes):
  with open(os.path.join(path, "config.json")) as f:
    raw = json.load(f)
  raw.update(changes)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(raw, f)


def test_bad_checkpoints_are_named_in_one_line(tmp_path):
  from safetensors.numpy import load_file, save_file  # pylint: disable=g-import-not-at-top

  config = tiny_qwen3_5()
  model = load_hf(
      hf_helpers.save_hf_model(_hf_model(config, 9), str(tmp_path / "hf"))
  )
  path = str(tmp_path / "out")
  save_hf(model, path)
  _edit_config(
      path, layer_types=["linear_attention", "mamba", "full_attention"]
  )
  with pytest.raises(UnsupportedConfigError, match=r"layer_types=\['mamba'\]"):
    load_hf(path)
  _edit_config(path, layer_types=["linear_attention"] * 3)
  with pytest.raises(CheckpointError, match="no 'full_attention' layer"):
    load_hf(path)
  _edit_config(path, layer_types=list(LAYERS))
  file = os.path.join(path, "model.safetensors")
  tensors = load_file(file)
  for name in ("conv1d.weight", "in_proj_z.weight"):
    full = f"model.layers.1.linear_attn.{name}"
    kept = {k: v for k, v in tensors.items() if k != full}
    save_file(kept, file)
    with pytest.raises(CheckpointError, match=f"missing .*{full}") as e:
      load_hf(path)
    assert "\n" not in str(e.value)
  save_file(tensors, file)
  load_hf(path)


def test_config_refuses_what_it_does_not_implement():
  with pytest.raises(ValueError, match="ModelConfig.layer_types"):
    tiny_qwen3_5(("linear_attention", "sliding_attention"))
  with pytest.raises(ValueError, match="linear_num_value_heads"):
    tiny_qwen3_5().replace(linear_num_value_heads=3)
  with pytest.raises(ValueError, match="ModelConfig.layer_types"):
    ModelConfig(
        family="qwen3",
        vocab_size=10,
        embed_dim=8,
        num_layers=1,
        num_heads=2,
        num_kv_heads=2,
        head_dim=4,
        mlp_dim=8,
        qk_norm=True,
        layer_types=("linear_attention",),
    )


@nnx.jit(static_argnames=("prefill",))
def _cached_call(model, tokens, mask, cache, prefill=False):
  out = model(tokens, attention_mask=mask, cache=cache, prefill=prefill)
  return out.logits, out.cache


def _greedy(model, prompt, mask, steps):
  """Greedy tokens [B, steps] and each step's logits [B, steps, V]."""
  b, p = prompt.shape
  cache = model.init_cache(b, p + steps)
  logits, cache = _cached_call(
      model, jnp.asarray(prompt), jnp.asarray(mask), cache, prefill=True
  )
  all_logits = [logits[:, -1]]
  for _ in range(steps - 1):
    token = jnp.argmax(all_logits[-1], axis=-1)[:, None]
    logits, cache = _cached_call(model, token, jnp.ones((b, 1), bool), cache)
    all_logits.append(logits[:, -1])
  all_logits = np.stack([np.asarray(x) for x in all_logits], axis=1)
  return all_logits.argmax(-1), all_logits


@pytest.mark.parametrize("split", [False, True], ids=["model", "split"])
def test_greedy_decoding_matches_transformers(tmp_path, split):
  import torch  # pylint: disable=g-import-not-at-top

  from opd_jax.models import split_layers  # pylint: disable=g-import-not-at-top

  config = tiny_qwen3_5(chunk=4)
  hf = _hf_model(config, seed=12)
  model = load_hf(hf_helpers.save_hf_model(hf, str(tmp_path / "hf")))
  model.set_execution(delta_chunk_size=4)
  if split:
    model = split_layers(model)
  prompt = _tokens(config.vocab_size, batch=2, length=9, seed=13)
  prompt[:, 0] = np.maximum(prompt[:, 0], 3)
  mask = np.ones_like(prompt, dtype=bool)
  mask[1, :3] = False  # a left-padded row
  prompt[1, :3] = 0
  steps = 8
  tokens, logits = _greedy(model, prompt, mask, steps)
  with torch.no_grad():
    ref = hf.generate(
        torch.as_tensor(prompt),
        attention_mask=torch.as_tensor(mask.astype(np.int64)),
        max_new_tokens=steps,
        min_new_tokens=steps,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
        pad_token_id=0,
    )
  ref_logits = np.stack([x.float().numpy() for x in ref.logits], axis=1)
  assert np.abs(logits - ref_logits).max() <= ATOL
  np.testing.assert_array_equal(tokens, ref.sequences[:, 9:].numpy())


def test_every_parameter_has_a_partition_rule():
  import jax  # pylint: disable=g-import-not-at-top
  from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top

  from opd_jax import sharding  # pylint: disable=g-import-not-at-top
  from opd_jax.models import Transformer  # pylint: disable=g-import-not-at-top

  class FakeMesh:
    shape = {"data": 2, "fsdp": 4, "tensor": 2}

  model = nnx.eval_shape(lambda: Transformer(tiny_qwen3_5(), rngs=nnx.Rngs(0)))
  state = nnx.state(model, nnx.Param)
  specs = sharding.param_specs(state, FakeMesh())
  leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, P))
  assert leaves and all(isinstance(s, P) for s in leaves)
  flat = dict(
      jax.tree_util.tree_leaves_with_path(
          specs, is_leaf=lambda x: isinstance(x, P)
      )
  )
  by_name = {sharding.path_str(k): v for k, v in flat.items()}
  # The value heads over 'tensor' (2 divides the 4 heads), D over 'fsdp'.
  assert by_name["linear_layers/linear_attn/out_proj/kernel"] == P(
      None, "tensor", None, "fsdp"
  )
  assert by_name["linear_layers/linear_attn/conv1d"] == P(None, None, None)


_FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def test_published_0p8b_config_loads_as_its_preset():
  # Qwen/Qwen3.5-0.8B's config.json (the multimodal layout): its text_config
  # as published, the vision tower's fields as mirrored in public code
  # (ignored by the loader, as transformers' causal LM ignores the tower).
  with open(os.path.join(_FIXTURES, "qwen3p5_0p8b.json")) as f:
    raw = json.load(f)
  config = from_hf_config(raw)
  assert config == preset("qwen3p5_0p8b")
  _, ignored = check_hf_config(raw)
  for field in ("attn_output_gate", "mtp_num_hidden_layers"):
    assert field in ignored


@pytest.mark.parametrize(
    "name,low,high",
    [("qwen3p5_0p8b", 0.75e9, 0.9e9), ("qwen3p5_27b", 26e9, 28e9)],
)
def test_preset_parameter_counts_match_their_names_and_transformers(
    name, low, high
):
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  config = preset(name)
  n = config.num_params()
  print(f"{name}: {n:,} parameters")  # 752,393,024 and 26,895,998,464
  assert low <= n <= high
  hf_config = transformers.AutoConfig.for_model(**to_hf_config(config))
  with torch.device("meta"):  # shapes only, no memory
    hf = transformers.AutoModelForCausalLM.from_config(hf_config)
  assert sum(p.numel() for p in hf.parameters()) == n


def test_attention_without_its_output_gate_is_refused():
  with open(os.path.join(_FIXTURES, "qwen3p5_0p8b.json")) as f:
    raw = json.load(f)
  raw["text_config"]["attn_output_gate"] = False
  with pytest.raises(UnsupportedConfigError, match="attn_output_gate=False"):
    from_hf_config(raw)


@pytest.mark.slow
def test_training_step_on_a_mesh_equals_one_device():
  """One TIP step of a tiny Qwen3.5 student and teacher on data=2 x fsdp=2
  x tensor=2 fake devices: the loss and every gradient of one device's
  step (tests/hybrid_sharding_worker.py, in its own process)."""
  scripts_worker.run_device_worker("hybrid_sharding_worker.py", timeout=1200)
