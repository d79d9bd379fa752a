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
"""A tiny training config for subprocess tests: `--config=this_file.py:PAIR_DIR`.

PAIR_DIR holds `student/`, `teacher/` from `testing.tiny_distillation_pair`;
`PAIR_DIR,METHOD` trains another method than TIP (TOPD with 8-token
branches).
"""

import os

from opd_jax import testing


def get_config(arg: str):
  pair_dir, _, method = arg.partition(",")
  paths = {
      role: os.path.join(pair_dir, role) for role in ("student", "teacher")
  }
  c = testing.tiny_train_config(
      paths, method=method or "tip", total_steps=6, checkpoint_every=1
  )
  c.async_checkpointing = True
  if method == "topd":
    c.topd.window = 8
  return c
