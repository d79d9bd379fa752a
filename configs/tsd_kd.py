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
r"""TSD-KD (Kim & Baek): gated JSD + opener Plackett-Luce ranking + entropy minimisation.

  python scripts/train.py --config=configs/tsd_kd.py --workdir=/tmp/tsd \
      --config.student=/path/to/student_hf --config.teacher=/path/to/teacher_hf

Defaults of docs/methods.md §2: beta 0.9, alpha 0.1, opener fraction c = 0.1,
k = 10 candidates, EM on the top 10% entropy tokens, fully on-policy.
That is the paper's reading. The released code's reading
(`opd_jax.methods.tsd_kd.CODE_FAITHFUL`): EM on every token at or above
the 10% entropy quantile of its micro-batch, its reversed Plackett-Luce
order, one opener prefix per micro-batch of 4 rows:

  --config.tsd_kd.em_rule=quantile --config.tsd_kd.em_ratio=0.9 \
  --config.tsd_kd.em_group_rows=4 --config.tsd_kd.pl_code_compat=True \
  --config.tsd_kd.opener_group_rows=4

`--config.tsd_kd.em_weight` scales the EM term (1 in both readings).
"""

from opd_jax.trainer.config import default_config


def get_config():
  c = default_config()
  c.method = "tsd_kd"
  c.student_preset, c.teacher_preset = "qwen3_0p6b", "qwen3_1p7b"
  c.tsd_kd.beta = 0.9
  c.tsd_kd.alpha = 0.1
  c.tsd_kd.opener_threshold = 0.1
  c.tsd_kd.top_k = 10
  c.tsd_kd.em_ratio = 0.1
  c.max_new_tokens = 128
  c.optimizer.learning_rate = 5e-6
  return c
