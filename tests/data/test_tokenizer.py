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
"""Tests of the task tokenizer: offline loading, round trips, chat template."""

import json
import os

import pytest
import transformers

from opd_jax.data import arithmetic
from opd_jax.data import tokenizer as task_tokenizer


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
  return task_tokenizer.build_task_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def tok(tok_dir):
  return transformers.AutoTokenizer.from_pretrained(
      tok_dir, local_files_only=True
  )


@pytest.fixture(scope="module")
def examples():
  return [
      ex
      for d in (arithmetic.Difficulty.default(), arithmetic.Difficulty.hard())
      for split in arithmetic.SPLITS
      for ex in arithmetic.make_dataset(split, 40, difficulty=d)
  ]


def test_files_and_determinism(tok_dir, tmp_path):
  names = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}
  assert names <= set(os.listdir(tok_dir))
  other = task_tokenizer.build_task_tokenizer(tmp_path / "again")
  for name in names:
    with open(os.path.join(tok_dir, name), "rb") as f:
      first = f.read()
    with open(os.path.join(other, name), "rb") as f:
      assert f.read() == first, name


def test_special_ids(tok):
  assert tok.pad_token_id == 0
  assert (tok.bos_token_id, tok.eos_token_id) == (1, 2)
  assert tok.unk_token_id == 3
  ids = tok.convert_tokens_to_ids(["<system>", "<user>", "<assistant>"])
  assert ids == [4, 5, 6]
  assert len(tok) == len(task_tokenizer.task_vocabulary()) <= 128
  assert tok.padding_side == "left"


def test_round_trip_and_lengths(tok, examples):
  for ex in examples:
    for text in (ex.question, ex.rationale):
      ids = tok(text, add_special_tokens=False)["input_ids"]
      assert tok.unk_token_id not in ids, text
      assert tok.decode(ids) == text
  default = [ex for ex in examples[: 3 * 40]]
  q = max(len(tok(ex.question)["input_ids"]) for ex in default)
  r = max(len(tok(ex.rationale)["input_ids"]) for ex in default)
  assert q <= 40 and r <= 60, (q, r)


def test_digits_are_single_tokens(tok):
  pieces = tok.convert_ids_to_tokens(tok("12+305=317. #### 317")["input_ids"])
  assert pieces == list("12+305=317.") + [" ", "####", " ", "3", "1", "7"]


def test_chat_template(tok, examples):
  ex = examples[0]
  prompt = tok.apply_chat_template(
      [{"role": "user", "content": ex.question}],
      add_generation_prompt=True,
      tokenize=False,
  )
  assert prompt == f"<bos><user>{ex.question}<assistant>"
  convo = [
      {"role": "user", "content": ex.question},
      {"role": "assistant", "content": ex.rationale},
  ]
  full = tok.apply_chat_template(convo, tokenize=False)
  assert full == f"<bos><user>{ex.question}<assistant>{ex.rationale}<eos>"
  ids = tok(full, add_special_tokens=False)["input_ids"]
  assert ids[:2] == [tok.bos_token_id, 5] and ids[-1] == tok.eos_token_id
  assert tok.decode(ids, skip_special_tokens=True) == ex.question + ex.rationale
  prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
  assert ids[: len(prompt_ids)] == prompt_ids  # The prompt is a prefix.


def test_assistant_mask(tok, examples):
  ex = examples[1]
  out = tok.apply_chat_template(
      [
          {"role": "user", "content": ex.question},
          {"role": "assistant", "content": ex.rationale},
      ],
      return_assistant_tokens_mask=True,
      return_dict=True,
  )
  ids, mask = out["input_ids"], out["assistant_masks"]
  answer = [i for i, m in zip(ids, mask) if m]
  assert tok.decode(answer) == ex.rationale + "<eos>"


def test_unknown_words_map_to_unk(tok):
  ids = tok("Zed has 3 pears.", add_special_tokens=False)["input_ids"]
  assert ids.count(tok.unk_token_id) == 2


def test_unknown_words_are_named_whole(tok):
  # The words a prompt check names (scripts/sample.py, evaluate.py): whole
  # words around each <unk> piece, each once, in order.
  unknown = task_tokenizer.unknown_words
  assert unknown(tok, "Zed has 3 pears. Zed has 3 pears.") == ["Zed", "pears."]
  assert unknown(tok, "What is 2 + 3?") == ["What", "is"]
  assert unknown(tok, "Ann has 5 coins. How many coins does she have?") == []
  assert unknown(tok, "Ann has é5 coins") == ["é5"]

  class NoUnk:  # byte-level tokenizers (Qwen): nothing is unknown
    unk_token_id = None

  assert unknown(NoUnk(), "anything at all") == []


