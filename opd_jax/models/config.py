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
"""Frozen model configuration, presets and the Hugging Face config mapping."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from absl import logging

from opd_jax.models import hf_guard
from opd_jax.models import sequence_attention
from opd_jax.models.hf_guard import UnsupportedConfigError

FAMILIES = ("llama", "qwen2", "qwen3", "qwen3_moe", "qwen3_5")
# Layer kinds of a hybrid model (`ModelConfig.layer_types`, HF's names).
LAYER_TYPES = ("full_attention", "linear_attention")
REMAT_POLICIES = ("auto", "none", "full", "dots", "offload")
# `remat='auto'` on CPU rematerialises from this many tokens per row on.
REMAT_AUTO_MIN_LEN = 1024

# HF `model_type` -> our family, and the architecture name written on export.
_MODEL_TYPES = {
    "llama": "llama",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "qwen3_moe": "qwen3_moe",
    "qwen3_5_text": "qwen3_5",
}
# Multimodal checkpoints whose text half (`text_config`, the
# `model.language_model.*` tensors) is a family of ours; the vision tower and
# the multi-token-prediction head are ignored, as transformers' causal LM does.
MULTIMODAL_TYPES = {"qwen3_5": "Qwen3_5ForConditionalGeneration"}
_ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "qwen3_moe": "Qwen3MoeForCausalLM",
    "qwen3_5": "Qwen3_5ForCausalLM",
}
_HF_MODEL_TYPES = {family: t for t, family in _MODEL_TYPES.items()}


@dataclasses.dataclass(frozen=True)
class Llama3RopeScaling:
  """Llama-3 frequency-dependent RoPE scaling (HF `rope_type='llama3'`)."""

  factor: float
  low_freq_factor: float
  high_freq_factor: float
  original_max_position_embeddings: int


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Shape and variant flags of one decoder (Llama / Qwen2 / Qwen3 / MoE).

  Attributes:
    family: one of `FAMILIES`; decides the HF architecture on export.
    vocab_size: V, rows of the embedding and columns of the head.
    embed_dim: D, the residual width (HF `hidden_size`).
    num_layers: L, decoder blocks (run under one `lax.scan`).
    num_heads: N, query heads.
    num_kv_heads: K, key/value heads (N % K == 0; K == N is MHA).
    head_dim: H, width of one head.
    mlp_dim: F, SwiGLU hidden width (HF `intermediate_size`) of the dense
      layers.
    rms_norm_eps: epsilon of every RMSNorm.
    rope_theta: RoPE base frequency.
    rope_scaling: optional Llama-3 scaling of the RoPE frequencies.
    tie_embeddings: the head reuses the embedding matrix.
    qkv_bias: q/k/v projections carry a bias (Qwen2).
    qk_norm: RMSNorm over each query/key head before RoPE (Qwen3).
    max_position_embeddings: recorded for export; not enforced.
    num_experts: E, routed experts of a mixture-of-experts layer (0 for a
      dense model; family 'qwen3_moe' only).
    experts_per_token: k, experts each token is routed to (HF
      `num_experts_per_tok`), 1 <= k <= E.
    moe_mlp_dim: F_e, SwiGLU hidden width of one expert (HF
      `moe_intermediate_size`).
    norm_topk_prob: the k routing weights are renormalised to sum to one.
    decoder_sparse_step, mlp_only_layers: which layers are MoE, as HF:
      layer i is MoE unless i is in `mlp_only_layers` or (i + 1) is not a
      multiple of `decoder_sparse_step` (see `moe_layer_mask`).
    router_aux_loss_coef: weight of the router's load-balancing loss that
      a student adds to its loss (recorded from HF; the model computes the
      loss, `ModelOutput.aux_loss`, whatever the weight).
    bos_token_id, eos_token_ids, pad_token_id: special ids from the config.
    attention: how full-sequence attention runs, one of
      `sequence_attention.IMPLEMENTATIONS` ('auto' decides by platform,
      length and operands at trace time: on one CPU device the C++ kernel).
      An execution setting: not saved to HF.
    attention_block_size: largest query / key block of the blockwise
      attention.
    layer_types: per layer, 'full_attention' or 'linear_attention' (Gated
      DeltaNet) for the hybrid family 'qwen3_5'; () for the others (all
      full attention). A 'qwen3_5' model also gates its attention output
      (q_proj yields a query and a gate per head) and keeps every RMSNorm
      weight but the Gated DeltaNet's zero-centred (scale 1 + w).
    partial_rotary_factor: RoPE turns the first `rotary_dim` = int(head_dim
      * factor) channels of each head (1.0: all of them).
    linear_conv_kernel: taps of the Gated DeltaNet's causal depthwise conv.
    linear_num_key_heads, linear_key_head_dim: its query / key heads Hk, K.
    linear_num_value_heads, linear_value_head_dim: its value heads Hv
      (a multiple of Hk), V; the recurrent state is [Hv, K, V] per row.
    delta_chunk_size: positions per chunk of the chunked delta rule
      (`gated_delta.gated_delta_chunked`). An execution setting: not saved.
    remat: rematerialisation of the layers under differentiation, one of
      `REMAT_POLICIES`: 'none' keeps every layer's activations for the
      backward pass; 'full' keeps each layer's input only and recomputes
      the layer; 'dots' also keeps the projections' outputs (matmuls are
      not recomputed); 'offload' moves those to host memory (accelerators
      that have it); 'auto' is 'full' on accelerators and on CPU for
      sequences of at least `REMAT_AUTO_MIN_LEN` tokens, else 'none'. An
      execution setting: not saved to HF.
  """

  family: str
  vocab_size: int
  embed_dim: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  mlp_dim: int
  rms_norm_eps: float = 1e-6
  rope_theta: float = 10_000.0
  rope_scaling: Llama3RopeScaling | None = None
  tie_embeddings: bool = False
  qkv_bias: bool = False
  qk_norm: bool = False
  max_position_embeddings: int = 32_768
  bos_token_id: int | None = None
  eos_token_ids: tuple[int, ...] = ()
  pad_token_id: int | None = None
  num_experts: int = 0
  experts_per_token: int = 0
  moe_mlp_dim: int = 0
  norm_topk_prob: bool = False
  decoder_sparse_step: int = 1
  mlp_only_layers: tuple[int, ...] = ()
  router_aux_loss_coef: float = 0.0
  attention: str = "auto"
  attention_block_size: int = 512
  remat: str = "auto"
  layer_types: tuple[str, ...] = ()
  partial_rotary_factor: float = 1.0
  linear_conv_kernel: int = 0
  linear_num_key_heads: int = 0
  linear_num_value_heads: int = 0
  linear_key_head_dim: int = 0
  linear_value_head_dim: int = 0
  delta_chunk_size: int = 64

  def __post_init__(self):
    if self.attention not in sequence_attention.IMPLEMENTATIONS:
      raise ValueError(
          "ModelConfig.attention: expected one of"
          f" {sequence_attention.IMPLEMENTATIONS}, got {self.attention!r}"
      )
    if self.remat not in REMAT_POLICIES:
      raise ValueError(
          f"ModelConfig.remat: expected one of {REMAT_POLICIES}, got"
          f" {self.remat!r}"
      )
    if self.family not in FAMILIES:
      raise ValueError(
          f"ModelConfig.family: expected one of {FAMILIES}, got {self.family!r}"
      )
    for name in (
        "vocab_size",
        "embed_dim",
        "num_layers",
        "num_heads",
        "num_kv_heads",
        "head_dim",
        "mlp_dim",
        "attention_block_size",
    ):
      value = getattr(self, name)
      if not isinstance(value, int) or value <= 0:
        raise ValueError(
            f"ModelConfig.{name}: expected a positive int, got {value!r}"
        )
    _check_family_flags(self)
    _check_moe(self)
    _check_hybrid(self)
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          "ModelConfig.num_heads must be a multiple of num_kv_heads, got"
          f" num_heads={self.num_heads}, num_kv_heads={self.num_kv_heads}"
      )

  @property
  def num_groups(self) -> int:
    """Query heads per key/value head (1 for multi-head attention)."""
    return self.num_heads // self.num_kv_heads

  @property
  def is_hybrid(self) -> bool:
    """The model has Gated DeltaNet (linear attention) layers."""
    return "linear_attention" in self.layer_types

  @property
  def zero_centred_norms(self) -> bool:
    """RMSNorm weights w scale by (1 + w) (Qwen3.5), stored as HF stores w."""
    return self.family == "qwen3_5"

  @property
  def attn_output_gate(self) -> bool:
    """Attention output * sigmoid(a per-head gate from q_proj) (Qwen3.5)."""
    return self.family == "qwen3_5"

  @property
  def rotary_dim(self) -> int:
    """Channels of each head that RoPE turns (the first ones)."""
    return int(self.head_dim * self.partial_rotary_factor)

  def layer_kinds(self) -> tuple[str, ...]:
    """Per layer: 'moe', 'linear' (Gated DeltaNet + MLP) or 'dense'."""
    moe = self.moe_layer_mask()
    types = self.layer_types or ("full_attention",) * self.num_layers
    return tuple(
        "moe" if m else "linear" if t == "linear_attention" else "dense"
        for m, t in zip(moe, types)
    )

  def replace(self, **changes) -> "ModelConfig":
    return dataclasses.replace(self, **changes)

  @property
  def is_moe(self) -> bool:
    """The model has mixture-of-experts layers."""
    return any(self.moe_layer_mask())

  def moe_layer_mask(self) -> tuple[bool, ...]:
    """Per layer, whether it is a mixture of experts (HF's rule).

    Layer i is MoE iff `num_experts > 0`, i is not in `mlp_only_layers` and
    (i + 1) % `decoder_sparse_step` == 0 (transformers'
    `Qwen3MoeDecoderLayer`).
    """
    return tuple(
        self.num_experts > 0
        and i not in self.mlp_only_layers
        and (i + 1) % self.decoder_sparse_step == 0
        for i in range(self.num_layers)
    )

  def num_params(self, *, active: bool = False) -> int:
    """Number of parameters, counting a tied embedding once.

    With `active=True`, a MoE layer counts only the `experts_per_token`
    experts one token runs through (and its router): the parameters whose
    work a token costs, not those stored.
    """
    d, f, l = self.embed_dim, self.mlp_dim, self.num_layers
    q = d * self.num_heads * self.head_dim
    kv = 2 * d * self.num_kv_heads * self.head_dim
    o = self.num_heads * self.head_dim * d
    per_layer = q * (2 if self.attn_output_gate else 1) + kv + o + 2 * d
    if self.qkv_bias:
      per_layer += (self.num_heads + 2 * self.num_kv_heads) * self.head_dim
    if self.qk_norm:
      per_layer += 2 * self.head_dim
    experts = self.experts_per_token if active else self.num_experts
    moe = d * self.num_experts + experts * 3 * d * self.moe_mlp_dim
    mlps = sum(moe if m else 3 * d * f for m in self.moe_layer_mask())
    embed = self.vocab_size * d * (1 if self.tie_embeddings else 2)
    linear = self.layer_kinds().count("linear")
    hk, hv = self.linear_num_key_heads, self.linear_num_value_heads
    kd, vd = self.linear_key_head_dim, self.linear_value_head_dim
    conv = 2 * hk * kd + hv * vd
    per_linear = (
        d * conv  # in_proj_qkv
        + conv * self.linear_conv_kernel
        + 2 * d * hv * vd  # in_proj_z, out_proj
        + 2 * d * hv  # in_proj_a, in_proj_b
        + 2 * hv  # A_log, dt_bias
        + vd  # the gated norm
        + 2 * d
    )
    return (l - linear) * per_layer + linear * per_linear + mlps + embed + d

  # -- presets ---------------------------------------------------------------
  # Numbers from the public config.json of each checkpoint.

  @classmethod
  def qwen3_0p6b(cls) -> "ModelConfig":
    return _qwen3(1024, 28, 16, 8, 3072, tie=True)

  @classmethod
  def qwen3_1p7b(cls) -> "ModelConfig":
    return _qwen3(2048, 28, 16, 8, 6144, tie=True)

  @classmethod
  def qwen3_4b(cls) -> "ModelConfig":
    return _qwen3(2560, 36, 32, 8, 9728, tie=True)

  @classmethod
  def qwen3_8b(cls) -> "ModelConfig":
    return _qwen3(4096, 36, 32, 8, 12288, tie=False)

  @classmethod
  def qwen2p5_1p5b(cls) -> "ModelConfig":
    return _qwen2(151936, 1536, 28, 12, 2, 8960, tie=True)

  @classmethod
  def qwen2p5_7b(cls) -> "ModelConfig":
    return _qwen2(152064, 3584, 28, 28, 4, 18944, tie=False)

  @classmethod
  def qwen2p5_14b(cls) -> "ModelConfig":
    return _qwen2(152064, 5120, 48, 40, 8, 13824, tie=False, eps=1e-5)

  @classmethod
  def llama3p2_1b(cls) -> "ModelConfig":
    return _llama3(2048, 16, 32, 8, 8192, head_dim=64, tie=True, factor=32.0)

  @classmethod
  def llama3p1_8b(cls) -> "ModelConfig":
    return _llama3(4096, 32, 32, 8, 14336, head_dim=128, tie=False, factor=8.0)

  @classmethod
  def smollm2_135m(cls) -> "ModelConfig":
    return cls(
        family="llama",
        vocab_size=49152,
        embed_dim=576,
        num_layers=30,
        num_heads=9,
        num_kv_heads=3,
        head_dim=64,
        mlp_dim=1536,
        rms_norm_eps=1e-5,
        rope_theta=100_000.0,
        tie_embeddings=True,
        max_position_embeddings=8192,
        bos_token_id=0,
        eos_token_ids=(0,),
    )

  @classmethod
  def qwen3_30b_a3b(cls) -> "ModelConfig":
    return _qwen3_moe(2048, 48, 32, 4, 6144, 128, 8, 768)

  @classmethod
  def qwen3_235b_a22b(cls) -> "ModelConfig":
    return _qwen3_moe(4096, 94, 64, 4, 12288, 128, 8, 1536)

  # Qwen3.5's text halves (`text_config` of the Qwen3_5ForConditionalGeneration
  # checkpoints): three Gated DeltaNet layers to one gated full-attention
  # layer. The 0.8B from its config.json (tests/models/fixtures); the 27B
  # from the text_config in public code (github: the slime framework's
  # scripts/models/qwen3.5-27B.sh and a transformers Qwen3_5Config built with
  # the 27B's fields: hidden 5120, 64 layers, 24 / 4 heads of 256, ffn 17408,
  # linear 16 key / 48 value heads of 128).

  @classmethod
  def qwen3p5_0p8b(cls) -> "ModelConfig":
    return _qwen3p5(1024, 24, 8, 2, 3584, linear_heads=(16, 16), tie=True)

  @classmethod
  def qwen3p5_27b(cls) -> "ModelConfig":
    return _qwen3p5(5120, 64, 24, 4, 17408, linear_heads=(16, 48), tie=False)


