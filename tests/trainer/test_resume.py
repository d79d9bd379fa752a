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
"""SIGKILL at any point, rerun the same command: the same final student params."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

from opd_jax import testing

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
_CONFIG = os.path.join(os.path.dirname(__file__), "tiny_run_config.py")


def _train_cmd(pair_dir, workdir, method=""):
  arg = f"{pair_dir},{method}" if method else pair_dir
  return [
      sys.executable,
      os.path.join(_ROOT, "scripts", "train.py"),
      f"--config={_CONFIG}:{arg}",
      f"--workdir={workdir}",
  ]


def _export(workdir, out):
  subprocess.run(
      [
          sys.executable,
          os.path.join(_ROOT, "scripts", "export.py"),
          f"--workdir={workdir}",
          f"--out={out}",
      ],
      check=True,
      capture_output=True,
      timeout=300,
  )
  return load_file(os.path.join(out, "model.safetensors"))


def _steps_logged(workdir, since=0.0):
  """The last step in metrics.jsonl logged at or after time `since`."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return 0
  lines = []
  with open(path) as f:
    for line in f:
      try:
        lines.append(json.loads(line))
      except json.JSONDecodeError:  # the line being written
        break
  steps = [l.get("step", 0) for l in lines if l.get("time", 0) >= since]
  return max(steps, default=0)


def _run_and_kill(pair_dir, workdir, kill_after_step, extra_delay, method=""):
  start = time.time()  # a step this process logs, not an earlier run's
  proc = subprocess.Popen(
      _train_cmd(pair_dir, workdir, method),
      stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE,
  )
  deadline = start + 300
  while _steps_logged(workdir, since=start) < kill_after_step:
    assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
    assert time.time() < deadline, "training did not progress"
    time.sleep(0.02)
  time.sleep(extra_delay)
  proc.send_signal(signal.SIGKILL)
  proc.wait()


def _resume_and_compare(pair_dir, workdir, want, out, method=""):
  """Reruns the killed run's command: it resumes, and its export equals
  `want` (the straight run's) bit for bit."""
  resumed = subprocess.run(
      _train_cmd(pair_dir, workdir, method),
      capture_output=True,
      text=True,
      timeout=900,
  )
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resumed from" in resumed.stdout
  got = _export(workdir, out)
  assert sorted(got) == sorted(want)
  for name in want:
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)


@pytest.mark.slow
def test_sigkill_and_resume_give_the_straight_runs_params(tmp_path):
  # One test for both resume hazards, on TOPD because its pre-update stage
  # samples branches with per-step keys (the hardest state to restore): a
  # run killed twice and resumed must reproduce the straight run bit for
  # bit.
  pair_dir = str(tmp_path / "pair")
  testing.tiny_distillation_pair(pair_dir)
  straight = str(tmp_path / "straight")
  # The straight run also writes a token map at step 6 (with TOPD's stage
  # on its rollouts); the killed run does not: the page must not change
  # what is trained.
  subprocess.run(
      _train_cmd(pair_dir, straight, "topd") + ["--config.token_map_every=6"],
      check=True,
      capture_output=True,
      timeout=900,
  )
  page = os.path.join(straight, "plots", "token_map_000006.html")
  with open(page, encoding="utf-8") as f:
    assert '<option value="topd_false_alarm"' in f.read()
  want = _export(straight, str(tmp_path / "straight_hf"))
  with open(os.path.join(straight, "metrics.jsonl")) as f:
    logged = [json.loads(l) for l in f if '"loss/total"' in l]
  assert [m["step"] for m in logged] == [1, 2, 3, 4, 5, 6]
  assert all("loss/traj" in m and "topd/candidates" in m for m in logged)
  assert sum(m["topd/candidates"] for m in logged) > 0

  # One workdir killed twice, then run to the end: right as step 2 is
  # logged (its checkpoint may be half written, and then the rerun starts
  # over), and a moment after step 4 of the rerun (by then a checkpoint is
  # complete, so the last run resumes).
  workdir = str(tmp_path / "killed")
  _run_and_kill(pair_dir, workdir, 2, 0.0, "topd")
  _run_and_kill(pair_dir, workdir, 4, 0.3, "topd")
  _resume_and_compare(
      pair_dir, workdir, want, str(tmp_path / "killed_hf"), "topd"
  )
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    lines = [json.loads(l) for l in f]
  steps = [l["step"] for l in lines if "loss/total" in l]
  assert steps == [1, 2, 3, 4, 5, 6]  # no duplicates after the resumes
  assert sum("hparams" in l for l in lines) == 1
