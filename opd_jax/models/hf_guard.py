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
"""Judges every field of an HF config.json by its effect on the forward pass.

A field is either read into `ModelConfig`, or known never to change the
computation (bookkeeping, generation defaults, special token ids), or known
to change it only away from a neutral value (`rope_interleaved: false` is
harmless, `true` is not), or unknown. Harmless fields are collected so the
caller can log them once; a field that would make opd_jax compute something
other than `transformers` does raises `UnsupportedConfigError` with the
reason. The reference is what `transformers` 5.x itself does with the field:
a field that transformers' own Llama / Qwen2 / Qwen3 ignores is harmless.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping


class UnsupportedConfigError(ValueError):
  """An HF config asks for something this implementation does not do."""


# Fields `from_hf_config` reads (or checks) itself.
READ = frozenset({
    "model_type",
    "architectures",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "rms_norm_eps",
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
    "tie_word_embeddings",
    "max_position_embeddings",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
})

# Fields `from_hf_config` reads for a mixture of experts (`qwen3_moe`);
# `output_router_logits` only adds the router logits to transformers'
# outputs. For the other families these are unknown fields.
MOE_READ = frozenset({
    "num_experts",
    "num_local_experts",
    "num_experts_per_tok",
    "moe_intermediate_size",
    "norm_topk_prob",
    "decoder_sparse_step",
    "mlp_only_layers",
    "router_aux_loss_coef",
    "output_router_logits",
})

# Fields `from_hf_config` reads for the hybrid family (`qwen3_5`).
HYBRID_READ = frozenset({
    "layer_types",
    "full_attention_interval",
    "partial_rotary_factor",
    "linear_conv_kernel_dim",
    "linear_num_key_heads",
    "linear_num_value_heads",
    "linear_key_head_dim",
    "linear_value_head_dim",
})

# Fields of a published `qwen3_5_text` config that transformers' Qwen3.5
# text model never reads: field -> (harmless(value), what another value
# would ask for). transformers always gates the attention output, ignores
# the multi-token-prediction head (as opd_jax does) and keeps the recurrent
# state in float32 (as opd_jax does).
HYBRID_NEUTRAL: dict[str, tuple[Callable[[Any], bool], str]] = {
    "attn_output_gate": (
        lambda v: v is None or v is True,
        (
            "attention without the output gate (transformers' Qwen3.5 and"
            " opd_jax always gate)"
        ),
    ),
    "mtp_num_hidden_layers": (lambda v: True, ""),
    "mtp_use_dedicated_embeddings": (lambda v: True, ""),
    "mamba_ssm_dtype": (
        lambda v: v in (None, "float32"),
        "a recurrent state kept in another dtype than float32",
    ),
}

# Outer fields of a multimodal config (`qwen3_5`) whose text half we load:
# the vision tower's settings and the ids of its placeholder tokens, which a
# text-only forward never meets.
MULTIMODAL_OUTER = frozenset({
    "text_config",
    "vision_config",
    "image_token_id",
    "video_token_id",
    "vision_start_token_id",
    "vision_end_token_id",
    "tie_word_embeddings",
})

# Fields that never change the forward pass, whatever their value: HF
# bookkeeping, the generation defaults transformers 4.x wrote into every
# config, tokenizer hints, and markers of the tools that wrote the file.
METADATA = frozenset({
    "transformers_version",
    "torch_dtype",
    "dtype",
    "use_cache",
    "initializer_range",
    "output_hidden_states",
    "output_attentions",
    "return_dict",
    "return_dict_in_generate",
    "output_scores",
    "chunk_size_feed_forward",
    "id2label",
    "label2id",
    "problem_type",
    "tokenizer_class",
    "model_name",
    "prefix",
    "task_specific_params",
    "finetuning_task",
    "torchscript",
    "use_bfloat16",
    "tf_legacy_loss",
    "pruned_heads",
    "is_decoder",
    "cross_attention_hidden_size",
    "max_length",
    "min_length",
    "do_sample",
    "early_stopping",
    "num_beams",
    "num_beam_groups",
    "diversity_penalty",
    "temperature",
    "top_k",
    "top_p",
    "typical_p",
    "repetition_penalty",
    "length_penalty",
    "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size",
    "bad_words_ids",
    "num_return_sequences",
    "remove_invalid_values",
    "exponential_decay_length_penalty",
    "suppress_tokens",
    "begin_suppress_tokens",
    "rope_type",
    # SmolLM2 / nanotron exports; transformers.js settings.
    "is_llama_config",
    "transformers.js_config",
    # Only read by training-time code paths opd_jax does not have.
    "gradient_checkpointing",
    "neftune_noise_alpha",
})


def _is_metadata(field: str) -> bool:
  # `_name_or_path`, `_model_name_or_path` (GGUF), `_commit_hash`,
  # `_attn_implementation`...: HF's private bookkeeping; and every special
  # token id (`unk_token_id`, `sep_token_id`, ...), which only tokenizers
  # and generation read.
  return (
      field in METADATA or field.startswith("_") or field.endswith("_token_id")
  )


def _falsy(v: Any) -> bool:
  return not v


def _one(v: Any) -> bool:
  return v is None or v == 1


# Field -> (harmless(value), what a non-harmless value would ask for).
_NEUTRAL: dict[str, tuple[Callable[[Any], bool], str]] = {
    "rope_interleaved": (
        _falsy,
        (
            "interleaved (GPT-J style) RoPE pairs; opd_jax and"
            " transformers' Llama rotate the two halves of each head"
        ),
    ),
    "mlp_bias": (_falsy, "biases in the MLP projections"),
    "quantization_config": (_falsy, "quantized weights"),
    "use_mrope": (_falsy, "multimodal (3-D) RoPE"),
    "partial_rotary_factor": (_one, "RoPE on part of each head"),
    "embedding_multiplier": (_one, "a scaled embedding (Granite)"),
    "residual_multiplier": (_one, "scaled residual branches (Granite)"),
    "attention_multiplier": (_falsy, "a custom attention scale (Granite)"),
    "logits_scaling": (_one, "scaled logits (Granite)"),
    "attn_logit_softcapping": (_falsy, "attention logit soft-capping"),
    "final_logit_softcapping": (_falsy, "final logit soft-capping"),
    "is_encoder_decoder": (_falsy, "an encoder-decoder model"),
    "shared_expert_intermediate_size": (
        _falsy,
        "a shared expert beside the routed ones (Qwen2-MoE)",
    ),
    "n_shared_experts": (_falsy, "shared experts beside the routed ones"),
    "num_shared_experts": (_falsy, "shared experts beside the routed ones"),
    "topk_method": (
        lambda v: v in (None, "greedy"),
        "routing other than a plain top-k of the softmax",
    ),
    "scoring_func": (
        lambda v: v in (None, "softmax"),
        "router scores other than a softmax",
    ),
    "routed_scaling_factor": (_one, "scaled routing weights"),
    "n_group": (_one, "grouped (node-limited) expert routing"),
    "add_cross_attention": (_falsy, "cross-attention layers"),
    "tie_encoder_decoder": (_falsy, "an encoder-decoder model"),
}

# Fields harmless for opd_jax's computation but worth a note when set.
_NOTED: dict[str, tuple[Callable[[Any], bool], str]] = {
    "attention_dropout": (
        _falsy,
        (
            "not applied: opd_jax never uses dropout (transformers"
            " applies it in training mode only)"
        ),
    ),
    "pretraining_tp": (
        _one,
        (
            "sliced matmuls during pretraining compute the same function;"
            " transformers 5 ignores it too"
        ),
    ),
}

_SLIDING_FIELDS = (
    "use_sliding_window",
    "sliding_window",
    "max_window_layers",
    "layer_types",
)
# transformers' default `max_window_layers` for Qwen2 / Qwen3 configs.
_DEFAULT_MAX_WINDOW_LAYERS = 28


def unsupported(field: str, value: Any, why: str) -> UnsupportedConfigError:
  return UnsupportedConfigError(
      f"HF config field {field}={value!r} is not supported: {why}"
  )


def _attention_bias(hf: Mapping[str, Any], family: str) -> list[str]:
  value = hf["attention_bias"]
  if family == "qwen2":
    # transformers' Qwen2 always has q/k/v biases and never reads the field.
    return ["attention_bias"]
  if value:
    raise unsupported(
        "attention_bias",
        value,
        f"biases on q/k/v/o in {family} attention (transformers adds one to"
        " o_proj too)",
    )
  return ["attention_bias"]


def _sliding_window(hf: Mapping[str, Any], family: str) -> list[str]:
  """Refuses an active sliding window; returns the inert fields."""
  present = [f for f in _SLIDING_FIELDS if f in hf]
  if family == "qwen3_5":
    # transformers' Qwen3.5 has no sliding window; layer_types is read.
    return [f for f in present if f != "layer_types"]
  if family == "llama":
    # transformers' Llama has no sliding window: the fields are inert.
    return present
  n = int(hf.get("num_hidden_layers") or 0)
  types = hf.get("layer_types")
  if types is not None:
    other = sorted(
        {t for t in types if t not in ("full_attention", "sliding_attention")}
    )
    if other:
      raise unsupported(
          "layer_types",
          other,
          "only 'full_attention' (or inactive sliding) layers",
      )
  window = hf.get("sliding_window") if hf.get("use_sliding_window") else None
  if window is None:
    return present  # as transformers: no window unless use_sliding_window
  if types is None:
    first = hf.get("max_window_layers", _DEFAULT_MAX_WINDOW_LAYERS)
    types = [
        "sliding_attention" if i >= first else "full_attention"
        for i in range(n)
    ]
  sliding = [i for i, t in enumerate(types) if t == "sliding_attention"]
  # A window at least as long as any position never masks anything.
  if sliding and int(window) < int(hf.get("max_position_embeddings", 0)):
    raise unsupported(
        "use_sliding_window",
        True,
        f"a sliding window of {window} tokens on layers {sliding[0]}.."
        f"{sliding[-1]}; opd_jax attends to the whole context",
    )
  return present


def check_fields(hf: Mapping[str, Any], family: str) -> list[str]:
  """Checks every field of `hf`; returns the ones ignored, as `name=value`.

  Raises:
    UnsupportedConfigError: a field asks for a computation opd_jax does not
      reproduce (the message names the field, its value and why), or is
      unknown and set to a non-neutral value.
  """
  ignored: list[str] = []
  act = hf.get("hidden_act", "silu")
  if act not in ("silu", "swish"):  # transformers: both are nn.SiLU
    raise unsupported("hidden_act", act, "only SiLU-gated (SwiGLU) MLPs")
  handled = set(READ) | set(_SLIDING_FIELDS) | {"attention_bias", "hidden_act"}
  neutral = _NEUTRAL
  if family == "qwen3_moe":
    handled |= MOE_READ
  if family == "qwen3_5":
    handled |= HYBRID_READ
    neutral = {**_NEUTRAL, **HYBRID_NEUTRAL}
  for field in sorted(hf):
    value = hf[field]
    if field in handled:
      continue
    if _is_metadata(field):
      ignored.append(field)
    elif field in neutral:
      ok, why = neutral[field]
      if not ok(value):
        raise unsupported(field, value, why)
      ignored.append(field)
    elif field in _NOTED:
      ok, why = _NOTED[field]
      ignored.append(field if ok(value) else f"{field}={value!r} ({why})")
    elif value in (None, False, 0, "", [], {}):
      ignored.append(field)  # unknown, but at its neutral value
    else:
      raise UnsupportedConfigError(
          f"HF config field {field}={value!r} is unknown to opd_jax's"
          f" {family} implementation, so it cannot tell whether it changes"
          " the computation; remove it from config.json if transformers"
          " ignores it"
      )
  if "attention_bias" in hf:
    ignored += _attention_bias(hf, family)
  ignored += _sliding_window(hf, family)
  return sorted(ignored)


def check_multimodal_fields(hf: Mapping[str, Any]) -> list[str]:
  """The outer fields of a multimodal config whose text half is loaded:
  returns those ignored; raises on any other field not neutral."""
  ignored = []
  for field in sorted(hf):
    if field in ("model_type", "architectures") or field in MULTIMODAL_OUTER:
      continue
    if _is_metadata(field) or hf[field] in (None, False, 0, "", [], {}):
      ignored.append(field)
    else:
      raise UnsupportedConfigError(
          f"HF config field {field}={hf[field]!r} (outside text_config) is"
          " unknown to opd_jax, so it cannot tell whether it changes the"
          " text model's computation"
      )
  return ignored
