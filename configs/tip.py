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
r"""TIP Soft-OR on-policy distillation (reverse KL on the top-50% tokens).

  python scripts/train.py --config=configs/tip.py --workdir=/tmp/tip \
      --config.student=/path/to/student_hf --config.teacher=/path/to/teacher_hf

Without checkpoint paths, `--dry_run` plans the run for a Qwen3-0.6B student
and a Qwen3-1.7B teacher. Other selectors: --config.tip.selector=entropy |
divergence | quadrant | bottom_soft_or | random | all.
"""

from opd_jax.trainer.config import default_config


def get_config():
  c = default_config()
  c.method = "tip"
  c.student_preset, c.teacher_preset = "qwen3_0p6b", "qwen3_1p7b"
  c.tip.selector = "soft_or"
  c.tip.rho = 0.5
  c.optimizer.learning_rate = 1e-6
  c.optimizer.weight_decay = 0.1
  return c
