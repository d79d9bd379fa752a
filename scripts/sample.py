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
a `question` field (see --question_field). Each question is formatted as the
run formatted its prompts (the tokenizer's chat template, the run's system
prompt). Prints one JSON line per sample.

Sampling is greedy by default (--temperature=0); several samples of a
prompt need a temperature: greedy decoding would repeat one sample, so
--num_samples > 1 at temperature 0 is refused (as `transformers`' generate
refuses num_return_sequences > 1 without sampling). A prompt is never cut:
one longer than the model's positions leave beside --max_new_tokens, or
holding words the run's tokenizer cannot read (a word-level task tokenizer
reads them as <unk>), is refused with its line. Mistakes (a missing or
foreign --workdir, an unreadable prompt file, a flag out of range) print
one `error: ...` line and exit with code 2, the flags and the files before
anything is loaded.
"""

import json
import os
import sys

from absl import flags

from opd_jax import cli, script_flags
from opd_jax.cli import InputError
from opd_jax.trainer import workdir as workdir_lib

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir.")
_PROMPTS = flags.DEFINE_string("prompts", None, "Prompt file (.txt / .jsonl).")
_FIELD = flags.DEFINE_string("question_field", "question", "jsonl field.")
_MAX_NEW = flags.DEFINE_integer(
    "max_new_tokens", 0, "Response budget (0: the run's)."
)
_SAMPLING = script_flags.sampling_flags()
_NUM = flags.DEFINE_integer("num_samples", 1, "Samples per prompt.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")


# Files whose lines are not one question each.
_NOT_TEXT = (".json", ".parquet", ".csv", ".tsv", ".gz", ".arrow", ".zip")


def _questions(path: str) -> list[tuple[int, str]]:
  """The prompt file's (line number, question)s; InputError naming the line."""
  if not path:
    raise InputError("--prompts is required")
  if not os.path.isfile(path):
    raise InputError(
        f"--prompts: {path} "
        + ("is a directory" if os.path.isdir(path) else "does not exist")
    )
  ext = os.path.splitext(path)[1].lower()
  if ext in _NOT_TEXT:  # its lines are not questions
    raise InputError(
        f"--prompts: {path} is a {ext} file; expected a text file (one"
        " question per line) or a .jsonl file (one JSON object per line, the"
        " question in --question_field)"
    )
  try:
    with open(path, encoding="utf-8") as f:
      lines = [(i + 1, line.rstrip("\n")) for i, line in enumerate(f)]
  except UnicodeDecodeError:
    raise InputError(f"--prompts: {path} is not UTF-8 text") from None
  lines = [(n, line) for n, line in lines if line.strip()]
  if not lines:
    raise InputError(f"--prompts: {path} holds no prompts")
  if not path.endswith(".jsonl"):
    return lines
  out = []
  for n, line in lines:
    try:
      row = json.loads(line)
    except ValueError as e:
      raise InputError(
          f"--prompts: {path} line {n}: not valid JSON ({e})"
      ) from None
    if not isinstance(row, dict) or _FIELD.value not in row:
      fields = sorted(row) if isinstance(row, dict) else type(row).__name__
      raise InputError(
          f"--prompts: {path} line {n}: no field {_FIELD.value!r}"
          f" (--question_field; the line has {fields})"
      )
    question = row[_FIELD.value]
    if not isinstance(question, str):
      raise InputError(
          f"--prompts: {path} line {n}: field {_FIELD.value!r}: expected a"
          f" string, got {type(question).__name__}"
      )
    out.append((n, question))
  return out


def _check_flags() -> None:
  if _NUM.value < 1:
    raise InputError(
        f"--num_samples: expected an integer >= 1, got {_NUM.value}"
    )
  if _MAX_NEW.value < 0:
    raise InputError(
        "--max_new_tokens: expected >= 1 (or 0: the run's), got"
        f" {_MAX_NEW.value}"
    )
  script_flags.check_sampling(_SAMPLING)
  if _NUM.value > 1 and _SAMPLING.temperature.value == 0:
    raise InputError(
        f"--num_samples={_NUM.value}: greedy decoding (--temperature=0, the"
        f" default) gives {_NUM.value} identical samples; expected"
        " --temperature > 0 (e.g. --temperature=0.7) or --num_samples=1"
    )
  if _SEED.value < 0:
    raise InputError(f"--seed: expected an integer >= 0, got {_SEED.value}")


