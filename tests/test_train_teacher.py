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
"""scripts/train_teacher.py's checkpoint directory: its own run's or refused.

(Resuming bit for bit is `tests/trainer/test_sft.py`'s; its bad flags are
in the catalogue of tests/test_script_bad_inputs.py.)
"""

import json
import os

import scripts_worker  # tests/, on the path beside conftest.py

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SCRIPT = os.path.join(_ROOT, "scripts", "train_teacher.py")
_TINY = [
    "--num_steps=2",
    "--num_examples=4",
    "--batch_size=4",
    "--num_layers=1",
    "--embed_dim=16",
    "--eval_examples=1",
    "--checkpoint_every=1",
]


def test_checkpoint_directory_is_the_runs_or_refused(tmp_path):
  tmp = str(tmp_path)
  other = os.path.join(tmp, "other.checkpoints")
  os.makedirs(other)
  with open(os.path.join(other, "settings.json"), "w") as f:
    json.dump({"num_steps": 7}, f)
  stray = os.path.join(tmp, "stray")
  os.makedirs(stray)
  with open(os.path.join(stray, "notes.txt"), "w") as f:
    f.write("mine")
  done = os.path.join(tmp, "done")
  r_other, r_stray, r_done, r_countdown = scripts_worker.run_in_forks(
      [
          [_SCRIPT, f"--out={tmp}/a", f"--checkpoint_dir={other}", *_TINY],
          [_SCRIPT, f"--out={tmp}/b", f"--checkpoint_dir={stray}", *_TINY],
          [_SCRIPT, f"--out={done}", *_TINY],
          [
              _SCRIPT,
              f"--out={tmp}/countdown",
              "--task=countdown",
              "--eval_every=2",
              *_TINY,
          ],
      ],
      tmp,
  )
  # A countdown teacher's evaluations say which skill of its search fails.
  assert r_countdown["rc"] == 0, r_countdown["stderr"][-2000:]
  for rate in ("arith_err", "target_err", "verdict_err", "repeats", "ended"):
    assert f"eval/{rate} " in r_countdown["stdout"], r_countdown["stdout"]
  assert r_other["rc"] == 2, r_other["stderr"][-2000:]
  assert (
      f"error: --checkpoint_dir: {other} holds a run with other settings"
      " (batch_size: None there, 4 now)"
  ) in r_other["stderr"]
  assert r_stray["rc"] == 2, r_stray["stderr"][-2000:]
  assert f"--checkpoint_dir: {stray} is not empty" in r_stray["stderr"]
  # Refused before anything was written; what was there is untouched.
  assert sorted(os.listdir(other)) == ["settings.json"]
  assert sorted(os.listdir(stray)) == ["notes.txt"]
  assert not os.path.exists(os.path.join(tmp, "a"))
  assert not os.path.exists(os.path.join(tmp, "b"))
  # A finished run leaves its model and no checkpoints behind.
  assert r_done["rc"] == 0, r_done["stderr"][-2000:]
  assert "model.safetensors" in os.listdir(done)
  assert not os.path.exists(done + ".checkpoints")
