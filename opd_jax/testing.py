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
"""Hermetic test fixtures: tiny model configs and fake meshes (no network)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from opd_jax import sharding
from opd_jax.models.config import Llama3RopeScaling, ModelConfig
from opd_jax.models.transformer import Transformer


def tiny_config(
    family: str = "qwen3",
    *,
    gqa: bool = True,
    tied: bool = False,
    llama3_rope: bool = False,
    vocab_size: int = 211,
    num_layers: int = 2,
) -> ModelConfig:
  """A 2-layer model of each family, small enough to compile in a second.

  Args:
    family: 'llama', 'qwen2' or 'qwen3' (q/k/v bias for qwen2, q/k norm for
      qwen3).
    gqa: 4 query heads over 2 KV heads; otherwise multi-head (4 over 4).
    tied: tie the head to the embedding.
    llama3_rope: Llama-3 RoPE scaling with a short original context, so the
      scaling changes the frequencies at short positions.
  """
  scaling = None
  if llama3_rope:
    scaling = Llama3RopeScaling(
        factor=8.0,
        low_freq_factor=1.0,
        high_freq_factor=4.0,
        original_max_position_embeddings=64,
    )
  return ModelConfig(
      family=family,
      vocab_size=vocab_size,
      embed_dim=48,
      num_layers=num_layers,
      num_heads=4,
      num_kv_heads=2 if gqa else 4,
      head_dim=16,
      mlp_dim=96,
      rms_norm_eps=1e-6,
      rope_theta=500_000.0 if llama3_rope else 10_000.0,
      rope_scaling=scaling,
      tie_embeddings=tied,
      qkv_bias=family == "qwen2",
      qk_norm=family == "qwen3",
      max_position_embeddings=512,
      bos_token_id=1,
      eos_token_ids=(2,),
      pad_token_id=0,
  )


def tiny_moe_config(
    *,
    num_experts: int = 8,
    top_k: int = 2,
    norm_topk_prob: bool = True,
    mlp_only_layers: tuple[int, ...] = (),
    decoder_sparse_step: int = 1,
    tied: bool = False,
    num_layers: int = 2,
    vocab_size: int = 211,
) -> ModelConfig:
  """A tiny Qwen3-MoE: `tiny_config('qwen3')`'s attention, E experts of
  width 24, top-k routing; dense layers (width 96) where HF's rule puts them
  (`mlp_only_layers`, `decoder_sparse_step`)."""
  return tiny_config(
      "qwen3", tied=tied, num_layers=num_layers, vocab_size=vocab_size
  ).replace(
      family="qwen3_moe",
      num_experts=num_experts,
      experts_per_token=top_k,
      moe_mlp_dim=24,
      norm_topk_prob=norm_topk_prob,
      mlp_only_layers=tuple(mlp_only_layers),
      decoder_sparse_step=decoder_sparse_step,
      router_aux_loss_coef=0.001,
  )


def tiny_qwen3_5_config(
    layer_types=("linear_attention", "linear_attention", "full_attention"),
    *,
    tied=False,
    chunk=64,
    vocab=101,
) -> ModelConfig:
  """A 3-layer Qwen3.5 text model: grouped value heads (2 key heads over 4
  value heads), grouped-query attention, partial RoPE (a quarter of 16)."""
  return ModelConfig(
      family="qwen3_5",
      vocab_size=vocab,
      embed_dim=32,
      num_layers=len(layer_types),
      num_heads=4,
      num_kv_heads=2,
      head_dim=16,
      mlp_dim=64,
      rms_norm_eps=1e-6,
      rope_theta=10_000.0,
      tie_embeddings=tied,
      qk_norm=True,
      max_position_embeddings=512,
      bos_token_id=1,
      eos_token_ids=(2,),
      pad_token_id=0,
      layer_types=tuple(layer_types),
      partial_rotary_factor=0.25,
      linear_conv_kernel=4,
      linear_num_key_heads=2,
      linear_num_value_heads=4,
      linear_key_head_dim=8,
      linear_value_head_dim=8,
      delta_chunk_size=chunk,
  )


def random_model(
    config: ModelConfig, seed: int = 0, dtype=jnp.float32
) -> Transformer:
  """A model with every parameter random, norms and biases included.

  HF initialises norms to one and biases to zero, which would hide a wrong
  mapping of those tensors; here they are perturbed too.
  """
  model = Transformer(config, dtype=dtype, rngs=nnx.Rngs(seed))
  state = nnx.state(model, nnx.Param)
  keys = iter(jax.random.split(jax.random.key(seed + 1), 64))

  def perturb(path, x):
    name = sharding.path_str(path)
    if name.endswith("scale"):
      return (1.0 + 0.1 * jax.random.normal(next(keys), x.shape)).astype(dtype)
    if name.endswith("bias"):
      return (0.1 * jax.random.normal(next(keys), x.shape)).astype(dtype)
    return x

  nnx.update(model, jax.tree_util.tree_map_with_path(perturb, state))
  return model


def tiny_distillation_pair(
    directory: str,
    *,
    vocab_size: int = 80,
    task: str = "arithmetic",
    moe: bool = False,
) -> dict:
  """Writes a tiny student and teacher HF checkpoint with the task tokenizer.

  Both directories hold config.json, model.safetensors and built-in task
  `task`'s tokenizer (so `AutoTokenizer` loads from either). `moe`: both
  are Qwen3-MoE (`tiny_moe_config`; the student's second layer dense).

  Returns:
    {'student': path, 'teacher': path, 'tokenizer': path}.
  """
  import os  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top

  from opd_jax.data import tokenizer as task_tokenizer  # pylint: disable=g-import-not-at-top
  from opd_jax.models import hf_io  # pylint: disable=g-import-not-at-top

  tok_dir = task_tokenizer.build_task_tokenizer(
      os.path.join(directory, "tokenizer"), task
  )
  tok = task_tokenizer.load_task_tokenizer(tok_dir)
  if len(tok) > vocab_size:
    raise ValueError(f"tokenizer has {len(tok)} ids > vocab_size {vocab_size}")
  special = dict(
      bos_token_id=tok.bos_token_id,
      eos_token_ids=(tok.eos_token_id,),
      pad_token_id=tok.pad_token_id,
  )
  student = tiny_config("qwen3", vocab_size=vocab_size).replace(**special)
  teacher = tiny_config("qwen3", vocab_size=vocab_size).replace(
      embed_dim=64, mlp_dim=128, **special
  )
  if moe:
    student = tiny_moe_config(
        vocab_size=vocab_size, mlp_only_layers=(1,)
    ).replace(**special)
    teacher = tiny_moe_config(
        vocab_size=vocab_size, num_experts=4, top_k=1
    ).replace(embed_dim=64, **special)
  paths = {"tokenizer": tok_dir}
  for role, config, seed in (("student", student, 0), ("teacher", teacher, 1)):
    path = os.path.join(directory, role)
    hf_io.save_hf(random_model(config, seed=seed), path)
    for name in os.listdir(tok_dir):
      shutil.copy(os.path.join(tok_dir, name), path)
    paths[role] = path
  return paths


def tiny_train_config(paths: dict, method: str = "tip", **overrides):
  """A trainer config for the pair of `tiny_distillation_pair`: a few steps.

  `overrides` set top-level fields; dotted names go through
  `ConfigDict.update_from_flattened_dict` (e.g. {'tip.rho': 0.2}).
  """
  from opd_jax.trainer.config import default_config  # pylint: disable=g-import-not-at-top

  c = default_config()
  c.student, c.teacher = paths["student"], paths["teacher"]
  c.method = method
  c.total_steps = 4
  c.batch_size = 4
  c.max_prompt_len = 40
  c.max_new_tokens = 12
  c.data.difficulty = "easy"
  c.data.num_examples = 64
  c.eval_every = 0
  c.eval_examples = 8
  c.checkpoint_every = 2
  c.async_checkpointing = False
  c.optimizer.learning_rate = 3e-3
  c.update_from_flattened_dict(dict(overrides))
  return c


# float32's unit roundoff u = eps / 2 = 2^-24: every rounded operation
# returns x (1 + d) with |d| <= u (no underflow).
UNIT_ROUNDOFF = float(np.finfo(np.float32).eps) / 2


def gamma(n: int) -> float:
  """Higham's gamma_n = n u / (1 - n u), float32 (u = 2^-24).

  (1 + d_1) ... (1 + d_n) with every |d_i| <= u lies within gamma_n of 1:
  the relative error of a value that went through n float32 roundings.
  """
  nu = n * UNIT_ROUNDOFF
  if nu >= 1:
    raise ValueError(f"gamma_{n}: n u >= 1, no bound")
  return nu / (1 - nu)


def summation_bound(a, b, *, evaluations: int = 2) -> np.ndarray:
  """Per entry, what float32 summation order can change in `a @ b`.

  A float32 inner product of K terms, summed in ANY order (left to right,
  pairwise, blocked over SIMD lanes, with or without FMA), is within
  gamma_K sum_k |a_k b_k| of the exact one (Higham, Accuracy and Stability
  of Numerical Algorithms, 2nd ed., §3.1, eq. (3.5) and the remark after
  it: each product goes through at most K roundings, one multiply and at
  most K - 1 additions on its path of the summation tree). So

  - `evaluations=1`: |fl(a @ b) - a @ b| <= gamma_K |a| @ |b|, a float32
    result against the exact (float64) product;
  - `evaluations=2` (default): two float32 evaluations in different orders
    (a kernel against XLA's dot, a fused loop against a matmul, chunked
    against whole) differ by at most 2 gamma_K |a| @ |b|, each being within
    the bound of the exact value.

  The bound is worst case: real errors are usually ~sqrt(K) smaller, but
  it is the only one that holds on every CPU and library whatever order
  it sums in. It scales with the magnitudes summed, not with the result,
  which is what fixed rtol / atol get wrong when terms cancel. It assumes
  the operands are exact in float32 (bfloat16 widens exactly) and no
  underflow; |a| @ |b| is computed in float64 (exact products, relative
  error ~K 1e-16, negligible).

  Args:
    a: [..., M, K] (or [K]).
    b: [..., K, N] (or [K]), broadcast like `np.matmul`.
    evaluations: 1 (against the exact product) or 2 (two float32 orders).

  Returns:
    float64 array of the shape of `a @ b`.
  """
  a = np.abs(np.asarray(a, np.float64))
  b = np.abs(np.asarray(b, np.float64))
  return evaluations * gamma(a.shape[-1]) * (a @ b)
