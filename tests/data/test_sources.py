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
"""File sources: bad files are named by file and line; answers are optional."""

import dataclasses
import gzip
import json

import pytest

from opd_jax.data import sources


def _jsonl(rows):
  return "".join(json.dumps(r) + "\n" for r in rows).encode()


_GOOD = [{"question": "q0", "answer": 1}, {"question": "q1", "answer": "2"}]

# (file name, bytes, FileSource kwargs, message fragment).
BAD_FILES = [
    (
        "p.jsonl",
        _jsonl(_GOOD) + b'{"question": "caf\xe9"}\n',
        {},
        (
            "p.jsonl line 3: not UTF-8 (byte 0xe9 at column 18); save the file"
            " as UTF-8"
        ),
    ),
    (
        "p.jsonl",
        b'{"question": "a"}\n{"question": "b",}\n',
        {},
        (
            "p.jsonl line 2: not valid JSON (Expecting property name enclosed"
            ' in double quotes at column 18): \'{"question": "b",}\''
        ),
    ),
    (
        "p.jsonl",
        b'{"question": "a"}\n["b"]\n',
        {},
        "p.jsonl line 2: expected a JSON object, got list",
    ),
    (
        "p.jsonl",
        b'{"question": "a"}\n\n{"prompt": "b"}\n',
        {},
        (
            "p.jsonl line 3: field 'question': expected a string, got NoneType"
            " (missing)"
        ),
    ),
    (
        "p.jsonl",
        b'{"question": 7}\n',
        {},
        "p.jsonl line 1: field 'question': expected a string, got int",
    ),
    (
        "p.json",
        b'[{"question": "a"}, 3]',
        {},
        "p.json item 1: expected a JSON object, got int",
    ),
    ("p.json", b'[{"question": "a"},', {}, "p.json: not valid JSON"),
    (
        "p.txt",
        b"What is 2+2?\n",
        {},
        (
            "p.txt: expected a .jsonl, .json or .parquet file (optionally .gz)"
            " or a directory written by datasets.Dataset.save_to_disk, got"
            " '.txt'; for plain text, write one JSON object per line, e.g."
            ' {"question": "..."}, to a .jsonl file'
        ),
    ),
    ("questions", b"What is 2+2?\n", {}, "got 'no extension'"),
    ("p.jsonl", b"\n\n", {}, "p.jsonl: expected rows, got 0"),
    (
        "p.jsonl",
        _jsonl([{"question": "a"}]),
        {"require_answers": True},
        "answer_field='answer' is not a field; fields are ['question']",
    ),
    (
        "p.jsonl",
        _jsonl(_GOOD),
        {"question_field": "problem"},
        (
            "question_field='problem' is not a field; fields are ['question',"
            " 'answer']"
        ),
    ),
]


@pytest.mark.parametrize("name,data,kwargs,match", BAD_FILES)
def test_bad_file_is_named(tmp_path, name, data, kwargs, match):
  path = tmp_path / name
  path.write_bytes(data)
  with pytest.raises(ValueError) as err:
    sources.FileSource(path, **kwargs)
  assert match in str(err.value)
  assert str(path) in str(err.value)


def test_training_file_without_answers_loads(tmp_path):
  path = tmp_path / "train.jsonl"
  path.write_bytes(_jsonl([{"question": "a"}, {"question": "b"}]))
  source = sources.FileSource(path)
  assert [r.answer for r in source.records()] == [None, None]


def test_lines_are_located_and_json_variants_read(tmp_path):
  rows = [
      {"question": "a", "answer": 1},
      {"question": "b"},
      {"question": "c", "answer": "\\frac{1}{2}"},
  ]
  text = b"\xef\xbb\xbf" + _jsonl(rows[:1]) + b"\n   \n" + _jsonl(rows[1:])
  (tmp_path / "p.jsonl").write_bytes(text)  # BOM, blank lines
  (tmp_path / "p.jsonl.gz").write_bytes(gzip.compress(text))
  (tmp_path / "a.json").write_text(json.dumps(rows))
  for name, where in (
      ("p.jsonl", ["line 1", "line 4", "line 5"]),
      ("p.jsonl.gz", ["line 1", "line 4", "line 5"]),
      ("a.json", ["item 0", "item 1", "item 2"]),
  ):
    source = sources.FileSource(tmp_path / name)
    assert [r.answer for r in source.records()] == ["1", None, "\\frac{1}{2}"]
    assert [source.location(i) for i in range(3)] == where


