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
"""The built-in tasks' HF tokenizers; checked loading and comparison of tokenizers."""

from __future__ import annotations

import json
import os
import re
import string

from opd_jax.data import arithmetic
from opd_jax.data import tasks

# Fixed ids: <pad> must be 0 (padding masks and embeddings assume it).
SPECIAL_TOKENS = (
    "<pad>",
    "<bos>",
    "<eos>",
    "<unk>",
    "<system>",
    "<user>",
    "<assistant>",
)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3

# Digits are single tokens so that a small model sees numbers digit by digit;
# task words carry their leading space (" apples"), so a question costs about
# one token per word. Anything else falls back to one token per character
# when it is in CHARS, or <unk>.
PRE_TOKENIZER_PATTERN = r"####| ?[A-Za-z]+|\d|\s|."
CHARS = tuple(string.digits) + tuple(" \n.,?!:;+-*/=()#$%<>'\"")
# Every built-in task ends its answer with this marker (one token).
MARKER = arithmetic.ANSWER_MARKER

# The assistant turn is wrapped in {% generation %} so that
# `return_assistant_tokens_mask=True` marks its tokens (and its <eos>).
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}<system>{{ message['content'] }}"
    "{% elif message['role'] == 'user' %}<user>{{ message['content'] }}"
    "{% elif message['role'] == 'assistant' %}<assistant>"
    "{% generation %}{{ message['content'] }}{{ eos_token }}"
    "{% endgeneration %}"
    "{% else %}{{ raise_exception('unknown role: ' + message['role']) }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def task_vocabulary(task: str = "arithmetic") -> list[str]:
  """Returns the ordered vocabulary: specials, characters, the task's words.

  Specials and characters come first, so every task's tokenizer gives a
  digit or an operator the same id; the words differ by task.
  """
  words = [w for w in tasks.get(task).vocabulary_pieces() if w not in CHARS]
  vocab = list(SPECIAL_TOKENS) + list(CHARS) + [MARKER] + words
  if len(set(vocab)) != len(vocab):
    raise ValueError(f"task_vocabulary: duplicate tokens in {vocab}")
  return vocab


def count_tokens(text: str) -> int:
  """How many tokens the task tokenizers split `text` into (no specials).

  The pre-tokenizer's pieces are the tokens (WordLevel maps each to one
  id), so this counts without building a tokenizer.
  """
  return len(re.findall(PRE_TOKENIZER_PATTERN, text))


def _backend_tokenizer(task: str):
  """Builds the `tokenizers.Tokenizer` (WordLevel over a regex split)."""
  # Imported here so `opd_jax.data` stays importable without `tokenizers`.
  from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

  vocab = {tok: i for i, tok in enumerate(task_vocabulary(task))}
  tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.Split(
      Regex(PRE_TOKENIZER_PATTERN), behavior="isolated"
  )
  # Pieces carry their own spaces, so decoding is plain concatenation.
  tok.decoder = decoders.Fuse()
  tok.add_special_tokens(list(SPECIAL_TOKENS))
  return tok


def tokenizer_config(task: str = "arithmetic") -> dict[str, object]:
  """Returns the tokenizer_config.json contents (chat template included)."""
  return {
      # PreTrainedTokenizerFast loads in both transformers 4.x and 5.x
      # (5.x maps it onto its TokenizersBackend).
      "tokenizer_class": "PreTrainedTokenizerFast",
      "bos_token": "<bos>",
      "eos_token": "<eos>",
      "pad_token": "<pad>",
      "unk_token": "<unk>",
      "additional_special_tokens": list(SPECIAL_TOKENS[4:]),
      "extra_special_tokens": list(SPECIAL_TOKENS[4:]),
      "chat_template": CHAT_TEMPLATE,
      "model_max_length": tasks.get(task).max_length,
      # Rollout prompts are left-padded ([B, P] with the prompt flush right).
      "padding_side": "left",
      "clean_up_tokenization_spaces": False,
  }


def build_task_tokenizer(
    out_dir: str | os.PathLike[str], task: str = "arithmetic"
) -> str:
  """Writes built-in task `task`'s tokenizer to `out_dir` in HF format.

  The directory holds tokenizer.json, tokenizer_config.json (with the chat
  template) and special_tokens_map.json, loadable offline with
  `transformers.AutoTokenizer.from_pretrained(out_dir)`. The files are
  written here rather than by `save_pretrained`, whose layout differs
  between transformers versions; the vocabulary is fixed by the generator's
  templates (no training), so building twice gives byte-identical files.

  Args:
    out_dir: directory to create (or overwrite the three files in).
    task: a `data.tasks` name; its words join the shared characters.

  Returns:
    `out_dir` as a string.
  """
  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  _backend_tokenizer(task).save(
      os.path.join(out_dir, "tokenizer.json"), pretty=True
  )
  config = tokenizer_config(task)
  special_map = {
      k: config[k]
      for k in (
          "bos_token",
          "eos_token",
          "pad_token",
          "unk_token",
          "additional_special_tokens",
      )
  }
  for name, payload in (
      ("tokenizer_config.json", config),
      ("special_tokens_map.json", special_map),
  ):
    with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
      json.dump(payload, f, indent=2, sort_keys=True)
      f.write("\n")
  return out_dir


def load_task_tokenizer(path: str | os.PathLike[str]):
  """Loads a tokenizer directory with `transformers.AutoTokenizer`."""
  return load_tokenizer(path)


# Any one of these holds a vocabulary `AutoTokenizer` can build from.
VOCABULARY_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "vocab.json",
    "tiktoken.model",
    "spiece.model",
    "vocab.txt",
)


