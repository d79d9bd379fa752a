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
"""The benchmark package's PyTorch peer imports no JAX (it runs beside ours)."""

import json
import os
import subprocess
import sys

import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_peer_and_protocol_import_no_jax():
  code = (
      "import sys, benchmarks.peer, benchmarks.protocol;"
      " assert 'jax' not in sys.modules, 'jax imported';"
      " assert 'opd_jax' not in sys.modules, 'opd_jax imported'"
  )
  env = dict(os.environ, PYTHONPATH=_ROOT)
  subprocess.run([sys.executable, "-c", code], check=True, cwd=_ROOT, env=env)


@pytest.mark.slow
def test_step_bench_runs_through_the_trainer_plan():
  # A smoke run at tiny shapes: the bench builds its step from plan_run, as
  # the trainer does, and reports the compiled update's FLOPs.
  env = dict(os.environ, PYTHONPATH=_ROOT, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-m", "benchmarks", "step", "--quick"],
      cwd=_ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads(proc.stdout.strip().splitlines()[-1])
  assert report["benchmark"] == "step"
  assert report["rows"][0]["update_flops"] > 0
