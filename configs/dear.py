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
r"""DEAR: distil on decision tokens (top-p entropy) and their evidence tokens.

  python scripts/train.py --config=configs/dear.py --workdir=/tmp/dear \
      --config.student=/path/to/student_hf --config.teacher=/path/to/teacher_hf

Defaults of docs/methods.md §4: p = q = 0.2 (about 36% of tokens kept),
evidence scored by max cosine to the anchors times (1 + normalised reverse
KL).
"""

from opd_jax.trainer.config import default_config


def get_config():
  c = default_config()
  c.method = "dear"
  c.student_preset, c.teacher_preset = "qwen3_1p7b", "qwen3_4b"
  c.dear.p = 0.2
  c.dear.q = 0.2
  c.optimizer.learning_rate = 1e-6
  return c
