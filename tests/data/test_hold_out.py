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
"""sources.hold_out: a file's evaluation rows when it has no eval_path."""

import json
import random

import pytest

from opd_jax.data import sources


def _file(tmp_path, questions, name="q.jsonl"):
  path = tmp_path / name
  path.write_text(
      "".join(
          json.dumps({"question": q, "answer": str(i)}) + "\n"
          for i, q in enumerate(questions)
      )
  )
  return sources.FileSource(path)


def _questions(source):
  return [r.question for r in source.records()]


def test_split_is_disjoint_complete_and_deterministic(tmp_path):
  questions = [f"What is {i} + {i}?" for i in range(200)]
  source = _file(tmp_path, questions)
  train, held = sources.hold_out(source, 0.1)
  assert len(held) == 20 and len(train) == 180
  assert not set(_questions(train)) & set(_questions(held))
  assert sorted(_questions(train) + _questions(held)) == sorted(questions)
  # Each part keeps the file's order; origin() names the file's row.
  assert [held.origin(i) for i in range(len(held))] == sorted(
      questions.index(q) for q in _questions(held)
  )
  assert held.location(0) == f"line {held.origin(0) + 1}"
  again = sources.hold_out(_file(tmp_path, questions, "again.jsonl"), 0.1)
  assert _questions(again[1]) == _questions(held)
  # By question, not by position: reordered rows hold out the same ones.
  shuffled = questions[:]
  random.Random(1).shuffle(shuffled)
  moved = sources.hold_out(_file(tmp_path, shuffled, "moved.jsonl"), 0.1)
  assert set(_questions(moved[1])) == set(_questions(held))
  # Another seed, another split of the same size.
  other = sources.hold_out(source, 0.1, seed=1)
  assert len(other[1]) == 20 and _questions(other[1]) != _questions(held)
  assert "(20 of 200 questions held out, 0.1)" in held.name


def test_a_repeated_question_is_on_one_side_only(tmp_path):
  questions = [f"q{i}" for i in range(10)] * 3
  train, held = sources.hold_out(_file(tmp_path, questions), 0.2)
  assert len(held) == 6 and len(set(_questions(held))) == 2
  assert not set(_questions(train)) & set(_questions(held))


def test_at_least_one_row_on_each_side(tmp_path):
  train, held = sources.hold_out(_file(tmp_path, ["a", "b", "c"]), 0.01)
  assert (len(train), len(held)) == (2, 1)
  train, held = sources.hold_out(_file(tmp_path, ["a", "b"], "2.jsonl"), 0.9)
  assert (len(train), len(held)) == (1, 1)
  with pytest.raises(
      ValueError, match=r"^config.data.eval_fraction: .* has 1 distinct"
  ):
    sources.hold_out(
        _file(tmp_path, ["a", "a"], "1.jsonl"),
        0.5,
        field="config.data.eval_fraction",
    )
  with pytest.raises(ValueError, match=r"expected a fraction in \(0, 1\)"):
    sources.hold_out(_file(tmp_path, ["a", "b"], "3.jsonl"), 1.0)
