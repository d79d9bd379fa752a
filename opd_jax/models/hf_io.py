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
"""Hugging Face checkpoint import and export through one mapping table per family.

Each row of a family's table pairs an HF tensor name (with `{i}` for the layer
index) with our parameter path and a transform kind; `load_hf` applies the
transform, `save_hf` its inverse, so the two directions cannot drift apart.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import json
import math
import os
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from safetensors import safe_open
from safetensors.numpy import save_file

from opd_jax import sharding
from opd_jax.models.config import (
    MULTIMODAL_TYPES,
    ModelConfig,
    UnsupportedConfigError,
    from_hf_config,
    to_hf_config,
)
from opd_jax.models.transformer import Transformer, stack_layers

CONFIG_FILE = "config.json"
INDEX_FILE = "model.safetensors.index.json"
WEIGHTS_FILE = "model.safetensors"
# Tensors some checkpoints carry that hold no parameters of ours.
_IGNORED_TENSORS = (re.compile(r"\.rotary_emb\.inv_freq$"),)
# ... and those of a Qwen3.5 checkpoint that transformers' causal LM ignores
# too: the multi-token-prediction head and (multimodal layout) the vision
# tower.
_HYBRID_IGNORED = (re.compile(r"^mtp\."), re.compile(r"^model\.visual\."))
# Where a multimodal checkpoint (`config.MULTIMODAL_TYPES`) keeps its text
# model's tensors, for `model.` of a text-only one.
MULTIMODAL_PREFIX = "model.language_model."
# safetensors dtype names of the weights we can load.
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")


class CheckpointError(ValueError):
  """A checkpoint directory is missing, incomplete or inconsistent."""


@dataclasses.dataclass(frozen=True)
class Mapping:
  """One HF tensor (or one per layer, or per layer and expert) <-> one
  parameter of ours.

  Attributes:
    hf_name: HF tensor name; `{i}` stands for the layer index, `{e}` for
      the expert index.
    path: our parameter path ('/'-joined); with `{i}`, stacked over the
      layers `layers` (leading axis), then with `{e}` over the experts.
    kind: 'copy' (same layout), 'flat' (HF stores it flattened to 1-D, e.g.
      a bias [N, H] as [N*H]), 'conv' (a depthwise Conv1d weight [C, 1, W],
      ours [W, C]) or 'linear:<n>' for a torch
      Linear weight [out, in] stored by us as a kernel whose first n axes are
      the input axes, e.g. [D, N, H] for q_proj (n=1), [N, H, D] for o_proj.
    layers: for a stacked row, the HF layer index of each entry of our
      stack (a MoE model with dense layers keeps two stacks).
    experts: for a row with `{e}`, the number of experts.
  """

  hf_name: str
  path: str
  kind: str = "copy"
  layers: tuple[int, ...] = ()
  experts: int = 0

  @property
  def stacked(self) -> bool:
    return "{i}" in self.hf_name

  @property
  def lead(self) -> int:
    """Leading axes of our parameter that index HF tensors (0, 1 or 2)."""
    return int(self.stacked) + int(self.experts > 0)

  def hf_names(self) -> list[tuple[tuple[int, ...], str]]:
    """[(index into our parameter's leading axes, HF tensor name)]."""
    if not self.stacked:
      return [((), self.hf_name)]
    if not self.experts:
      return [
          ((j,), self.hf_name.format(i=i)) for j, i in enumerate(self.layers)
      ]
    return [
        ((j, e), self.hf_name.format(i=i, e=e))
        for j, i in enumerate(self.layers)
        for e in range(self.experts)
    ]


def _linear_attn_rows(row, prefix: str):
  """Rows of a Gated DeltaNet layer's `linear_attn` (transformers' names)."""
  la = f"{prefix}layers.{{i}}.linear_attn"
  return [
      row(
          f"{la}.in_proj_qkv.weight",
          "linear_attn/in_proj_qkv/kernel",
          "linear:1",
      ),
      row(f"{la}.in_proj_z.weight", "linear_attn/in_proj_z/kernel", "linear:1"),
      row(f"{la}.in_proj_b.weight", "linear_attn/in_proj_b/kernel", "linear:1"),
      row(f"{la}.in_proj_a.weight", "linear_attn/in_proj_a/kernel", "linear:1"),
      row(f"{la}.conv1d.weight", "linear_attn/conv1d", "conv"),
      row(f"{la}.dt_bias", "linear_attn/dt_bias"),
      row(f"{la}.A_log", "linear_attn/A_log"),
      row(f"{la}.norm.weight", "linear_attn/norm/scale"),
      row(f"{la}.out_proj.weight", "linear_attn/out_proj/kernel", "linear:2"),
  ]


def _stack_rows(
    config: ModelConfig, stack: str, layers, kind: str, prefix: str = "model."
):
  """The rows of one stack of decoder layers (`layers`: HF indices) of
  `kind` (`ModelConfig.layer_kinds`)."""
  a = f"{prefix}layers.{{i}}.self_attn"
  m = f"{prefix}layers.{{i}}.mlp"
  row = lambda hf, path, kind="copy", experts=0: Mapping(
      hf, f"{stack}/{path}", kind, tuple(layers), experts
  )
  rows = [
      row(f"{prefix}layers.{{i}}.input_layernorm.weight", "input_norm/scale"),
      row(
          f"{prefix}layers.{{i}}.post_attention_layernorm.weight",
          "post_attn_norm/scale",
      ),
  ]
  if kind == "linear":
    rows += _linear_attn_rows(row, prefix)
  else:
    rows += [
        row(f"{a}.q_proj.weight", "attn/q_proj/kernel", "linear:1"),
        row(f"{a}.k_proj.weight", "attn/k_proj/kernel", "linear:1"),
        row(f"{a}.v_proj.weight", "attn/v_proj/kernel", "linear:1"),
        row(f"{a}.o_proj.weight", "attn/o_proj/kernel", "linear:2"),
    ]
  if kind == "moe":
    e = config.num_experts
    rows += [row(f"{m}.gate.weight", "moe/router/kernel", "linear:1")] + [
        row(
            f"{m}.experts.{{e}}.{p}_proj.weight", f"moe/{p}_proj", "linear:1", e
        )
        for p in ("gate", "up", "down")
    ]
  else:
    rows += [
        row(f"{m}.{p}_proj.weight", f"mlp/{p}_proj/kernel", "linear:1")
        for p in ("gate", "up", "down")
    ]
  if kind == "linear":
    return rows
  if config.qkv_bias:
    rows += [
        row(f"{a}.{p}_proj.bias", f"attn/{p}_proj/bias", "flat") for p in "qkv"
    ]
  if config.qk_norm:
    rows += [row(f"{a}.{p}_norm.weight", f"attn/{p}_norm/scale") for p in "qk"]
  return rows


def mapping_table(
    config: ModelConfig, prefix: str = "model."
) -> tuple[Mapping, ...]:
  """The mapping rows for `config` (all families share the layout; a MoE
  layer's `mlp` holds a router `gate` and per-expert projections, a Gated
  DeltaNet layer a `linear_attn`). `prefix` is where the text model's
  tensors live: `model.`, or `MULTIMODAL_PREFIX` in a multimodal
  checkpoint."""
  kinds = config.layer_kinds()
  rows = [
      Mapping(f"{prefix}embed_tokens.weight", "embedder/embedding"),
      Mapping(f"{prefix}norm.weight", "final_norm/scale"),
  ]
  for stack, layers in stack_layers(config).items():
    rows += _stack_rows(config, stack, layers, kinds[layers[0]], prefix)
  if not config.tie_embeddings:
    rows.append(Mapping("lm_head.weight", "lm_head/kernel", "linear:1"))
  return tuple(rows)


def _hf_shape(kind: str, shape: tuple[int, ...]) -> tuple[int, ...]:
  """The HF shape of one (unstacked) parameter of ours of `shape`."""
  if kind == "copy":
    return shape
  if kind == "flat":
    return (math.prod(shape),)
  if kind == "conv":
    return (shape[1], 1, shape[0])
  n = int(kind.split(":")[1])
  return (math.prod(shape[n:]), math.prod(shape[:n]))


def to_ours(kind: str, x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
  """HF tensor -> our layout of `shape` (one layer)."""
  if kind in ("copy", "flat"):
    return x.reshape(shape)
  if kind == "conv":
    return x[:, 0, :].T.reshape(shape)
  return x.T.reshape(shape)


def to_hf(kind: str, x: np.ndarray) -> np.ndarray:
  """Our (one-layer) parameter -> the HF tensor; inverse of `to_ours`."""
  if kind == "copy":
    return x
  if kind == "flat":
    return x.reshape(-1)
  if kind == "conv":
    return np.ascontiguousarray(x.T[:, None, :])
  n = int(kind.split(":")[1])
  return np.ascontiguousarray(x.reshape(math.prod(x.shape[:n]), -1).T)


# -- reading -------------------------------------------------------------------


def read_hf_config(path: str) -> tuple[ModelConfig, dict[str, Any]]:
  """Parses `path`/config.json into (ModelConfig, raw dict).

  Raises:
    CheckpointError: no directory or config.json, or the file is not UTF-8
      JSON; the message names the file.
    UnsupportedConfigError: a field asks for an unsupported variant; the
      message names the file and the field.
  """
  if not os.path.isdir(path):
    raise CheckpointError(f"Checkpoint directory {path!r} does not exist")
  config_path = os.path.join(path, CONFIG_FILE)
  if not os.path.isfile(config_path):
    raise CheckpointError(f"{config_path} not found: not an HF checkpoint")
  try:
    with open(config_path, encoding="utf-8") as f:
      raw = json.load(f)
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{config_path} is not valid JSON: {e}") from None
  except UnicodeDecodeError as e:
    raise CheckpointError(
        f"{config_path} is not UTF-8 text (byte {e.object[e.start]:#04x} at"
        f" offset {e.start}): not an HF config.json"
    ) from None
  try:
    return from_hf_config(raw), raw
  except ValueError as e:  # UnsupportedConfigError, or ModelConfig's checks
    kind = (
        UnsupportedConfigError
        if isinstance(e, UnsupportedConfigError)
        else CheckpointError
    )
    raise kind(f"{config_path}: {e}") from None


@contextlib.contextmanager
def _named(role: str | None):
  """Prefixes checkpoint errors raised inside with `role` (e.g. a flag)."""
  if not role:
    yield
    return
  try:
    yield
  except (CheckpointError, UnsupportedConfigError) as e:
    raise type(e)(f"{role}: {e}") from None


def tensor_files(path: str) -> dict[str, str]:
  """Maps every tensor name to the safetensors file holding it."""
  index_path = os.path.join(path, INDEX_FILE)
  if os.path.isfile(index_path):
    with open(index_path) as f:
      weight_map = json.load(f).get("weight_map")
    if not isinstance(weight_map, dict):
      raise CheckpointError(f"{index_path} has no 'weight_map' dictionary")
    files = sorted(set(weight_map.values()))
  else:
    files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    if not files:
      raise CheckpointError(f"No *.safetensors file in {path}")
  where = {}
  for name in files:
    file = os.path.join(path, name)
    if not os.path.isfile(file):
      raise CheckpointError(f"{file} is listed in {INDEX_FILE} but missing")
    try:
      with safe_open(file, framework="numpy") as f:
        keys = list(f.keys())
    except Exception as e:  # safetensors raises its own error types.
      raise CheckpointError(f"{file}: cannot read safetensors: {e}") from None
    for k in keys:
      where[k] = file
  return where


# The fused expert layout transformers >= 5 keeps in memory and writes with
# `save_pretrained(save_original_format=False)`: per layer, gate and up of
# every expert in one [E, 2F, D] tensor (gate rows first), down in [E, D, F].
_FUSED_EXPERTS = re.compile(r"^(.*\.mlp\.experts)\.(gate_up_proj|down_proj)$")


def _fused_expert_views(
    names: dict[str, str], shape_of: Callable[[str], tuple[int, ...]]
) -> dict[str, tuple[str, tuple]]:
  """Per-expert name -> (fused tensor, index into it), for every fused
  expert tensor among `names`: `experts.{e}.gate_proj.weight` is
  `gate_up_proj[e, :F]`, `up_proj` `gate_up_proj[e, F:]`, `down_proj`
  `down_proj[e]`, each a torch Linear weight [out, in] as in the
  per-expert layout. A fused tensor of another rank is left as it is (and
  reported as unexpected)."""
  views = {}
  for name in names:
    match = _FUSED_EXPERTS.match(name)
    shape = shape_of(name) if match else ()
    if len(shape) != 3:
      continue
    base, kind = match.groups()
    for e in range(shape[0]):
      if kind == "down_proj":
        views[f"{base}.{e}.down_proj.weight"] = (name, (e,))
      elif shape[1] % 2 == 0:
        f = shape[1] // 2
        views[f"{base}.{e}.gate_proj.weight"] = (name, (e, slice(0, f)))
        views[f"{base}.{e}.up_proj.weight"] = (name, (e, slice(f, 2 * f)))
  return views


class TensorReader:
  """Opens each safetensors file once and reads tensors with checks.

  `files` maps every tensor it can read to its file. Fused expert tensors
  are read through per-expert views (`_fused_expert_views`), so the rest of
  loading sees one layout; each view reads only its slice of the file.
  """

  def __init__(self, files: dict[str, str]):
    self._handles: dict[str, Any] = {}
    self._raw_files = files
    self._views = _fused_expert_views(files, self._raw_shape)
    fused = {source for source, _ in self._views.values()}
    self.files = {n: f for n, f in files.items() if n not in fused}
    self.files.update({v: files[src] for v, (src, _) in self._views.items()})

  def _handle(self, file):
    if file not in self._handles:
      self._handles[file] = safe_open(file, framework="numpy")
    return self._handles[file]

  def _slice(self, name: str):
    return self._handle(self._raw_files[name]).get_slice(name)

  def _raw_shape(self, name: str) -> tuple[int, ...]:
    return tuple(self._slice(name).get_shape())

  def shape(self, name: str) -> tuple[int, ...]:
    if name not in self._views:
      return self._raw_shape(name)
    source, index = self._views[name]
    full = self._raw_shape(source)
    rows = index[1].stop - index[1].start if len(index) > 1 else full[1]
    return (rows, full[2])

  def dtype(self, name: str) -> str:
    """The safetensors dtype name, e.g. 'BF16' or 'I8'."""
    return self._slice(self._views.get(name, (name,))[0]).get_dtype()

  def get(self, name: str) -> np.ndarray:
    """Reads tensor `name`; raises if it holds a NaN or an infinity."""
    file = self.files[name]
    try:
      if name in self._views:
        source, index = self._views[name]
        x = self._slice(source)[index]
      else:
        x = self._handle(file).get_tensor(name)
    except Exception as e:
      raise CheckpointError(f"{file}: cannot read tensor {name}: {e}") from None
    _check_finite(x, name, file)
    return x


def _check_finite(x: np.ndarray, name: str, file: str) -> None:
  finite = np.isfinite(x)
  if finite.all():
    return
  nan = int(np.isnan(x).sum())
  first = tuple(int(i) for i in np.argwhere(~finite)[0])
  raise CheckpointError(
      f"{file}: tensor {name} holds {nan} NaN and {int((~finite).sum()) - nan}"
      f" infinite value(s) of {x.size} (first at index {list(first)}); the"
      " checkpoint is corrupt or diverged"
  )


def hf_prefix(raw: dict[str, Any]) -> str:
  """Where the text model's tensors live in a checkpoint of config `raw`."""
  if raw.get("model_type") in MULTIMODAL_TYPES:
    return MULTIMODAL_PREFIX
  return "model."


def expected_tensors(
    config: ModelConfig, abstract_state, prefix: str = "model."
) -> dict[str, tuple]:
  """HF name -> (mapping, per-tensor shape of ours) for every tensor needed."""
  flat = {sharding.path_str(p): v for p, v in _flat_state(abstract_state)}
  needed = {}
  for m in mapping_table(config, prefix):
    if m.path not in flat:
      raise AssertionError(f"mapping table names unknown parameter {m.path}")
    shape = tuple(flat[m.path].shape)[m.lead :]
    for _, name in m.hf_names():
      needed[name] = (m, shape)
  unmapped = set(flat) - {m.path for m in mapping_table(config)}
  if unmapped:
    raise AssertionError(f"parameters without a mapping row: {unmapped}")
  return needed


def _flat_state(state):
  return jax.tree_util.tree_flatten_with_path(state)[0]


def check_tensors(reader: TensorReader, needed, config, path) -> None:
  """Raises unless every needed tensor is present with its shape and a float
  dtype, and no tensor of another architecture is there."""
  missing = sorted(n for n in needed if n not in reader.files)
  if missing:
    raise CheckpointError(
        f"{path}: {len(missing)} tensor(s) missing from the safetensors"
        f" files: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}"
    )
  for name, (m, shape) in needed.items():
    dtype = reader.dtype(name)
    if dtype not in FLOAT_DTYPES:
      raise CheckpointError(
          f"{reader.files[name]}: tensor {name} has dtype {dtype}, expected a"
          f" floating-point type ({', '.join(FLOAT_DTYPES)}); quantized or"
          " integer weights are not supported"
      )
    want = _hf_shape(m.kind, shape)
    got = reader.shape(name)
    if got != want:
      raise CheckpointError(
          f"{reader.files[name]}: tensor {name} has shape {list(got)}, expected"
          f" {list(want)} for the config in {path}"
      )
  known = set(needed)
  if config.tie_embeddings:
    known.add("lm_head.weight")  # some tied checkpoints store it anyway
  ignored = _IGNORED_TENSORS + (_HYBRID_IGNORED if config.is_hybrid else ())
  extra = sorted(
      n
      for n in reader.files
      if n not in known and not any(p.search(n) for p in ignored)
  )
  if extra:
    raise CheckpointError(
        f"{path}: unexpected tensors for a {config.family} model (another"
        f" architecture?): {', '.join(extra[:8])}"
    )


def _numpy_dtype(dtype) -> np.dtype:
  return (
      np.dtype(ml_dtypes.bfloat16)
      if jnp.dtype(dtype) == jnp.bfloat16
      else (np.dtype(jnp.dtype(dtype).name))
  )


def load_hf(
    path: str, *, dtype=jnp.float32, mesh=None, role: str | None = None
) -> Transformer:
  """Loads an HF checkpoint directory (config.json + *.safetensors).

  Every tensor is checked (presence, shape) before any is read. The model is
  built abstractly; each parameter is then assembled on the host from its HF
  tensors and placed directly onto its target sharding (with `mesh`), one
  parameter at a time, so the whole model never sits on one host or device.

  Args:
    path: directory written by `save_pretrained` or `save_hf`.
    dtype: parameter dtype (float32 or bfloat16).
    mesh: optional ('data', 'fsdp', 'tensor') mesh; parameters get the
      shardings of `opd_jax.sharding.PARTITION_RULES`.
    role: what the checkpoint is for (e.g. 'config.teacher'); prefixes
      every error message.

  Raises:
    CheckpointError: missing directory / files / tensors, wrong shapes or
      dtypes (integer, quantized), a NaN or infinite weight, or an
      unreadable (e.g. truncated) file; the message names file and tensor.
    UnsupportedConfigError: config.json asks for an unsupported variant.
  """
  with _named(role):
    return _load_hf(path, dtype, mesh)


def _load_hf(path: str, dtype, mesh) -> Transformer:
  config, raw = read_hf_config(path)
  prefix = hf_prefix(raw)
  reader = TensorReader(tensor_files(path))
  abstract = nnx.eval_shape(
      lambda: Transformer(config, dtype=dtype, rngs=nnx.Rngs(0))
  )
  graphdef, abstract_state = nnx.split(abstract)
  needed = expected_tensors(config, abstract_state, prefix)
  check_tensors(reader, needed, config, path)
  rows = {m.path: m for m in mapping_table(config, prefix)}
  np_dtype = _numpy_dtype(dtype)

  def load_param(key_path, leaf):
    p = sharding.path_str(key_path)
    m, shape = rows[p], tuple(leaf.shape)
    read = functools.partial(_assemble, reader, m, shape, np_dtype)
    if mesh is None:
      return jnp.asarray(read(tuple(slice(None) for _ in shape)))
    spec = sharding.fit_spec(sharding.spec_for_path(p, shape), shape, mesh)
    # Each device's block is read from the HF tensors it covers only: no
    # host ever holds a whole stacked parameter.
    return jax.make_array_from_callback(shape, NamedSharding(mesh, spec), read)

  state = jax.tree_util.tree_map_with_path(load_param, abstract_state)
  return nnx.merge(graphdef, state)


def _assemble(reader, m: Mapping, shape, np_dtype, index) -> np.ndarray:
  """The block `index` (a tuple of slices) of parameter `m`, from the HF
  tensors under it only."""
  index = tuple(index) + (slice(None),) * (len(shape) - len(index))
  ranges = [
      range(*index[a].indices(shape[a])) for a in range(m.lead)
  ]  # the (layer, expert) entries of the block
  inner = index[m.lead :]
  block = np.empty(
      [len(r) for r in ranges]
      + [len(range(*sl.indices(n))) for sl, n in zip(inner, shape[m.lead :])],
      np_dtype,
  )
  names = dict(m.hf_names())
  for pos in itertools.product(*ranges):
    x = to_ours(m.kind, reader.get(names[pos]), shape[m.lead :])
    block[tuple(p - r.start for p, r in zip(pos, ranges))] = x[inner]
  return block


# -- writing -------------------------------------------------------------------


def save_hf(
    model: Transformer, path: str, *, max_shard_bytes: int = 2 << 30
) -> None:
  """Writes `model` as an HF checkpoint that `transformers` loads.

  Writes config.json and model.safetensors, or numbered shards plus
  model.safetensors.index.json when larger than `max_shard_bytes`. Tensors
  keep the model's dtype; a MoE layer's experts are written one tensor per
  expert, as the published checkpoints are. Streams: the host holds one
  shard and one layer of one parameter at a time, never the model.
  """
  config = model.config
  state = nnx.state(model, nnx.Param)
  flat = {sharding.path_str(p): v for p, v in _flat_state(state)}
  entries = []  # (HF name, mapping, index into our parameter, nbytes)
  for m in mapping_table(config):
    value = flat[m.path]
    nbytes = math.prod(value.shape[m.lead :]) * value.dtype.itemsize
    entries += [(name, m, pos, nbytes) for pos, name in m.hf_names()]
  os.makedirs(path, exist_ok=True)
  hf = to_hf_config(config)
  dtype = next(iter(flat.values())).dtype
  hf["torch_dtype"] = "bfloat16" if dtype == jnp.bfloat16 else str(dtype)
  shards = _plan_entries(entries, max_shard_bytes)
  fetch = _LayerFetcher(flat)
  weight_map = {}
  for j, shard in enumerate(shards):
    name = (
        WEIGHTS_FILE
        if len(shards) == 1
        else f"model-{j + 1:05d}-of-{len(shards):05d}.safetensors"
    )
    tensors = {
        hf_name: np.ascontiguousarray(to_hf(m.kind, fetch(m, pos)))
        for hf_name, m, pos, _ in shard
    }
    save_file(tensors, os.path.join(path, name), metadata={"format": "pt"})
    weight_map.update({k: name for k in tensors})
    del tensors
  if len(shards) > 1:
    total = sum(e[3] for e in entries)
    with open(os.path.join(path, INDEX_FILE), "w") as f:
      json.dump(
          {"metadata": {"total_size": total}, "weight_map": weight_map},
          f,
          indent=2,
      )
  # config.json last: a directory with a config is a complete checkpoint.
  with open(os.path.join(path, CONFIG_FILE), "w") as f:
    json.dump(hf, f, indent=2)


class _LayerFetcher:
  """Copies parameters to the host one layer at a time (the last one kept,
  so the experts of a layer are sliced from one copy)."""

  def __init__(self, flat):
    self.flat = flat
    self.key, self.value = None, None

  def __call__(self, m: Mapping, pos: tuple[int, ...]) -> np.ndarray:
    key = (m.path, pos[:1])
    if key != self.key:
      x = self.flat[m.path]
      self.value = np.asarray(jax.device_get(x[pos[0]] if pos else x))
      self.key = key
    return self.value[pos[1:]] if pos else self.value


def _plan_entries(entries, max_bytes) -> list[list[tuple]]:
  shards, current, size = [], [], 0
  for entry in entries:
    if current and size + entry[3] > max_bytes:
      shards.append(current)
      current, size = [], 0
    current.append(entry)
    size += entry[3]
  shards.append(current)
  return shards