def _check_prompts(path, lines, ids, tokenizer, tok_dir, limit, max_new):
  """Refuses a prompt that would be cut or read as other words than written.

  Args:
    path: the prompt file.
    lines: its (line number, question)s.
    ids: each question's prompt ids (as the run formats them).
    tokenizer: the run's tokenizer.
    tok_dir: its directory, for the message.
    limit: the model's max_position_embeddings.
    max_new: the response budget.
  """
  room = limit - max_new
  over = [(n, len(row)) for (n, _), row in zip(lines, ids) if len(row) > room]
  if over:
    n, length = max(over, key=lambda x: x[1])
    raise InputError(
        f"--prompts: {path} line {n}: the prompt is {length} tokens; expected"
        f" at most {room} (the model's max_position_embeddings {limit} -"
        f" {max_new} new tokens, --max_new_tokens)"
        + (f"; {len(over)} prompts are longer" if len(over) > 1 else "")
    )
  from opd_jax.data import tokenizer as tokenizers  # pylint: disable=g-import-not-at-top

  unknown = [(n, tokenizers.unknown_words(tokenizer, q)) for n, q in lines]
  unknown = [(n, words) for n, words in unknown if words]
  if unknown:
    n, words = unknown[0]
    raise InputError(
        f"--prompts: {path} line {n}: the words {words[:8]} are not in the"
        f" vocabulary of the run's tokenizer {tok_dir} (it would read them as"
        " <unk>)"
        + (
            f"; {len(unknown)} lines have such words"
            if len(unknown) > 1
            else ""
        )
    )


def main(argv):
  # Flags and files first, in a second; then the slow imports.
  _check_flags()
  workdir_lib.check_run_workdir(_WORKDIR.value)
  lines = _questions(_PROMPTS.value)
  import jax  # pylint: disable=g-import-not-at-top
  from opd_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from opd_jax.data.templates import format_prompts  # pylint: disable=g-import-not-at-top
  from opd_jax.rollouts import default_eos_ids, Sampling, sample  # pylint: disable=g-import-not-at-top
  from opd_jax.trainer import builders, restore  # pylint: disable=g-import-not-at-top
  from transformers.utils import logging as hf_logging  # pylint: disable=g-import-not-at-top

  model, step, c = restore.restore_student(_WORKDIR.value)
  tokenizer = builders.load_tokenizer(c)
  chat = builders.chat_format(c)
  max_new = _MAX_NEW.value or c.max_new_tokens
  limit = model.config.max_position_embeddings
  if max_new >= limit:  # no room for any prompt
    script_flags.check_response_length(1, max_new, model.config)
  questions = [q for _, q in lines]
  # A prompt beyond the tokenizer's model_max_length is refused below, in
  # one line, not with transformers' warning.
  hf_logging.set_verbosity_error()
  ids = format_prompts(tokenizer, questions, **chat)
  _check_prompts(
      _PROMPTS.value,
      lines,
      ids,
      tokenizer,
      c.tokenizer or c.student,
      limit,
      max_new,
  )
  # Every prompt whole: the batch is as wide as the longest one.
  data = data_lib.PromptDataset(
      _ListSource(questions),
      tokenizer,
      max_prompt_len=max(len(row) for row in ids),
      **chat,
  )
  batch = data.batch(range(len(data)))
  eos = default_eos_ids(model.config, tokenizer)
  for j in range(_NUM.value):
    out = sample(
        model,
        batch["prompt"],
        batch["prompt_mask"],
        jax.random.fold_in(jax.random.PRNGKey(_SEED.value), j),
        max_new_tokens=max_new,
        sampling=Sampling(
            temperature=_SAMPLING.temperature.value,
            top_p=_SAMPLING.top_p.value,
        ),
        eos_ids=eos,
        pad_id=data.pad_id,
    )
    for q, row, m in zip(
        batch["question"],
        jax.device_get(out.response),
        jax.device_get(out.response_mask),
    ):
      text = tokenizer.decode(row[m].tolist(), skip_special_tokens=True)
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
  cli.run(main)
