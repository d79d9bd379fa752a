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
pod slice: bf16 parameters, FSDP over all devices; every setting but the
teacher is configs/recipe_qwen3_8b_to_1p7b_tip.py's (read from that file,
so the two recipes cannot drift apart). The teacher is a
mixture of experts (128 experts, 8 per token, 3.3B of 30.5B parameters
active): its experts are stored split over 'fsdp' and run where they are
stored (expert parallelism: each token block travels the 'fsdp' ring
beside its float32 output block, and each device adds its own experts'
part as it passes; `models.moe`). Its 61 GB of
bfloat16 weights alone ask for 4 devices of 16 GiB; the dry run
(`--dry_run`) prints the per-device memory of the step and the sampler.
"""

import os

from opd_jax.trainer.config import config_file

_DENSE_RECIPE = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "recipe_qwen3_8b_to_1p7b_tip.py"
)


def get_config():
  c = config_file(_DENSE_RECIPE)
  c.teacher, c.teacher_preset = "/models/Qwen3-30B-A3B", "qwen3_30b_a3b"
  return c
