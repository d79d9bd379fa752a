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
r"""Recipe: Qwen3.5-27B -> Qwen3.5-0.8B with TIP Soft-OR (rho 0.5), 4096 new tokens.

  python scripts/train.py --config=configs/recipe_qwen3p5_27b_to_0p8b_tip.py \
      --workdir=/ckpt/tip_qwen3p5 --config.student=/models/Qwen3.5-0.8B \
      --config.teacher=/models/Qwen3.5-27B --config.data.path=/data/math.jsonl

Settings of docs/methods.md §3 (TIP's base OPD repo): reverse KL, AdamW lr
1e-6, weight decay 0.1, clip 1.0, no warmup, sampling temperature 1, Soft-OR
with the 98th-percentile entropy clip, per-rollout floor(rho * L). Sized for
a pod slice: bf16 parameters, FSDP over all devices; every setting but the
two models is configs/recipe_qwen3_8b_to_1p7b_tip.py's (read from that file,
so the recipes cannot drift apart).

Both models are Qwen3.5 text models (hybrid: three Gated DeltaNet layers to
one gated full-attention layer; the checkpoints' vision towers and MTP heads
are not loaded). Issue 40 asked for a 2B student; the student here is the
0.8B because its config.json is the smallest published one we could read
(tests/models/fixtures/qwen3p5_0p8b.json) and no complete config of the 2B
was found (this machine cannot reach the hub), so a 2B preset would be a
guess. With the 2B's config.json in hand, `--config.student_preset` of a
preset built from it is the only change. The teacher's 54 GB of bfloat16
weights (26.9B parameters) alone ask for 4 devices of 16 GiB; the dry run
(`--dry_run`) prints the per-device memory of the step and the sampler
(BENCHMARKS.md, "Qwen3.5 27B -> 0.8B").
"""

import os

from opd_jax.trainer.config import config_file

_DENSE_RECIPE = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "recipe_qwen3_8b_to_1p7b_tip.py"
)


def get_config():
  c = config_file(_DENSE_RECIPE)
  c.student, c.student_preset = "/models/Qwen3.5-0.8B", "qwen3p5_0p8b"
  c.teacher, c.teacher_preset = "/models/Qwen3.5-27B", "qwen3p5_27b"
  return c
