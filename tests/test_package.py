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
"""What importing opd_jax does to the process: transformers' torch notice."""

import os
import subprocess
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_NOTICE = "PyTorch was not found"

# Run as a torch-less machine would (the demo's runtime-only venv): with
# sys.modules["torch"] = None, transformers' find_spec sees no torch.
_NO_TORCH = 'import sys; sys.modules["torch"] = None\n'


def _output(code: str) -> str:
  proc = subprocess.run(
      [sys.executable, "-c", _NO_TORCH + code],
      cwd=_ROOT,
      env=dict(os.environ, JAX_PLATFORMS="cpu"),
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout + proc.stderr


def test_transformers_says_nothing_about_torch_to_our_users():
  # The control: without opd_jax, this process does print the notice.
  assert _NOTICE in _output("import transformers")
  # What every entry point does: the task tokenizer through transformers.
  out = _output(
      "from opd_jax.data import tokenizer\n"
      "tokenizer.load_task_tokenizer('assets/demo/teacher')\n"
      "from transformers.utils import logging\n"
      "logging.get_logger('transformers').warning('another warning')\n"
  )
  assert _NOTICE not in out, out
  assert "another warning" in out, out