def _edited_copy(tok_dir, out, edit):
  """A copy of the task tokenizer with `edit(tokenizer_json)` applied."""
  os.makedirs(out)
  for name in os.listdir(tok_dir):
    with open(os.path.join(tok_dir, name)) as f:
      text = f.read()
    if name == "tokenizer.json":
      data = json.loads(text)
      edit(data)
      text = json.dumps(data)
    with open(os.path.join(out, name), "w") as f:
      f.write(text)
  return task_tokenizer.load_tokenizer(out)


def _swap(a, b):
  def edit(data):
    vocab = data["model"]["vocab"]
    vocab[a], vocab[b] = vocab[b], vocab[a]

  return edit


def test_same_vocabulary(tok, tok_dir, tmp_path):
  again = task_tokenizer.load_tokenizer(tok_dir)
  assert task_tokenizer.check_same_vocabulary(tok, again) == []
  swapped = _edited_copy(tok_dir, str(tmp_path / "swapped"), _swap("7", "8"))
  assert len(swapped) == len(tok)
  seven, eight = tok.convert_tokens_to_ids(["7", "8"])
  with pytest.raises(task_tokenizer.TokenizerMismatchError) as err:
    task_tokenizer.check_same_vocabulary(swapped, tok)
  assert (
      f"disagree on 2 of {len(tok)} ids (id {seven}: student '8' vs"
      f" teacher '7', id {eight}: student '7' vs teacher '8')"
      in str(err.value)
  )
  assert task_tokenizer.check_same_vocabulary(
      swapped, tok, allow_mismatch=True
  ) == [seven, eight]


def test_vocabulary_known_to_one_side_only(tok, tok_dir, tmp_path):
  def rename(data):
    vocab = data["model"]["vocab"]
    vocab["apples_renamed"] = vocab.pop(" apples")

  renamed = _edited_copy(tok_dir, str(tmp_path / "renamed"), rename)
  (i,) = tok.convert_tokens_to_ids([" apples"])
  with pytest.raises(
      task_tokenizer.TokenizerMismatchError,
      match=f"id {i}: student ' apples' vs teacher 'apples_renamed'",
  ):
    task_tokenizer.check_same_vocabulary(tok, renamed)


def test_many_differences_are_cut_short(tok, tok_dir, tmp_path):
  def shift(data):
    vocab = data["model"]["vocab"]
    for k in [k for k, v in vocab.items() if v >= 40]:
      vocab[k + "_x"] = vocab.pop(k)

  shifted = _edited_copy(tok_dir, str(tmp_path / "shifted"), shift)
  with pytest.raises(task_tokenizer.TokenizerMismatchError) as err:
    task_tokenizer.check_same_vocabulary(tok, shifted, max_listed=2)
  assert str(err.value).count(" vs teacher ") == 2
  assert ", ...)" in str(err.value)


def _checkpoint_without_tokenizer(path, family):
  os.makedirs(path)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump({"model_type": family, "vocab_size": 10}, f)
  return path


# (directory maker, message fragment).
BAD_TOKENIZER_DIRS = [
    # Would load as an empty Qwen2Tokenizer that encodes everything to [].
    (
        "qwen-checkpoint",
        lambda p: _checkpoint_without_tokenizer(p, "qwen3"),
        (
            "has no tokenizer files: expected tokenizer.json (or"
            " tokenizer.model, or vocab.json + merges.txt) with"
            " tokenizer_config.json; copy them from the model this checkpoint"
            " was made from (found: config.json)"
        ),
    ),
    (
        "llama-checkpoint",
        lambda p: _checkpoint_without_tokenizer(p, "llama"),
        "has no tokenizer files",
    ),
    ("missing", lambda p: p, "tokenizer directory '{path}' does not exist"),
]


@pytest.mark.parametrize(
    "case,make,match",
    BAD_TOKENIZER_DIRS,
    ids=[c[0] for c in BAD_TOKENIZER_DIRS],
)
def test_bad_tokenizer_directory(tmp_path, case, make, match):
  path = make(str(tmp_path / case))
  with pytest.raises(task_tokenizer.TokenizerError) as err:
    task_tokenizer.load_tokenizer(path, role="config.tokenizer")
  message = str(err.value)
  assert message.startswith("config.tokenizer: ")
  assert path in message and match.format(path=path) in message


def test_empty_vocabulary_is_refused(tok_dir, tmp_path):
  def empty(data):  # a BPE without unknown token drops unknown text
    data["model"] = {"type": "BPE", "vocab": {}, "merges": []}
    data["added_tokens"] = []

  with pytest.raises(
      task_tokenizer.TokenizerError, match="encodes text to no tokens"
  ):
    _edited_copy(tok_dir, str(tmp_path / "empty"), empty)
