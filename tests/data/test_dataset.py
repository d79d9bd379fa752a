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
"""Tests of prompt sources, tokenization and the resumable batch iterator."""

import json

import datasets
import numpy as np
import pytest
import tokenizers
import transformers

from opd_jax.data import arithmetic
from opd_jax import data as data_lib
from opd_jax.data import tokenizer as task_tokenizer

P, T = 48, 40


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
  path = task_tokenizer.build_task_tokenizer(tmp_path_factory.mktemp("tok"))
  return task_tokenizer.load_task_tokenizer(path)


@pytest.fixture(scope="module")
def train_set(tok):
  source = data_lib.TaskSource("train", 10)
  return data_lib.PromptDataset(source, tok, max_prompt_len=P, max_new_tokens=T)


def _word_tokenizer(*, bos_processor, chat_template):
  """A whitespace word tokenizer; optionally its post-processor adds <s>."""
  specials = ["<pad>", "<s>", "</s>", "<unk>"]
  words = ["hi", "there", "USER:", "ASSISTANT:", "a", "b", "c", "d"]
  vocab = {w: i for i, w in enumerate(specials + words)}
  backend = tokenizers.Tokenizer(
      tokenizers.models.WordLevel(vocab=vocab, unk_token="<unk>")
  )
  backend.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
  backend.add_special_tokens(specials)
  if bos_processor:
    backend.post_processor = tokenizers.processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", 1)]
    )
  tok = transformers.PreTrainedTokenizerFast(
      tokenizer_object=backend,
      bos_token="<s>",
      eos_token="</s>",
      pad_token="<pad>",
      unk_token="<unk>",
  )
  tok.chat_template = chat_template
  return tok


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), key)


def test_arithmetic_source_records():
  source = data_lib.TaskSource("validation", 3, start=5)
  ex = arithmetic.make_example("validation", 6)
  assert len(source) == 3
  assert source[1] == data_lib.PromptRecord(
      ex.question, str(ex.answer), ex.rationale
  )
  with pytest.raises(ValueError, match="split"):
    data_lib.TaskSource("dev", 3)


