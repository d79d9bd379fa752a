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
r"""Recipe: Qwen3-30B-A3B (MoE) -> Qwen3-1.7B with TIP Soft-OR (rho 0.5), 4096 new tokens.

  python scripts/train.py --config=configs/recipe_qwen3_30b_a3b_to_1p7b_tip.py \
      --workdir=/ckpt/tip_qwen3_moe --config.student=/models/Qwen3-1.7B \
      --config.teacher=/models/Qwen3-30B-A3B --config.data.path=/data/math.jsonl

Settings of docs/methods.md §3 (TIP's base OPD repo): reverse KL, AdamW lr
1e-6, weight decay 0.1, clip 1.0, no warmup, sampling temperature 1, Soft-OR with
the 98th-percentile entropy clip, per-rollout floor(rho * L). Sized for a
pod slice: bf16 parameters, FSDP over all devices. The teacher is a
mixture of experts (128 experts, 8 per token, 3.3B of 30.5B parameters
active): its experts are stored split over 'fsdp' and gathered a layer at a
time, and each device routes its own rows (`models.moe`). Its 61 GB of
bfloat16 weights alone ask for 4 devices of 16 GiB; the dry run
(`--dry_run`) prints the per-device memory of the step and the sampler.
"""

from opd_jax.trainer.config import default_config


def get_config():
  c = default_config()
  c.method = "tip"
  c.student, c.teacher = "/models/Qwen3-1.7B", "/models/Qwen3-30B-A3B"
  c.student_preset, c.teacher_preset = "qwen3_1p7b", "qwen3_30b_a3b"
  c.dtype = "bfloat16"
  c.tip.selector = "soft_or"
  c.tip.rho = 0.5
  c.tip.clip_quantile = 0.98
  c.tip.score_divergence = "reverse_kl"
  c.batch_size = 64
  c.max_prompt_len = 1024
  c.max_new_tokens = 4096
  c.total_steps = 1000
  c.sampling.temperature = 1.0
  c.optimizer.learning_rate = 1e-6
  c.optimizer.weight_decay = 0.1
  c.optimizer.clip_norm = 1.0
  c.optimizer.warmup_steps = 0
  c.data.source = "file"
  c.data.path = "/data/math_train.jsonl"
  c.data.eval_path = "/data/math500.jsonl"
  c.data.question_field = "problem"
  c.data.answer_field = "answer"
  c.checkpoint_every = 50
  c.eval_every = 100
  c.eval_examples = 500
  c.mesh.update(dict(data=1, fsdp=-1, tensor=1))
  # The trunks over 8 groups of rows (one row per device per group on 8
  # devices at batch 64; `--dry_run` prints the memory this saves).
  c.micro_batches = 8
  return c
