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
`AutoTokenizer`.
"""

import os
import shutil

from absl import app, flags

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


def main(argv):
  del argv
  from opd_jax.models import save_hf  # pylint: disable=g-import-not-at-top
  from opd_jax.trainer import restore  # pylint: disable=g-import-not-at-top

  model, step, config = restore.restore_student(_WORKDIR.value)
  if os.path.exists(os.path.join(_OUT.value, "config.json")):
    raise app.UsageError(
        f"--out {_OUT.value} already holds a checkpoint;"
        " choose an empty directory"
    )
  save_hf(model, _OUT.value)
  source = config.tokenizer or config.student
  if source and os.path.isdir(source):
    for name in _TOKENIZER_FILES:
      if os.path.isfile(os.path.join(source, name)):
        shutil.copy(os.path.join(source, name), _OUT.value)
  print(f"exported step {step} of {_WORKDIR.value} to {_OUT.value}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir", "out"])
  app.run(main)
