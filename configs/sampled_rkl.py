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
r"""Thinking-Machines on-policy distillation: sampled-token reverse KL as a reward.

  python scripts/train.py --config=configs/sampled_rkl.py --workdir=/tmp/srkl \
      --config.student=/path/to/student_hf --config.teacher=/path/to/teacher_hf

Only log p(y) of the sampled tokens is needed from the teacher; the advantage
is -kl_penalty_coef * (log pS_old(y) - log pT(y)) (tinker-cookbook defaults).
"""

from opd_jax.trainer.config import default_config


def get_config():
  c = default_config()
  c.method = "sampled_rkl"
  c.student_preset, c.teacher_preset = "qwen3_0p6b", "qwen3_1p7b"
  c.sampled_rkl.kl_penalty_coef = 1.0
  c.sampled_rkl.kl_discount_factor = 0.0
  c.optimizer.learning_rate = 5e-5
  return c
