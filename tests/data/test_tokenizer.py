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
