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
"""A student cut from its teacher: an HF checkpoint with a subset of layers."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from typing import Any, Sequence

from flax import nnx
from safetensors.numpy import save_file

from opd_jax.models import hf_io
from opd_jax.models.config import text_half
from opd_jax.models.transformer import Transformer

_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}
# Files a student must not inherit: weights in other formats, the model
# card of the teacher, and the files written here.
_NOT_COPIED = re.compile(
    r"\.(safetensors|bin|pt|pth|gguf|h5|msgpack|onnx|ckpt)$|^README\.md$|"
    r"^config\.json$|^model\.safetensors\.index\.json$"
)
PROVENANCE_FILE = "student_layers.json"


def evenly_spaced_layers(num_layers: int, keep: int) -> tuple[int, ...]:
  """`keep` of `num_layers` layer indices, evenly spaced, ends included.

  Index i (0-based, of `keep`) is round(i * (L - 1) / (keep - 1)), halves
  rounded up, so the first and the last layer are always kept (the embedding
  and the head were trained next to them); `keep=1` keeps layer 0.

  Examples:
    >>> evenly_spaced_layers(30, 4)
    (0, 10, 19, 29)
  """
  if not 1 <= keep <= num_layers:
    raise ValueError(
        f"num_layers: expected 1 <= N <= {num_layers} (the teacher's layers),"
        f" got {keep}"
    )
  if keep == 1:
    return (0,)
  span, steps = num_layers - 1, keep - 1
  return tuple((2 * i * span + steps) // (2 * steps) for i in range(keep))


def check_layers(keep: Sequence[int], num_layers: int) -> tuple[int, ...]:
  """Validates explicit layer indices: strictly increasing, in range."""
  keep = tuple(keep)
  if not keep:
    raise ValueError("keep_layers: expected at least one layer index, got none")
  bad = [i for i in keep if not 0 <= i < num_layers]
  if bad:
    raise ValueError(
        f"keep_layers: layer {bad[0]} is out of range; the teacher has"
        f" {num_layers} layers (0..{num_layers - 1})"
    )
  if any(b <= a for a, b in zip(keep, keep[1:])):
    raise ValueError(
        "keep_layers: expected strictly increasing indices (each layer once,"
        f" in the teacher's order), got {list(keep)}"
    )
  return keep


def check_hybrid_cut(
    config, keep: tuple[int, ...], field: str = "keep_layers"
) -> None:
  """Refuses a cut of a hybrid (Qwen3.5) model that keeps no full-attention
  layer: the Gated DeltaNet layers carry no positions (no RoPE) and decay
  what they hold, so nothing would attend over the whole context."""
  types = config.layer_types
  if types and not any(types[i] == "full_attention" for i in keep):
    full = [i for i, t in enumerate(types) if t == "full_attention"]
    raise ValueError(
        f"{field}: layers {list(keep)} are all linear attention; keep at"
        f" least one full-attention layer (the teacher's are {full})"
    )


def _student_config(
    raw: dict[str, Any], keep: tuple[int, ...], moe_mask=None
) -> dict:
  """The teacher's (text) config.json with the layer count and per-layer
  lists cut.

  A mixture of experts keeps each kept layer's kind (routed experts or a
  dense MLP): the student's dense layers are listed in `mlp_only_layers`
  with `decoder_sparse_step` 1, since a step rarely survives the cut. A
  hybrid keeps each layer's type (`layer_types`) and has no MTP head.
  """
  # A multimodal teacher's text half (`text_config`, as a text model's).
  out = dict(text_half(raw)[0])
  for field in ("tie_word_embeddings", "dtype", "torch_dtype"):
    if field in raw:  # a multimodal config may keep these outside
      out.setdefault(field, raw[field])
  out["num_hidden_layers"] = len(keep)
  if "mtp_num_hidden_layers" in out:
    out["mtp_num_hidden_layers"] = 0
  if moe_mask is not None and any(moe_mask):
    out["mlp_only_layers"] = [j for j, i in enumerate(keep) if not moe_mask[i]]
    out["decoder_sparse_step"] = 1
  types = out.get("layer_types")
  if isinstance(types, list):
    out["layer_types"] = [types[i] for i in keep]
  window = out.get("max_window_layers")
  if isinstance(window, int):
    # Layers at or past max_window_layers may slide; keep each layer's kind.
    out["max_window_layers"] = sum(i < window for i in keep)
  return out


def _rename(name: str, new_index: dict[int, int], prefix: str) -> str | None:
  """The student's name of teacher tensor `name` (under `prefix`, where the
  teacher keeps its text model), or None when its layer is dropped."""
  m = re.match(rf"^{re.escape(prefix)}layers\.(\d+)\.(.+)$", name)
  if m is None:
    return f"model.{name[len(prefix):]}" if name.startswith(prefix) else name
  i = int(m.group(1))
  return f"model.layers.{new_index[i]}.{m.group(2)}" if i in new_index else None


def _plan_shards(sizes: dict[str, int], max_bytes: int) -> list[list[str]]:
  shards, current, size = [], [], 0
  for name, nbytes in sizes.items():
    if current and size + nbytes > max_bytes:
      shards.append(current)
      current, size = [], 0
    current.append(name)
    size += nbytes
  shards.append(current)
  return shards


def _check_out_dir(out_dir: str) -> None:
  if os.path.exists(out_dir) and (
      not os.path.isdir(out_dir) or os.listdir(out_dir)
  ):
    raise ValueError(
        f"out: {out_dir} already exists and is not an empty directory;"
        " choose a new path"
    )


def cut_layers(
    teacher_dir: str,
    out_dir: str,
    keep_layers: Sequence[int],
    *,
    max_shard_bytes: int = 2 << 30,
) -> dict[str, Any]:
  """Writes an HF checkpoint made of the teacher's layers `keep_layers`.

  The embedding, final norm and head are the teacher's; decoder layer
  `keep_layers[j]` becomes layer j (a MoE layer with its router and all
  its experts: a MoE teacher gives a MoE student of fewer layers; a
  Qwen3.5 layer keeps its type, and a cut must keep a full-attention
  layer). The student is a text model: a multimodal teacher's vision tower
  and any MTP head are dropped (the head was trained on the teacher's last
  layer), and its text half is written in the text layout
  (`Qwen3_5ForCausalLM`). Tensors keep their dtype and are streamed one
  shard at a time, so memory holds one shard, not the model.
  config.json is the teacher's with the new `num_hidden_layers` (and
  `layer_types` / `max_window_layers` cut to match); every other file
  (tokenizer, chat template, generation config) is copied except weights
  in other formats and the README; `student_layers.json` records the
  teacher and the layers kept.

  Args:
    teacher_dir: a checkpoint `load_hf` accepts (it is checked the same way:
      config, tensor names, shapes and dtypes).
    out_dir: a new or empty directory.
    keep_layers: strictly increasing teacher layer indices.
    max_shard_bytes: safetensors shard size, as `save_hf`.

  Returns:
    The student's config.json dictionary.

  Raises:
    ValueError: bad layer indices, a hybrid cut without full attention,
      or a non-empty `out_dir`.
    CheckpointError, UnsupportedConfigError: as `load_hf` for the teacher.
  """
  config, raw = hf_io.read_hf_config(teacher_dir)
  keep = check_layers(keep_layers, config.num_layers)
  check_hybrid_cut(config, keep)
  _check_out_dir(out_dir)
  reader = hf_io.TensorReader(hf_io.tensor_files(teacher_dir))
  abstract = nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0)))
  prefix = hf_io.hf_prefix(raw)
  needed = hf_io.expected_tensors(config, nnx.split(abstract)[1], prefix)
  hf_io.check_tensors(reader, needed, config, teacher_dir)
  new_index = {old: new for new, old in enumerate(keep)}
  sizes = {}
  # The text model's tensors only (a tied head stored anyway, a vision
  # tower, an MTP head or a rotary buffer is not carried over).
  for name in needed:
    new = _rename(name, new_index, prefix)
    if new is not None:
      sizes[name] = math.prod(reader.shape(name)) * _BYTES.get(
          reader.dtype(name), 4
      )
  shards = _plan_shards(sizes, max_shard_bytes)
  os.makedirs(out_dir, exist_ok=True)
  weight_map = {}
  for j, names in enumerate(shards):
    file = (
        hf_io.WEIGHTS_FILE
        if len(shards) == 1
        else f"model-{j + 1:05d}-of-{len(shards):05d}.safetensors"
    )
    tensors = {_rename(n, new_index, prefix): reader.get(n) for n in names}
    save_file(tensors, os.path.join(out_dir, file), metadata={"format": "pt"})
    weight_map.update({k: file for k in tensors})
  if len(shards) > 1:
    with open(os.path.join(out_dir, hf_io.INDEX_FILE), "w") as f:
      json.dump(
          {
              "metadata": {"total_size": sum(sizes.values())},
              "weight_map": weight_map,
          },
          f,
          indent=2,
      )
  for name in sorted(os.listdir(teacher_dir)):
    src = os.path.join(teacher_dir, name)
    if os.path.isfile(src) and not _NOT_COPIED.search(name):
      shutil.copy(src, os.path.join(out_dir, name))
  with open(os.path.join(out_dir, PROVENANCE_FILE), "w") as f:
    json.dump(
        {
            "teacher": os.path.abspath(teacher_dir),
            "teacher_num_layers": config.num_layers,
            "kept_layers": list(keep),
        },
        f,
        indent=2,
    )
  student = _student_config(raw, keep, config.moe_layer_mask())
  # config.json last: a directory with a config is a complete checkpoint.
  with open(os.path.join(out_dir, hf_io.CONFIG_FILE), "w") as f:
    json.dump(student, f, indent=2)
  return student