PRESETS = (
    "qwen3_0p6b",
    "qwen3_1p7b",
    "qwen3_4b",
    "qwen3_8b",
    "qwen2p5_1p5b",
    "qwen2p5_7b",
    "qwen2p5_14b",
    "llama3p2_1b",
    "llama3p1_8b",
    "smollm2_135m",
    "qwen3_30b_a3b",
    "qwen3_235b_a22b",
    "qwen3p5_0p8b",
    "qwen3p5_27b",
)


def preset(name: str) -> ModelConfig:
  """Returns the preset `name` (one of `PRESETS`)."""
  if name not in PRESETS:
    raise ValueError(
        f"Unknown model preset {name!r}; expected one of {PRESETS}"
    )
  return getattr(ModelConfig, name)()


def _qwen3(d, layers, heads, kv, mlp, *, tie) -> ModelConfig:
  return ModelConfig(
      family="qwen3",
      vocab_size=151936,
      embed_dim=d,
      num_layers=layers,
      num_heads=heads,
      num_kv_heads=kv,
      head_dim=128,
      mlp_dim=mlp,
      rms_norm_eps=1e-6,
      rope_theta=1_000_000.0,
      tie_embeddings=tie,
      qk_norm=True,
      max_position_embeddings=40960,
      bos_token_id=151643,
      eos_token_ids=(151645,),
  )


