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
r"""GKD (Agarwal et al.): generalized JSD(beta) with on-policy fraction lambda.

  python scripts/train.py --config=configs/gkd.py --workdir=/tmp/gkd \
      --config.student=/path/to/student_hf --config.teacher=/path/to/teacher_hf

TRL's GKDConfig defaults: beta 0.5 (our `gkd.loss_pass.jsd_beta`), lambda
0.5 (the other steps train on the dataset's reference responses,
`data.response_field`), temperature 0.9 for sampling and loss
(`sampling.temperature`, `gkd.loss_pass.temperature`), 128 new tokens.
"""

from opd_jax.trainer.config import default_config


def get_config():
  c = default_config()
  c.method = "gkd"
  c.student_preset, c.teacher_preset = "qwen3_0p6b", "qwen3_1p7b"
  c.gkd.loss_pass.jsd_beta = 0.5
  c.gkd.loss_pass.temperature = 0.9
  c.lmbda = 0.5
  c.sampling.temperature = 0.9
  c.max_new_tokens = 128
  c.optimizer.learning_rate = 5e-6
  return c
