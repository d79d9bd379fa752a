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
r"""Exports the newest student checkpoint of a run as a Hugging Face directory.

  python scripts/export.py --workdir=/tmp/run --out=/tmp/student_hf

The tokenizer files of the run's student (or `config.tokenizer`) are copied
along, so the result loads with `transformers.AutoModelForCausalLM` and
`AutoTokenizer`. The files are readable by everyone (mode 0644 under the
usual umask). Mistakes (a missing or foreign --workdir, an --out that is a
file or not empty) print one `error: ...` line and exit with code 2 before
anything is loaded.
"""

import os
import shutil

from absl import flags

from opd_jax import cli, script_flags
from opd_jax.cli import InputError
from opd_jax.trainer import workdir as workdir_lib

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir.")
_OUT = flags.DEFINE_string("out", None, "Output HF directory.")

_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "generation_config.json",
    "chat_template.jinja",
)


def _check_out(out: str) -> None:
  if not out:
    raise InputError("--out is required")
  if os.path.exists(out) and not os.path.isdir(out):
    raise InputError(f"--out: {out} is a file; choose a new directory")
  if os.path.isdir(out) and os.listdir(out):
    raise InputError(
        f"--out: {out} is not empty; choose a new or empty directory"
    )


def _readable(directory: str) -> None:
  """Gives the exported files the permissions of a plain new file."""
  umask = os.umask(0)
  os.umask(umask)
  for name in os.listdir(directory):
    path = os.path.join(directory, name)
    if os.path.isfile(path):
      os.chmod(path, 0o666 & ~umask)


def main(argv):
  workdir_lib.check_run_workdir(_WORKDIR.value)  # before the slow imports
  _check_out(_OUT.value)
  from opd_jax.models import save_hf  # pylint: disable=g-import-not-at-top

  loaded = script_flags.restore_workdir(_WORKDIR.value)
  save_hf(loaded.model, _OUT.value)
  source = loaded.tokenizer_dir  # the run's tokenizer, else its student
  if source and os.path.isdir(source):
    for name in _TOKENIZER_FILES:
      if os.path.isfile(os.path.join(source, name)):
        shutil.copy(os.path.join(source, name), _OUT.value)
  _readable(_OUT.value)
  print(f"exported step {loaded.step} of {_WORKDIR.value} to {_OUT.value}")


if __name__ == "__main__":
  cli.run(main)
