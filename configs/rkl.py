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
r"""Full-vocabulary reverse-KL on-policy distillation on every response token.

  python scripts/train.py --config=configs/rkl.py --workdir=/tmp/rkl \
      --config.student=/path/to/student_hf --config.teacher=/path/to/teacher_hf
"""

from opd_jax.trainer.config import default_config


def get_config():
  c = default_config()
  c.method = "rkl"
  c.student_preset, c.teacher_preset = "qwen3_0p6b", "qwen3_1p7b"
  c.optimizer.learning_rate = 1e-6
  c.optimizer.weight_decay = 0.1
  return c
