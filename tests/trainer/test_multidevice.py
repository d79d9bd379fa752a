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
"""The training step on 8 fake devices and across 2 local processes (subprocesses)."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from opd_jax import testing

_WORKER = os.path.join(os.path.dirname(__file__), "multidevice_worker.py")


@pytest.fixture(scope="module")
def pair_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("pair"))
  testing.tiny_distillation_pair(path)
  return path


def _env():
  return dict(os.environ)  # the workers add their fake devices to XLA_FLAGS


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_step_on_8_devices_equals_one_device(pair_dir):
  proc = subprocess.run(
      [sys.executable, _WORKER, "mesh8", pair_dir],
      env=_env(),
      capture_output=True,
      text=True,
      timeout=900,
  )
  print(proc.stdout)
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert proc.stdout.strip().endswith("OK")


@pytest.mark.slow
def test_two_processes_train_like_one(pair_dir, tmp_path):
  port = _free_port()
  two = str(tmp_path / "two.npz")
  procs = [
      subprocess.Popen(
          [
              sys.executable,
              _WORKER,
              "train",
              pair_dir,
              str(tmp_path / "w2"),
              two,
              "2",
              str(pid),
              str(port),
          ],
          env=_env(),
          stdout=subprocess.PIPE,
          stderr=subprocess.PIPE,
          text=True,
      )
      for pid in (0, 1)
  ]
  outs = [p.communicate(timeout=900) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-4000:]
    assert out.strip().endswith("OK")
  one = str(tmp_path / "one.npz")
  proc = subprocess.run(
      [
          sys.executable,
          _WORKER,
          "train",
          pair_dir,
          str(tmp_path / "w1"),
          one,
          "1",
          "0",
          "0",
      ],
      env=_env(),
      capture_output=True,
      text=True,
      timeout=900,
  )
  assert proc.returncode == 0, proc.stderr[-4000:]
  a, b = np.load(one), np.load(two)
  assert sorted(a) == sorted(b)
  # gloo's cross-process all-reduce sums in another order than XLA's
  # in-process one; measured max difference 2.6e-7 after 3 steps.
  for name in a:
    np.testing.assert_allclose(b[name], a[name], atol=1e-5, err_msg=name)
