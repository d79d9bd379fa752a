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
"""cli.keep_freed_host_memory: a step's freed buffers are reused, not
faulted in again (each case in its own process: the setting is global)."""

import os
import subprocess
import sys

import pytest

# A jitted step with a 128 MB temporary (the [8192, 4096] product), run until
# warm; prints whether the settings took and the page faults of one more run.
_PROBE = r"""
import resource, sys
from opd_jax import cli
took = cli.keep_freed_host_memory()
import jax, jax.numpy as jnp

step = jax.jit(lambda a, b: ((a @ b) @ b.T).sum())
a = jnp.ones((8192, 8), jnp.float32)
for _ in range(3):
  step(a, a[:4096].T).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
step(a, a[:4096].T).block_until_ready()
print(took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(keep: str) -> tuple[bool, int]:
  env = dict(os.environ, OPD_JAX_KEEP_HOST_MEMORY=keep, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-c", _PROBE],
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  took, faults = proc.stdout.split()
  return took == "True", int(faults)


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="glibc's mallopt"
)
def test_freed_step_memory_is_reused_not_faulted_in_again():
  took, kept = _faults("1")
  assert took
  skipped, default = _faults("0")
  assert not skipped
  # 128 MB of fresh pages is 32768 faults of 4 KB; reused memory needs none.
  assert default > 20000, default
  assert kept < 1000, kept
