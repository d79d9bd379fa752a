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
r"""Samples rollouts from a run's newest student for a file of prompts.

  python scripts/sample.py --workdir=/tmp/run --prompts=prompts.txt \
      [--max_new_tokens=128 --temperature=0.7 --num_samples=2]

`--prompts` is a text file with one question per line, or a jsonl file with
a `question` field (see --question_field). Each question is formatted with
the tokenizer's chat template. Prints one JSON line per sample.
"""

import json
import sys

from absl import app, flags

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir.")
_PROMPTS = flags.DEFINE_string("prompts", None, "Prompt file (.txt / .jsonl).")
_FIELD = flags.DEFINE_string("question_field", "question", "jsonl field.")
_MAX_NEW = flags.DEFINE_integer(
    "max_new_tokens", 0, "Response budget (0: the run's)."
)
_TEMPERATURE = flags.DEFINE_float("temperature", 0.0, "0 is greedy.")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "Nucleus sampling.")
_NUM = flags.DEFINE_integer("num_samples", 1, "Samples per prompt.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")


def _questions(path: str) -> list[str]:
  with open(path) as f:
    lines = [line.rstrip("\n") for line in f if line.strip()]
  if path.endswith(".jsonl"):
    out = []
    for i, line in enumerate(lines):
      row = json.loads(line)
      if _FIELD.value not in row:
        raise app.UsageError(
            f"{path}:{i + 1}: no field {_FIELD.value!r} (fields: {sorted(row)})"
        )
      out.append(str(row[_FIELD.value]))
    return out
  return lines


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  from opd_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from opd_jax.rollouts import Sampling, sample  # pylint: disable=g-import-not-at-top
  from opd_jax.trainer import builders, restore  # pylint: disable=g-import-not-at-top

  questions = _questions(_PROMPTS.value)
  if not questions:
    raise app.UsageError(f"{_PROMPTS.value} holds no prompts")
  model, step, c = restore.restore_student(_WORKDIR.value)
  tokenizer = builders.load_tokenizer(c)
  source = _ListSource(questions)
  data = data_lib.PromptDataset(
      source, tokenizer, max_prompt_len=c.max_prompt_len, overlong="truncate"
  )
  batch = data.batch(range(len(data)))
  eos = tuple(model.config.eos_token_ids) or (tokenizer.eos_token_id,)
  for j in range(_NUM.value):
    out = sample(
        model,
        batch["prompt"],
        batch["prompt_mask"],
        jax.random.fold_in(jax.random.PRNGKey(_SEED.value), j),
        max_new_tokens=_MAX_NEW.value or c.max_new_tokens,
        sampling=Sampling(temperature=_TEMPERATURE.value, top_p=_TOP_P.value),
        eos_ids=eos,
        pad_id=data.pad_id,
    )
    for q, ids, m in zip(
        batch["question"],
        jax.device_get(out.response),
        jax.device_get(out.response_mask),
    ):
      text = tokenizer.decode(ids[m].tolist(), skip_special_tokens=True)
      print(
          json.dumps(
              {"step": step, "sample": j, "question": q, "response": text}
          )
      )
  sys.stdout.flush()


class _ListSource:
  """Questions from a list, as a PromptSource."""

  def __init__(self, questions):
    from opd_jax import data as data_lib  # pylint: disable=g-import-not-at-top

    self._records = [data_lib.PromptRecord(q) for q in questions]
    self.name = "prompt file"

  def __len__(self):
    return len(self._records)

  def __getitem__(self, i):
    return self._records[i]


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir", "prompts"])
  app.run(main)