def test_chat_template_and_left_padding(tok, train_set):
  batch = train_set.batch([0, 1])
  assert batch["prompt"].shape == (2, P) and batch["prompt"].dtype == np.int32
  for j in range(2):
    expected = tok.apply_chat_template(
        [{"role": "user", "content": batch["question"][j]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    ids = tok(expected, add_special_tokens=False)["input_ids"]
    n = int(batch["prompt_mask"][j].sum())
    assert n == len(ids)
    np.testing.assert_array_equal(batch["prompt"][j, P - n :], ids)
    assert (batch["prompt"][j, : P - n] == tok.pad_token_id).all()
    assert not batch["prompt_mask"][j, : P - n].any()
    assert ids[0] == tok.bos_token_id and ids[1] != tok.bos_token_id
    assert ids[-1] == tok.convert_tokens_to_ids("<assistant>")


def test_bos_not_doubled_by_post_processor():
  template = "{{ bos_token }}USER: {{ messages[0]['content'] }} ASSISTANT:"
  tok = _word_tokenizer(bos_processor=True, chat_template=template)
  assert tok("hi")["input_ids"][0] == 1  # The processor does add BOS.
  ids = data_lib.format_prompts(tok, ["hi there"])
  assert ids == [
      tok.convert_tokens_to_ids(["<s>", "USER:", "hi", "there", "ASSISTANT:"])
  ]


def test_system_prompt_default_empty_and_template_off():
  # Like SmolLM2's template: a default system turn when none is given.
  template = (
      "{% if messages[0]['role'] != 'system' %}d {% endif %}"
      "{% for m in messages %}{{ m['content'] }} {% endfor %}ASSISTANT:"
  )
  tok = _word_tokenizer(bos_processor=False, chat_template=template)
  words = lambda ids: tok.convert_ids_to_tokens(ids[0])
  assert words(data_lib.format_prompts(tok, ["hi"])) == [
      "d",
      "hi",
      "ASSISTANT:",
  ]
  # '' is an explicit empty system turn: the template's default is gone.
  assert words(data_lib.format_prompts(tok, ["hi"], system_prompt="")) == [
      "hi",
      "ASSISTANT:",
  ]
  assert words(data_lib.format_prompts(tok, ["hi"], system_prompt="c")) == [
      "c",
      "hi",
      "ASSISTANT:",
  ]
  assert words(
      data_lib.format_prompts(tok, ["hi"], use_chat_template=False)
  ) == ["<s>", "hi"]


def test_trainer_chat_settings_map_to_the_dataset():
  from opd_jax.trainer import builders, config  # pylint: disable=g-import-not-at-top

  c = config.default_config()
  assert builders.chat_format(c) == {
      "use_chat_template": True,
      "system_prompt": None,
  }
  c.data.system_prompt, c.data.use_chat_template = "", False
  assert builders.chat_format(c) == {
      "use_chat_template": False,
      "system_prompt": "",
  }


def test_fallback_without_chat_template():
  tok = _word_tokenizer(bos_processor=False, chat_template=None)
  ids = data_lib.format_prompts(tok, ["a b"], system_prompt="c")
  assert ids == [tok.convert_tokens_to_ids(["<s>", "c", "a", "b"])]
  source = data_lib.TaskSource("train", 2)
  data = data_lib.PromptDataset(source, tok, max_prompt_len=64)
  assert data.prompts[0][0] == tok.bos_token_id
  assert "response" not in data.batch([0])


def test_reference_responses(tok, train_set):
  batch = train_set.batch(np.arange(len(train_set)))
  for j, r in enumerate(batch["index"]):
    ex = arithmetic.make_example("train", int(r))
    ids = tok(ex.rationale, add_special_tokens=False)["input_ids"]
    ids = (ids + [tok.eos_token_id])[:T]
    n = int(batch["response_mask"][j].sum())
    assert n == len(ids) and batch["response_mask"][j, :n].all()
    np.testing.assert_array_equal(batch["response"][j, :n], ids)
    assert (batch["response"][j, n:] == tok.pad_token_id).all()
    assert batch["answer"][j] == str(ex.answer)
  truncated = sum(int(m.sum()) == T for m in batch["response_mask"])
  assert train_set.stats.responses_truncated >= 1
  assert train_set.stats.responses_truncated == truncated


@pytest.mark.parametrize("policy", ["drop", "truncate"])
def test_overlong(tok, policy):
  source = data_lib.TaskSource("train", 12)
  full = data_lib.PromptDataset(source, tok, max_prompt_len=200)
  lengths = np.array([len(p) for p in full.prompts])
  limit = int(np.median(lengths))
  data = data_lib.PromptDataset(
      source, tok, max_prompt_len=limit, overlong=policy
  )
  over = lengths > limit
  assert over.any() and data.stats.overlong == over.sum()
  if policy == "drop":
    assert len(data) == data.stats.kept == (~over).sum()
    np.testing.assert_array_equal(data.source_index, np.flatnonzero(~over))
  else:
    assert len(data) == 12
    i = int(np.flatnonzero(over)[0])
    row = full.prompts[i]
    expected = np.concatenate([row[:1], row[len(row) - limit + 1 :]])
    np.testing.assert_array_equal(data.prompts[i], expected)
    assert all(len(p) <= limit for p in data.prompts)
  with pytest.raises(ValueError, match=r"arithmetic:train.*got 0 of 12"):
    data_lib.PromptDataset(source, tok, max_prompt_len=3)


def _write_table(tmp_path, fmt, rows):
  if fmt == "jsonl":
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
  table = datasets.Dataset.from_list(rows)
  if fmt == "parquet":
    path = tmp_path / "p.parquet"
    table.to_parquet(str(path))
  else:
    path = tmp_path / "saved"
    table.save_to_disk(str(path))
  return path


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "disk"])
def test_file_sources(tok, tmp_path, fmt):
  rows = [
      {"problem": f"q{i}", "solution": i, "text": f"r{i}"} for i in range(5)
  ]
  path = _write_table(tmp_path, fmt, rows)
  source = data_lib.FileSource(
      path,
      question_field="problem",
      answer_field="solution",
      response_field="text",
      cache_dir=str(tmp_path / "cache"),
  )
  assert len(source) == 5
  assert source[3] == data_lib.PromptRecord("q3", "3", "r3")
  data = data_lib.PromptDataset(
      source, tok, max_prompt_len=16, max_new_tokens=4
  )
  assert data.batch([4])["answer"] == ["4"]
  with pytest.raises(ValueError) as err:
    data_lib.FileSource(
        path,
        question_field="prompt",
        answer_field=None,
        cache_dir=str(tmp_path / "cache"),
    )
  message = str(err.value)
  assert str(path) in message and "'prompt'" in message
  assert "['problem', 'solution', 'text']" in message


def test_missing_responses_and_saved_splits(tok, tmp_path):
  saved = tmp_path / "dict"
  datasets.DatasetDict(
      eval=datasets.Dataset.from_list([
          {"question": "q0", "answer": None, "response": "r0"},
          {"question": "q1", "answer": "1", "response": None},
      ])
  ).save_to_disk(str(saved))
  source = data_lib.FileSource(saved, response_field="response", split="eval")
  data = data_lib.PromptDataset(
      source, tok, max_prompt_len=16, max_new_tokens=4
  )
  batch = data.batch([0, 1])
  assert batch["answer"] == [None, "1"]
  assert batch["response_mask"].sum(1).tolist() == [3, 0]  # r, 0, <eos>.
  assert data.stats.responses_missing == 1
  with pytest.raises(ValueError, match=r"split 'train' not found.*\['eval'\]"):
    data_lib.FileSource(saved)


def test_empty_and_missing_files(tmp_path):
  empty = tmp_path / "empty.jsonl"
  empty.write_text("")
  with pytest.raises(ValueError, match=r"empty\.jsonl: expected rows, got 0"):
    data_lib.FileSource(empty, cache_dir=str(tmp_path / "cache"))
  saved = tmp_path / "saved"
  datasets.Dataset.from_dict({"question": [], "answer": []}).save_to_disk(
      str(saved)
  )
  with pytest.raises(ValueError, match="saved: expected rows, got 0"):
    data_lib.FileSource(saved)
  with pytest.raises(FileNotFoundError, match="nope.jsonl"):
    data_lib.FileSource(tmp_path / "nope.jsonl")
  with pytest.raises(ValueError, match="expected a .jsonl"):
    data_lib.FileSource(empty.rename(tmp_path / "p.txt"))


def test_resume_is_exact(train_set):
  kwargs = dict(global_batch_size=4, seed=7, process_index=0, process_count=1)
  reference = _take(data_lib.PromptIterator(train_set, **kwargs), 5)
  it = data_lib.PromptIterator(train_set, **kwargs)
  _take(it, 2)
  state = json.loads(json.dumps(it.get_state()))
  restored = data_lib.PromptIterator(train_set, state=state, **kwargs)
  for want, got in zip(reference[2:], _take(restored, 3)):
    _assert_batches_equal(want, got)
  again = data_lib.PromptIterator(train_set, **kwargs)
  again.set_state(state)
  _assert_batches_equal(reference[2], next(again))
  with pytest.raises(ValueError, match="seed expected 7, got 8"):
    data_lib.PromptIterator(train_set, state={**state, "seed": 8}, **kwargs)
  with pytest.raises(ValueError, match="position < 10"):
    it.set_state({"epoch": 0, "position": 10})


def test_processes_split_the_global_batch(train_set):
  whole = data_lib.PromptIterator(
      train_set, global_batch_size=6, process_index=0, process_count=1
  )
  parts = [
      data_lib.PromptIterator(
          train_set, global_batch_size=6, process_index=i, process_count=2
      )
      for i in range(2)
  ]
  assert parts[0].local_batch_size == 3
  for _ in range(4):
    batch = next(whole)
    local = [next(p) for p in parts]
    for key in ("prompt", "prompt_mask", "index", "response"):
      np.testing.assert_array_equal(
          batch[key], np.concatenate([b[key] for b in local])
      )
    assert batch["answer"] == local[0]["answer"] + local[1]["answer"]
  assert parts[0].get_state() == parts[1].get_state() == whole.get_state()
  with pytest.raises(ValueError, match="multiple of the process count 4"):
    data_lib.PromptIterator(
        train_set, global_batch_size=6, process_index=0, process_count=4
    )


def test_epochs_reshuffle_and_cover(train_set):
  it = data_lib.PromptIterator(
      train_set, global_batch_size=4, seed=1, process_index=0, process_count=1
  )
  stream = np.concatenate([b["index"] for b in _take(it, 10)])  # 4 epochs.
  epochs = stream.reshape(4, 10)
  for epoch in epochs:
    assert sorted(epoch) == list(range(10))
  assert len({tuple(e) for e in epochs}) == 4
  assert it.get_state()["epoch"] == 4 and it.get_state()["position"] == 0
  ordered = data_lib.PromptIterator(
      train_set,
      global_batch_size=5,
      shuffle=False,
      process_index=0,
      process_count=1,
  )
  np.testing.assert_array_equal(next(ordered)["index"], np.arange(5))


def test_eval_batches_cover_once(train_set):
  seen = []
  for i in range(2):
    for batch in data_lib.eval_batches(
        train_set, global_batch_size=4, process_index=i, process_count=2
    ):
      assert batch["prompt"].shape == (2, P)
      seen.extend(batch["index"][batch["valid"]].tolist())
  assert sorted(seen) == list(range(10))
