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
r"""Cuts a student from its teacher: an HF directory with fewer layers.

  # keep the teacher's layers 0, 2 and 5
  python scripts/make_student.py --teacher=/models/SmolLM2-135M-Instruct \
      --keep_layers=0,2,5 --out=/models/student_3l
  # keep N evenly spaced layers, the first and the last included
  python scripts/make_student.py --teacher=DIR --num_layers=10 --out=DIR

--num_layers=N keeps layers round(i * (L - 1) / (N - 1)) for i = 0..N-1
(halves rounded up; e.g. 4 of 30 keeps 0, 10, 19, 29); N=1 keeps layer 0.
The embedding, final norm and head are the teacher's; tensors keep their
dtype. A Qwen3.5 layer keeps its type (a cut must keep a full-attention
layer), and the student is a text model: a multimodal teacher's vision
tower and an MTP head are not carried over. The tokenizer, chat template and generation config are copied, so
the directory loads with `transformers.AutoModelForCausalLM` /
`AutoTokenizer` and with `opd_jax.models.load_hf` (use it as
`--config.student`). student_layers.json records the layers kept.
"""

import os

from absl import flags

from opd_jax import cli
from opd_jax.cli import InputError

_TEACHER = flags.DEFINE_string("teacher", None, "Teacher HF directory.")
_KEEP = flags.DEFINE_string(
    "keep_layers", "", "Comma-separated teacher layer indices, e.g. 0,2,5."
)
_NUM = flags.DEFINE_integer(
    "num_layers", 0, "Keep this many evenly spaced layers (first and last)."
)
_OUT = flags.DEFINE_string("out", None, "New (or empty) output directory.")
_SHARD = flags.DEFINE_integer("max_shard_mb", 2048, "safetensors shard size.")


def _keep_layers(num_layers: int) -> tuple[int, ...]:
  """The layer indices from --keep_layers or --num_layers."""
  from opd_jax.models import cut  # pylint: disable=g-import-not-at-top

  if _NUM.present and _NUM.value < 1:
    raise InputError(
        f"--num_layers: expected an integer >= 1, got {_NUM.value}"
    )
  if bool(_KEEP.value) == bool(_NUM.value):
    raise InputError(
        "give exactly one of --keep_layers=0,2,5 and --num_layers=N"
    )
  if _NUM.value:
    return cut.evenly_spaced_layers(num_layers, _NUM.value)
  try:
    keep = [int(x) for x in _KEEP.value.split(",")]
  except ValueError:
    raise InputError(
        f"--keep_layers: expected comma-separated integers, got {_KEEP.value!r}"
    ) from None
  return cut.check_layers(keep, num_layers)


def _run() -> str:
  teacher, out = _TEACHER.value, _OUT.value
  if not teacher or not out:
    raise InputError("--teacher=DIR and --out=DIR are required")
  if not os.path.isdir(teacher):
    raise InputError(f"--teacher: {teacher} is not a directory")
  if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
    raise InputError(
        f"--out: {out} already exists and is not empty; choose a new path"
    )
  from opd_jax.data.tokenizer import VOCABULARY_FILES  # pylint: disable=g-import-not-at-top

  if not any(
      os.path.isfile(os.path.join(teacher, f)) for f in VOCABULARY_FILES
  ):
    raise InputError(
        f"--teacher: {teacher} has no tokenizer files (expected"
        " tokenizer.json or tokenizer.model); the student would have"
        " none"
    )
  from opd_jax.models import cut, hf_io  # pylint: disable=g-import-not-at-top

  config, _ = hf_io.read_hf_config(teacher)
  keep = _keep_layers(config.num_layers)
  cut.check_hybrid_cut(
      config, keep, "--keep_layers" if _KEEP.value else "--num_layers"
  )
  cut.cut_layers(teacher, out, keep, max_shard_bytes=_SHARD.value << 20)
  return (
      f"wrote {out}: {len(keep)} of the teacher's {config.num_layers}"
      f" layers ({', '.join(map(str, keep))})"
  )


def main(argv):
  print(_run())


if __name__ == "__main__":
  cli.run(main)