class TokenizerError(ValueError):
  """A tokenizer directory is missing, incomplete or unusable."""


class TokenizerMismatchError(ValueError):
  """Two tokenizers map some ids to different strings."""


def load_tokenizer(path: str | os.PathLike[str], *, role: str | None = None):
  """Loads an HF tokenizer directory, refusing one without a vocabulary.

  `AutoTokenizer` on a checkpoint directory without tokenizer files can
  build an empty tokenizer from config.json alone (a Qwen2Tokenizer with
  one token), which then encodes every prompt to nothing; so the files are
  checked first and the result is checked to encode text.

  Args:
    path: a directory with tokenizer.json (or another vocabulary file).
    role: what the tokenizer is for (e.g. 'config.tokenizer'); prefixes
      error messages.

  Raises:
    TokenizerError: no such directory, no vocabulary file in it, or a
      tokenizer that encodes text to no tokens; the message names the
      directory and the files expected.
  """
  from transformers import AutoTokenizer  # slow import, only when loading

  path = os.fspath(path)
  where = f"{role}: " if role else ""
  if not os.path.isdir(path):
    raise TokenizerError(f"{where}tokenizer directory {path!r} does not exist")
  if not any(os.path.isfile(os.path.join(path, f)) for f in VOCABULARY_FILES):
    raise TokenizerError(
        f"{where}{path} has no tokenizer files: expected tokenizer.json (or"
        " tokenizer.model, or vocab.json + merges.txt) with"
        " tokenizer_config.json; copy them from the model this checkpoint"
        f" was made from (found: {_listing(path)})"
    )
  try:
    tokenizer = AutoTokenizer.from_pretrained(path)
  except (OSError, ValueError) as e:
    raise TokenizerError(
        f"{where}{path}: transformers cannot load its tokenizer: {e}"
    ) from None
  probe = tokenizer("12 apples + 3 = 15", add_special_tokens=False)
  if not probe["input_ids"]:
    raise TokenizerError(
        f"{where}{path}: the tokenizer encodes text to no tokens (vocabulary"
        f" of {len(tokenizer)}); its files are incomplete"
    )
  return tokenizer


def _listing(path: str, limit: int = 10) -> str:
  names = sorted(os.listdir(path))
  more = f", ... ({len(names)} files)" if len(names) > limit else ""
  return ", ".join(names[:limit]) + more if names else "nothing"


def _id_to_token(tokenizer) -> dict[int, str]:
  return {i: t for t, i in tokenizer.get_vocab().items()}


def check_same_vocabulary(
    student_tokenizer,
    teacher_tokenizer,
    *,
    allow_mismatch: bool = False,
    max_listed: int = 5,
) -> list[int]:
  """Compares two tokenizers id by id (added special tokens included).

  OPD scores the student's sampled ids with the teacher, so an id must mean
  the same string to both; equal vocabulary sizes do not show that.

  Args:
    student_tokenizer, teacher_tokenizer: HF tokenizers.
    allow_mismatch: return the differing ids instead of raising.
    max_listed: how many differing ids the message spells out.

  Returns:
    The sorted ids that differ (empty when the vocabularies agree): an id
    known to one tokenizer only, or mapped to different strings.

  Raises:
    TokenizerMismatchError: some ids differ and `allow_mismatch` is False;
      the message names the first ones with both strings.
  """
  student = _id_to_token(student_tokenizer)
  teacher = _id_to_token(teacher_tokenizer)
  differ = sorted(
      i for i in set(student) | set(teacher) if student.get(i) != teacher.get(i)
  )
  if differ and not allow_mismatch:
    shown = ", ".join(
        f"id {i}: student {student.get(i)!r} vs teacher {teacher.get(i)!r}"
        for i in differ[:max_listed]
    )
    raise TokenizerMismatchError(
        f"student and teacher tokenizers disagree on {len(differ)} of"
        f" {max(len(student), len(teacher))} ids ({shown}"
        f"{', ...' if len(differ) > max_listed else ''}); OPD scores the"
        " student's token ids with the teacher, so both must map every id"
        " to the same string (allow_mismatch=True to proceed anyway)"
    )
  return differ


def unknown_words(tokenizer, text: str) -> list[str]:
  """The words of `text` that `tokenizer` reads as its unknown token.

  A word-level tokenizer (the built-in tasks') maps a word outside its
  vocabulary to <unk>, so the model reads another prompt than the one
  written; byte-level tokenizers (Qwen, Llama) never produce it.

  Args:
    tokenizer: an HF tokenizer.
    text: a prompt's text.

  Returns:
    The whitespace-delimited words holding an unknown piece, in order, each
    once (empty when the tokenizer has no unknown token).
  """
  unk = getattr(tokenizer, "unk_token_id", None)
  if unk is None:
    return []
  try:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    spans = [
        span
        for i, span in zip(enc["input_ids"], enc["offset_mapping"])
        if i == unk
    ]
  except (NotImplementedError, ValueError, TypeError):  # a slow tokenizer
    if unk not in tokenizer(text, add_special_tokens=False)["input_ids"]:
      return []
    return list(
        dict.fromkeys(
            w
            for w in text.split()
            if all(
                unk in tokenizer(t, add_special_tokens=False)["input_ids"]
                for t in (w, " " + w)
            )
        )
    )
  words = []
  for start, end in spans:
    while start < end and text[start].isspace():  # " word" pieces
      start += 1
    while start > 0 and not text[start - 1].isspace():
      start -= 1
    while end < len(text) and not text[end].isspace():
      end += 1
    words.append(text[start:end] or text[start : start + 1])
  return list(dict.fromkeys(w for w in words if w))
