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

import os
import subprocess
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_peer_and_protocol_import_no_jax():
  code = ("import sys, benchmarks.peer, benchmarks.protocol;"
          " assert 'jax' not in sys.modules, 'jax imported';"
          " assert 'opd_jax' not in sys.modules, 'opd_jax imported'")
  env = dict(os.environ, PYTHONPATH=_ROOT)
  subprocess.run([sys.executable, "-c", code], check=True, cwd=_ROOT, env=env)
