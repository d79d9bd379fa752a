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
r"""MiniLLM-style reverse-KL policy gradient (single-step + long-horizon terms).

  python scripts/train.py --config=configs/minillm.py --workdir=/tmp/minillm \
      --config.student=/path/to/student_hf --config.teacher=/path/to/teacher_hf

Rollouts come from the student; `--config.rollout_source=mixture
--config.mixture_alpha=0.2 --config.minillm.use_sampler_logprobs=False`
samples from the teacher-student mixture instead.
"""

from opd_jax.trainer.config import default_config


def get_config():
  c = default_config()
  c.method = "minillm"
  c.student_preset, c.teacher_preset = "qwen3_0p6b", "qwen3_1p7b"
  c.optimizer.learning_rate = 5e-6
  return c