def test_take(tmp_path):
  path = tmp_path / "p.jsonl"
  path.write_bytes(_jsonl([{"question": f"q{i}"} for i in range(5)]))
  source = sources.FileSource(path)
  head = sources.take(source, 2)
  assert len(head) == 2 and [r.question for r in head.records()] == ["q0", "q1"]
  assert head.name == source.name and head.location(1) == "line 2"
  with pytest.raises(IndexError):
    head[2]  # pylint: disable=pointless-statement
  assert sources.take(source, 0) is source
  assert sources.take(source, 5) is source
  task = sources.TaskSource("test", 8)
  assert len(sources.take(task, 3)) == 3 and task.location(3) == "row 3"


@pytest.mark.parametrize("level", ["easy", "default"])
def test_countdown_held_out_sizes_are_its_problem_counts(level):
  # The hard level's count takes a minute; its table entry was made the same
  # way.
  from opd_jax.data import countdown, tasks  # pylint: disable=g-import-not-at-top

  counts = countdown.problem_counts(getattr(countdown.Difficulty, level)())
  spec = tasks.get("countdown")
  for split in ("validation", "test"):
    assert spec.held_out_size(level, split) == counts[split]
  assert spec.held_out_size(level, "train") is None
  assert tasks.get("arithmetic").held_out_size(level, "test") is None


def test_more_held_out_problems_than_exist_are_refused_at_once():
  # Before: the distinct-problem scan searched for problems that do not
  # exist (and a large request for hours).
  with pytest.raises(
      ValueError,
      match=(
          r"TaskSource\('countdown', 'test'\).num_examples: expected at most"
          r" 2400 \(countdown \(default\) has 2400 distinct test problems\),"
          r" got 100000000"
      ),
  ):
    sources.TaskSource("test", 10**8, task="countdown")
  with pytest.raises(ValueError, match=r"at most 0 .*, from 2400\), got 1"):
    sources.TaskSource("test", 1, task="countdown", start=2400)
  assert len(sources.TaskSource("train", 10**8, task="countdown")) == 10**8
  # Arithmetic draws without end: training is not bounded, evaluation is
  # capped (issue 38: 1e8 test problems ran for hours, silently).
  assert len(sources.TaskSource("train", 10**8)) == 10**8
  with pytest.raises(ValueError, match=r"expected at most 100000 \(arith"):
    sources.TaskSource("test", 10**8)


def test_task_fingerprint_follows_the_generated_text(monkeypatch):
  from opd_jax.data import countdown  # pylint: disable=g-import-not-at-top

  make = lambda **kw: sources.TaskSource("train", 16, task="countdown", **kw)
  fingerprint = make().fingerprint()
  assert len(fingerprint) == 16 and make().fingerprint() == fingerprint
  assert make(seed=1).fingerprint() != fingerprint
  assert make(difficulty="easy").fingerprint() != fingerprint
  # Same flags, another trace format: the text changed, so must the hash.
  rationale = countdown.CountdownTask.example
  monkeypatch.setattr(
      countdown.CountdownTask,
      "example",
      lambda self, split, i: dataclasses.replace(
          rationale(self, split, i),
          rationale=rationale(self, split, i).rationale + " ",
      ),
  )
  assert make().fingerprint() != fingerprint


def test_selected_rows_know_their_source_row(tmp_path):
  path = tmp_path / "p.jsonl"
  path.write_bytes(_jsonl([{"question": f"q{i}"} for i in range(5)]))
  source = sources.FileSource(path)
  assert source.origin(3) == 3 and sources.take(source, 2).origin(1) == 1
  from opd_jax.evaluation import graders  # pylint: disable=g-import-not-at-top

  kept = graders._KeptRows(source, [1, 3, 4])  # pylint: disable=protected-access
  assert [kept.origin(i) for i in range(3)] == [1, 3, 4]
  assert sources.take(kept, 2).origin(1) == 3
