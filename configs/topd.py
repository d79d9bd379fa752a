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
r"""TOPD: reverse-KL OPD with false-alarm suppression and near-future guidance.

  python scripts/train.py --config=configs/topd.py --workdir=/tmp/topd \
      --config.student=/path/to/student_hf --config.teacher=/path/to/teacher_hf

Defaults of docs/methods.md §5(d): candidates = top 20% of each rollout by
reverse KL (at most 8), 50-token teacher and student branches, entropic OT
(epsilon 0.05) over the student's input embeddings, high OT above the batch
0.8 quantile; false alarms masked (w_low = 0), forward KL along the
teacher's window (lambda_traj = 1). Ablations: NDS only
--config.topd.lambda_traj=0; trajectory only --config.topd.w_low=1; soft
suppression --config.topd.w_low=0.3; spread over the student's own window
--config.topd.traj_window=student.
"""

from opd_jax.trainer.config import default_config


def get_config():
  c = default_config()
  c.method = "topd"
  c.student_preset, c.teacher_preset = "qwen3_0p6b", "qwen3_1p7b"
  c.topd.rho_loss = 0.2
  c.topd.max_candidates = 8
  c.topd.window = 50
  c.optimizer.learning_rate = 1e-6
  return c