def _qwen3_moe(d, layers, heads, kv, mlp, experts, k, expert_mlp):
  return _qwen3(d, layers, heads, kv, mlp, tie=False).replace(
      family="qwen3_moe",
      num_experts=experts,
      experts_per_token=k,
      moe_mlp_dim=expert_mlp,
      norm_topk_prob=True,
      router_aux_loss_coef=0.001,
      max_position_embeddings=40960,
  )


def _qwen3p5(d, layers, heads, kv, mlp, *, linear_heads, tie) -> ModelConfig:
  key_heads, value_heads = linear_heads
  return ModelConfig(
      family="qwen3_5",
      vocab_size=248320,
      embed_dim=d,
      num_layers=layers,
      num_heads=heads,
      num_kv_heads=kv,
      head_dim=256,
      mlp_dim=mlp,
      rms_norm_eps=1e-6,
      rope_theta=10_000_000.0,
      tie_embeddings=tie,
      qk_norm=True,
      max_position_embeddings=262144,
      eos_token_ids=(248044,),
      # full_attention_interval 4: layers 3, 7, 11, ... are full attention.
      layer_types=(("linear_attention",) * 3 + ("full_attention",))
      * (layers // 4),
      partial_rotary_factor=0.25,
      linear_conv_kernel=4,
      linear_num_key_heads=key_heads,
      linear_num_value_heads=value_heads,
      linear_key_head_dim=128,
      linear_value_head_dim=128,
  )


def _qwen2(vocab, d, layers, heads, kv, mlp, *, tie, eps=1e-6) -> ModelConfig:
  return ModelConfig(
      family="qwen2",
      vocab_size=vocab,
      embed_dim=d,
      num_layers=layers,
      num_heads=heads,
      num_kv_heads=kv,
      head_dim=d // heads,
      mlp_dim=mlp,
      rms_norm_eps=eps,
      rope_theta=1_000_000.0,
      tie_embeddings=tie,
      qkv_bias=True,
      max_position_embeddings=32768,
      bos_token_id=151643,
      eos_token_ids=(151645,),
  )


def _llama3(d, layers, heads, kv, mlp, *, head_dim, tie, factor) -> ModelConfig:
  return ModelConfig(
      family="llama",
      vocab_size=128256,
      embed_dim=d,
      num_layers=layers,
      num_heads=heads,
      num_kv_heads=kv,
      head_dim=head_dim,
      mlp_dim=mlp,
      rms_norm_eps=1e-5,
      rope_theta=500_000.0,
      tie_embeddings=tie,
      rope_scaling=Llama3RopeScaling(factor, 1.0, 4.0, 8192),
      max_position_embeddings=131072,
      bos_token_id=128000,
      eos_token_ids=(128001, 128008, 128009),
  )


# -- HF config mapping ---------------------------------------------------------


_unsupported = hf_guard.unsupported

# Sets of ignored fields already logged, so that reading the same kind of
# config again (student and teacher, config then weights) warns once.
_WARNED: set[tuple[str, ...]] = set()


def _check_family_flags(config: "ModelConfig") -> None:
  """Refuses flags the family's HF architecture cannot represent.

  transformers' Qwen2 always has q/k/v biases, Llama and Qwen3 put a bias
  on o_proj too whenever they have one on q/k/v, and only Qwen3 has q/k
  norms; a config outside these would save a checkpoint that neither
  transformers nor `load_hf` reads back as the same model.
  """
  for name, want in (
      ("qkv_bias", config.family == "qwen2"),
      ("qk_norm", config.family in ("qwen3", "qwen3_moe", "qwen3_5")),
  ):
    if getattr(config, name) != want:
      raise ValueError(
          f"ModelConfig.{name}: family {config.family!r} requires"
          f" {name}={want} (the HF {_ARCHITECTURES[config.family]}"
          f" architecture {'always has' if want else 'has no'}"
          f" {'q/k/v biases' if name == 'qkv_bias' else 'q/k norms'}),"
          f" got {name}={getattr(config, name)}"
      )


def _check_hybrid(config: "ModelConfig") -> None:
  """Refuses a layer pattern or linear-attention shape the code does not
  implement (one line naming the field)."""
  linear_fields = (
      "linear_conv_kernel",
      "linear_num_key_heads",
      "linear_num_value_heads",
      "linear_key_head_dim",
      "linear_value_head_dim",
  )
  if config.family != "qwen3_5":
    for name in ("layer_types",) + linear_fields:
      if getattr(config, name):
        raise ValueError(
            f"ModelConfig.{name}: family {config.family!r} has no linear"
            f" attention layers (only 'qwen3_5'), got {getattr(config, name)!r}"
        )
    if config.partial_rotary_factor != 1.0:
      raise ValueError(
          f"ModelConfig.partial_rotary_factor: family {config.family!r}"
          " turns whole heads (only 'qwen3_5' has partial RoPE), got"
          f" {config.partial_rotary_factor!r}"
      )
    return
  types = config.layer_types
  if not isinstance(types, tuple) or len(types) != config.num_layers:
    raise ValueError(
        "ModelConfig.layer_types: expected one entry per layer"
        f" ({config.num_layers}), got {types!r}"
    )
  bad = sorted({t for t in types if t not in LAYER_TYPES})
  if bad:
    raise ValueError(
        f"ModelConfig.layer_types: {bad} not implemented; expected each of"
        f" {LAYER_TYPES}"
    )
  if "full_attention" not in types:
    raise ValueError(
        "ModelConfig.layer_types: no 'full_attention' layer; a hybrid model"
        " needs at least one"
    )
  if config.is_hybrid:
    for name in linear_fields + ("delta_chunk_size",):
      value = getattr(config, name)
      if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(
            f"ModelConfig.{name}: expected a positive int, got {value!r}"
        )
    if config.linear_num_value_heads % config.linear_num_key_heads:
      raise ValueError(
          "ModelConfig.linear_num_value_heads must be a multiple of"
          f" linear_num_key_heads, got {config.linear_num_value_heads} and"
          f" {config.linear_num_key_heads}"
      )
  r = config.rotary_dim
  if not 0 < config.partial_rotary_factor <= 1 or r <= 0 or r % 2:
    raise ValueError(
        "ModelConfig.partial_rotary_factor: expected int(head_dim * factor)"
        f" even and > 0, got {config.partial_rotary_factor!r} of head_dim"
        f" {config.head_dim}"
    )


def _check_moe(config: "ModelConfig") -> None:
  """Refuses expert settings that are inconsistent or that the family's HF
  architecture cannot hold (one line naming the field)."""
  if config.family != "qwen3_moe":
    if config.num_experts:
      raise ValueError(
          f"ModelConfig.num_experts: family {config.family!r} has no"
          f" experts (only 'qwen3_moe'), got {config.num_experts}"
      )
    return
  e, k = config.num_experts, config.experts_per_token
  if not isinstance(e, int) or e <= 0:
    raise ValueError(f"ModelConfig.num_experts: expected >= 1, got {e!r}")
  if not isinstance(k, int) or not 1 <= k <= e:
    raise ValueError(
        "ModelConfig.experts_per_token: expected 1 <= k <= num_experts"
        f" = {e}, got {k!r}"
    )
  for name in ("moe_mlp_dim", "decoder_sparse_step"):
    value = getattr(config, name)
    if not isinstance(value, int) or value <= 0:
      raise ValueError(
          f"ModelConfig.{name}: expected a positive int, got {value!r}"
      )
  bad = [i for i in config.mlp_only_layers if not 0 <= i < config.num_layers]
  if bad:
    raise ValueError(
        f"ModelConfig.mlp_only_layers: {bad} are not layer indices of a"
        f" {config.num_layers}-layer model"
    )


def _partial_rotary(hf: Mapping[str, Any]) -> float:
  """A `qwen3_5` config's partial_rotary_factor (in rope_parameters, or at
  the top level as transformers 4.x wrote it; 0.25 is transformers' default)."""
  params = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
  value = params.get("partial_rotary_factor", hf.get("partial_rotary_factor"))
  value = 0.25 if value is None else value
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise UnsupportedConfigError(
        "HF config field partial_rotary_factor: expected a number, got"
        f" {value!r}"
    )
  return float(value)


def _rope_from_hf(
    hf: Mapping[str, Any], *, partial: bool = False
) -> tuple[float, Llama3RopeScaling | None]:
  """Reads RoPE settings written by transformers 4.x or 5.x (`partial`: the
  family reads `partial_rotary_factor` itself)."""
  params = hf.get("rope_parameters")
  if params is not None:  # transformers 5.x
    field, scaling = "rope_parameters", dict(params)
    theta = scaling.get("rope_theta", hf.get("rope_theta", 10_000.0))
  else:  # transformers 4.x
    field, scaling = "rope_scaling", dict(hf.get("rope_scaling") or {})
    theta = hf.get("rope_theta", 10_000.0)
  if not partial and scaling.get("partial_rotary_factor", 1.0) not in (
      None,
      1,
      1.0,
  ):
    raise _unsupported(
        f"{field}.partial_rotary_factor",
        scaling["partial_rotary_factor"],
        "RoPE on part of each head",
    )
  rope_type = scaling.get("rope_type", scaling.get("type", "default"))
  if rope_type == "default":
    return float(theta), None
  if rope_type == "llama3":
    try:
      return float(theta), Llama3RopeScaling(
          factor=float(scaling["factor"]),
          low_freq_factor=float(scaling["low_freq_factor"]),
          high_freq_factor=float(scaling["high_freq_factor"]),
          original_max_position_embeddings=int(
              scaling["original_max_position_embeddings"]
          ),
      )
    except KeyError as e:
      raise UnsupportedConfigError(
          f"HF config field {field} of rope_type 'llama3' lacks {e.args[0]!r}"
      ) from None
  raise _unsupported(
      f"{field}.rope_type",
      rope_type,
      "only 'default' and 'llama3' RoPE (linear, dynamic, yarn, longrope"
      " and the others scale positions differently)",
  )


def _family(hf: Mapping[str, Any]) -> str:
  model_type = hf.get("model_type")
  if model_type not in _MODEL_TYPES:
    raise _unsupported(
        "model_type",
        model_type,
        "supported model types are"
        f" {sorted([*_MODEL_TYPES, *MULTIMODAL_TYPES])}",
    )
  family = _MODEL_TYPES[model_type]
  archs = hf.get("architectures") or []
  bad = [a for a in archs if a != _ARCHITECTURES[family]]
  if bad:
    raise _unsupported(
        "architectures", archs, f"expected [{_ARCHITECTURES[family]!r}]"
    )
  return family


def _required_int(hf: Mapping[str, Any], field: str) -> int:
  value = hf.get(field)
  if isinstance(value, bool) or not isinstance(value, int):
    raise UnsupportedConfigError(
        f"HF config field {field}: expected an int, got {value!r}"
        + (" (missing)" if field not in hf else "")
    )
  return value


def check_hf_config(hf: Mapping[str, Any]) -> tuple[ModelConfig, list[str]]:
  """(ModelConfig, fields ignored) for a parsed HF `config.json`.

  Every field is judged by its effect (see `hf_guard`): the ones read build
  the ModelConfig, harmless ones are returned (as `name` or
  `name=value (why)`), and any that would change the computation raises.

  Raises:
    UnsupportedConfigError: the architecture or a field asks for behaviour
      this implementation does not reproduce, or a required field is
      missing; the message names the field and its value.
  """
  if not isinstance(hf, Mapping):
    raise UnsupportedConfigError(
        f"HF config: expected a JSON object, got {type(hf).__name__}"
    )
  hf, outer_ignored = text_half(hf)
  family = _family(hf)
  ignored = hf_guard.check_fields(hf, family) + outer_ignored
  theta, scaling = _rope_from_hf(hf, partial=family == "qwen3_5")
  heads = _required_int(hf, "num_attention_heads")
  d = _required_int(hf, "hidden_size")
  head_dim = hf.get("head_dim") or (d // heads if heads > 0 else 0)
  eos = hf.get("eos_token_id")
  eos_ids = (
      () if eos is None else tuple(eos) if isinstance(eos, list) else (eos,)
  )
  config = ModelConfig(
      family=family,
      vocab_size=_required_int(hf, "vocab_size"),
      embed_dim=d,
      num_layers=_required_int(hf, "num_hidden_layers"),
      num_heads=heads,
      num_kv_heads=int(hf.get("num_key_value_heads") or heads),
      head_dim=int(head_dim),
      mlp_dim=_required_int(hf, "intermediate_size"),
      rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
      rope_theta=theta,
      rope_scaling=scaling,
      tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
      qkv_bias=family == "qwen2",
      qk_norm=family in ("qwen3", "qwen3_moe", "qwen3_5"),
      max_position_embeddings=int(hf.get("max_position_embeddings", 32768)),
      bos_token_id=hf.get("bos_token_id"),
      eos_token_ids=tuple(int(e) for e in eos_ids),
      pad_token_id=hf.get("pad_token_id"),
      **(_moe_from_hf(hf) if family == "qwen3_moe" else {}),
      **(_hybrid_from_hf(hf) if family == "qwen3_5" else {}),
  )
  return config, ignored


def text_half(hf: Mapping[str, Any]) -> tuple[Mapping[str, Any], list[str]]:
  """For a multimodal config (`MULTIMODAL_TYPES`), its `text_config` as a
  text model's config and the outer fields ignored; else (hf, [])."""
  model_type = hf.get("model_type")
  if model_type not in MULTIMODAL_TYPES:
    return hf, []
  text = hf.get("text_config")
  if not isinstance(text, Mapping):
    raise UnsupportedConfigError(
        f"HF config field text_config: a {model_type!r} config needs its text"
        f" model's config there, got {text!r}"
    )
  arch = MULTIMODAL_TYPES[model_type]
  archs = hf.get("architectures") or []
  if any(a != arch for a in archs):
    raise _unsupported("architectures", archs, f"expected [{arch!r}]")
  ignored = hf_guard.check_multimodal_fields(hf)
  text = dict(text)
  tie = hf.get("tie_word_embeddings")
  if tie is not None and bool(tie) != bool(text.get("tie_word_embeddings")):
    raise UnsupportedConfigError(
        f"HF config field tie_word_embeddings={tie!r} disagrees with"
        f" text_config.tie_word_embeddings={text.get('tie_word_embeddings')!r}"
    )
  text["architectures"] = [_ARCHITECTURES[_MODEL_TYPES[text.get("model_type")]]]
  return text, ignored


def _hybrid_from_hf(hf: Mapping[str, Any]) -> dict[str, Any]:
  """ModelConfig fields of a `qwen3_5_text` config.json (transformers' rule
  for a missing `layer_types`: every `full_attention_interval`-th layer is
  full attention)."""
  n = _required_int(hf, "num_hidden_layers")
  types = hf.get("layer_types")
  if types is None:
    every = hf.get("full_attention_interval", 4)
    types = [
        "linear_attention" if (i + 1) % every else "full_attention"
        for i in range(n)
    ]
  if not isinstance(types, list):
    raise UnsupportedConfigError(
        f"HF config field layer_types: expected a list, got {types!r}"
    )
  bad = sorted({str(t) for t in types if t not in LAYER_TYPES})
  if bad:
    raise _unsupported(
        "layer_types", bad, f"implemented layer types are {list(LAYER_TYPES)}"
    )
  return dict(
      layer_types=tuple(types),
      partial_rotary_factor=_partial_rotary(hf),
      linear_conv_kernel=_required_int(hf, "linear_conv_kernel_dim"),
      linear_num_key_heads=_required_int(hf, "linear_num_key_heads"),
      linear_num_value_heads=_required_int(hf, "linear_num_value_heads"),
      linear_key_head_dim=_required_int(hf, "linear_key_head_dim"),
      linear_value_head_dim=_required_int(hf, "linear_value_head_dim"),
  )


def _moe_from_hf(hf: Mapping[str, Any]) -> dict[str, Any]:
  """ModelConfig fields of a `qwen3_moe` config.json (as transformers reads
  them: `num_local_experts` is another name of `num_experts`)."""
  experts_field = "num_experts" if "num_experts" in hf else "num_local_experts"
  only = hf.get("mlp_only_layers") or []
  if not isinstance(only, list) or not all(
      isinstance(i, int) and not isinstance(i, bool) for i in only
  ):
    raise UnsupportedConfigError(
        "HF config field mlp_only_layers: expected a list of layer indices,"
        f" got {only!r}"
    )
  return dict(
      num_experts=_required_int(hf, experts_field),
      experts_per_token=_required_int(hf, "num_experts_per_tok"),
      moe_mlp_dim=_required_int(hf, "moe_intermediate_size"),
      norm_topk_prob=bool(hf.get("norm_topk_prob", False)),
      decoder_sparse_step=int(hf.get("decoder_sparse_step", 1)),
      mlp_only_layers=tuple(sorted(set(only))),
      router_aux_loss_coef=float(hf.get("router_aux_loss_coef", 0.001)),
  )


def from_hf_config(hf: Mapping[str, Any]) -> ModelConfig:
  """Builds a `ModelConfig` from a parsed HF `config.json`.

  Fields without effect on the forward pass are ignored with one warning
  that lists them (logged once per distinct list); see `check_hf_config`.

  Raises:
    UnsupportedConfigError: the architecture or any field asks for behaviour
      this implementation does not reproduce; the message names the field and
      its value.
  """
  config, ignored = check_hf_config(hf)
  # Fields our own export writes, at the values it writes (and its dtype
  # note), are understood: shipped and exported models warn of nothing.
  ours = to_hf_config(config)
  ignored = [
      f
      for f in ignored
      if not (f in ours and (f == "torch_dtype" or hf.get(f) == ours[f]))
  ]
  key = tuple(ignored)
  if ignored and key not in _WARNED:
    _WARNED.add(key)
    logging.warning(
        "HF config (%s): fields without effect here, ignored: %s",
        config.family,
        ", ".join(ignored),
    )
  return config


def to_hf_config(config: ModelConfig) -> dict[str, Any]:
  """The HF `config.json` dictionary (transformers 5.x layout) for `config`."""
  rope: dict[str, Any] = {
      "rope_type": "default",
      "rope_theta": config.rope_theta,
  }
  if config.rope_scaling is not None:
    rope = {
        "rope_type": "llama3",
        "rope_theta": config.rope_theta,
        **dataclasses.asdict(config.rope_scaling),
    }
  eos = list(config.eos_token_ids)
  if config.family == "qwen3_5":
    rope["partial_rotary_factor"] = config.partial_rotary_factor
  hf = {
      "architectures": [_ARCHITECTURES[config.family]],
      "model_type": _HF_MODEL_TYPES[config.family],
      "vocab_size": config.vocab_size,
      "hidden_size": config.embed_dim,
      "intermediate_size": config.mlp_dim,
      "num_hidden_layers": config.num_layers,
      "num_attention_heads": config.num_heads,
      "num_key_value_heads": config.num_kv_heads,
      "head_dim": config.head_dim,
      "hidden_act": "silu",
      "max_position_embeddings": config.max_position_embeddings,
      "rms_norm_eps": config.rms_norm_eps,
      "rope_parameters": rope,
      # transformers 4.x reads these two instead of rope_parameters.
      "rope_theta": config.rope_theta,
      "rope_scaling": None if config.rope_scaling is None else dict(rope),
      "tie_word_embeddings": config.tie_embeddings,
      "bos_token_id": config.bos_token_id,
      "eos_token_id": eos[0] if len(eos) == 1 else (eos or None),
      "pad_token_id": config.pad_token_id,
      "torch_dtype": "float32",
  }
  if config.family == "llama":
    hf.update(attention_bias=False, mlp_bias=False)
  elif config.family == "qwen3_5":
    hf.update(
        attention_bias=False,
        layer_types=list(config.layer_types),
        linear_conv_kernel_dim=config.linear_conv_kernel,
        linear_num_key_heads=config.linear_num_key_heads,
        linear_num_value_heads=config.linear_num_value_heads,
        linear_key_head_dim=config.linear_key_head_dim,
        linear_value_head_dim=config.linear_value_head_dim,
    )
    del hf["rope_theta"], hf["rope_scaling"]  # 5.x only reads rope_parameters
  else:
    hf.update(use_sliding_window=False, sliding_window=None)
    if config.family in ("qwen3", "qwen3_moe"):
      hf["attention_bias"] = False
  if config.family == "qwen3_moe":
    hf.update(
        num_experts=config.num_experts,
        num_experts_per_tok=config.experts_per_token,
        moe_intermediate_size=config.moe_mlp_dim,
        norm_topk_prob=config.norm_topk_prob,
        decoder_sparse_step=config.decoder_sparse_step,
        mlp_only_layers=list(config.mlp_only_layers),
        router_aux_loss_coef=config.router_aux_loss_coef,
        output_router_logits=False,
    )
  return hf
