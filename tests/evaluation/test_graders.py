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
"""One grader per data source; every eval row checked gradable up front."""

import decimal
import json

import pytest

from opd_jax import evaluation
from opd_jax.data import sources
from opd_jax.data.dataset import PromptDataset
from opd_jax.data import tokenizer as task_tokenizer


@pytest.mark.parametrize(
    "text,want",
    [
        ("7+5=12, 12-3=9. #### 9", 9),
        (r"so the total is \boxed{42}.", 42),
        (r"\boxed{12 apples} and 13 later", 12),  # the explicit answer wins
        ("The answer is 1,234.", 1234),
        ("Final answer: -7", -7),
        ("She has 5 + 3 = 8 coins left", 8),  # the last number
        ("from 5-3 we get", 3),  # a minus between numbers
        ("It costs $12.50", decimal.Decimal("12.50")),
        (r"\boxed{3/4}", None),  # not one number
        ("no number here", None),
    ],
)
def test_integer_prediction(text, want):
  assert evaluation.integer_prediction(text) == want


@pytest.mark.parametrize(
    "answer,want",
    [
        ("72", 72),
        (" 1,234 ", 1234),
        ("-5", -5),
        ("12.0", 12),
        ("Natalia sold 48/2 = 24 clips.\n#### 72", 72),
        (r"\boxed{8}", 8),
        (r"\frac{1}{2}", None),
        ("3.5", None),
        ("", None),
        (None, None),
        ("x + 1", None),
    ],
)
def test_reference_integer(answer, want):
  assert evaluation.reference_integer(answer) == want


def test_integer_grader_accepts_every_way_of_writing_it():
  grade = evaluation.IntegerGrader()
  texts = [
      "... #### 18",
      r"\boxed{18}",
      "so 18 eggs",
      "18.0 it is",
      "#### 19",
      r"\boxed{18.5}",
      "nothing",
      "18 or rather 17",
  ]
  assert grade(texts, ["18"] * len(texts)) == [
      True,
      True,
      True,
      True,
      False,
      False,
      False,
      False,
  ]


def test_task_grader_is_the_exact_verifier():
  grade = evaluation.TaskGrader()
  assert grade(
      ["3+4=7. #### 7", r"\boxed{7}", "#### 7 apples"], ["7", "7", "7"]
  ) == [True, False, False]


def _file(tmp_path, rows, name="eval.jsonl"):
  path = tmp_path / name
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return sources.FileSource(path)


def test_grader_for(tmp_path):
  assert isinstance(
      evaluation.grader_for(sources.TaskSource("test", 4)),
      evaluation.TaskGrader,
  )
  ints = _file(
      tmp_path,
      [
          {"question": "a", "answer": 3},
          {"question": "b", "answer": "x #### 1,000"},
          {"question": "c"},
      ],
  )
  assert isinstance(evaluation.grader_for(ints), evaluation.IntegerGrader)
  math = _file(
      tmp_path,
      [
          {"question": "a", "answer": 3},
          {"question": "b", "answer": r"\frac{1}{2}"},
      ],
      name="math.jsonl",
  )
  with evaluation.grader_for(math) as grader:
    assert isinstance(grader, evaluation.MathGrader)


# (rows of an eval jsonl, message fragment): every row checked at start-up.
UNGRADABLE = [
    (
        [{"question": "a", "answer": 1}, {"question": "b"}],
        (
            "eval.jsonl line 2: no reference answer; every evaluation row needs"
            " a reference answer the integer answers grader can use (1 of 2"
            " rows do not)"
        ),
    ),
    (
        [{"question": "a"}, {"question": "b"}],
        (
            "eval.jsonl line 1: no reference answer; every evaluation row needs"
            " a reference answer the math-verify grader can use (2 of 2 rows do"
            " not)"
        ),
    ),
    (
        [{"question": "a", "answer": "5"}, {"question": "b", "answer": " "}],
        "eval.jsonl line 2: no reference answer",
    ),
]


@pytest.mark.parametrize("rows,match", UNGRADABLE)
def test_check_gradable_names_file_and_line(tmp_path, rows, match):
  source = _file(tmp_path, rows)
  grader = evaluation.grader_for(source)
  with pytest.raises(evaluation.UngradableAnswerError) as err:
    evaluation.check_gradable(grader, source)
  assert match in str(err.value)
  assert str(tmp_path / "eval.jsonl") in str(err.value)


def test_check_gradable_on_a_tokenized_dataset(tmp_path):
  """Rows dropped by tokenization keep their line numbers."""
  tok = task_tokenizer.load_tokenizer(
      task_tokenizer.build_task_tokenizer(tmp_path / "tok")
  )
  source = _file(
      tmp_path,
      [
          {"question": "How many? " * 30, "answer": "1"},
          {"question": "How many?", "answer": "2"},
          {"question": "How many?"},
      ],
  )
  data = PromptDataset(source, tok, max_prompt_len=16)
  assert len(data) == 2  # the long first row is dropped
  with pytest.raises(
      evaluation.UngradableAnswerError,
      match=r"eval\.jsonl line 3: no reference answer.*\(1 of" r" 2 rows",
  ):
    evaluation.check_gradable(evaluation.IntegerGrader(), data)
  evaluation.check_gradable(
      evaluation.TaskGrader(), sources.TaskSource("test", 16)
  )


def test_math_grader_and_its_check(tmp_path):
  source = _file(
      tmp_path,
      [
          {"question": "a", "answer": r"\frac{1}{2}"},
          {"question": "b", "answer": r"\sqrt{8}"},
          {"question": "c", "answer": r"\frac{1}{"},
      ],
  )
  with evaluation.MathGrader(num_workers=1) as grade:
    assert grade(
        [r"It is \boxed{0.5}.", r"\boxed{2\sqrt{2}}", "#### 1/2"],
        [r"\frac{1}{2}", r"\sqrt{8}", "0.75"],
    ) == [True, True, False]
    with pytest.raises(
        evaluation.UngradableAnswerError,
        match=r"eval\.jsonl line 3: answer '\\\\frac\{1\}\{'"
        r" cannot be graded: math-verify",
    ):
      evaluation.check_gradable(grade, source)


# Free-form competition answers as a user's file holds them (issue 38):
# plain-text references, and responses that end in a sentence, not a box.
# (reference, response, verdict).
FREE_FORM = [
    ("2^(n-1)", r"\boxed{2^{n-1}}", True),
    ("2^(n-1)", "So the count doubles each time. The answer is 2^(n-1).", True),
    ("2^(n-1)", r"\boxed{2^n/2}", True),
    ("2^(n-1)", r"\boxed{2^{n+1}}", False),
    ("4^n", r"The answer is $2^{2n}$.", True),
    ("4^n", "The answer is 4n.", False),
    ("sqrt(3)/3", r"\boxed{\frac{1}{\sqrt{3}}}", True),
    ("sqrt(3)/3", "Final answer: sqrt(3)", False),
    ("[-1, 1]", r"\boxed{[-1,1]}", True),
    ("[-1, 1]", r"\boxed{(-1,1)}", False),
    ("C(n, 4)", r"\boxed{\binom{n}{4}}", True),
    ("C(n, 4)", r"\boxed{\frac{n(n-1)(n-2)(n-3)}{24}}", True),
    ("C(n, 4)", r"\boxed{\binom{n}{3}}", False),
    ("n!", "Multiplying the choices, the answer is n!", True),
    ("n!", "We get n choices first, 2 at the end. The answer is n!.", True),
    ("n!", "The answer is (n-1)!", False),
    ("x = 1, 2", r"\boxed{1, 2}", True),
    ("x = 1, 2", r"\boxed{1}", False),
    ("7", "6 + 1 = 7.\n#### 7", True),
]


def test_free_form_references_and_answers_without_a_box():
  refs = [r for r, _, _ in FREE_FORM]
  with evaluation.MathGrader(num_workers=1) as grade:
    got = grade([t for _, t, _ in FREE_FORM], refs)
    assert grade.unusable(refs) == [None] * len(refs)
  wrong = [case for case, g in zip(FREE_FORM, got) if g != case[2]]
  assert not wrong, wrong


def test_a_word_is_not_a_math_reference(tmp_path):
  # "banana" parses as a product of symbols: any anagram would pass.
  source = _file(
      tmp_path,
      [
          {"question": "a", "answer": "12"},
          {"question": "b", "answer": "banana"},
          {"question": "c", "answer": r"\sin(x)"},
      ],
  )
  grader = evaluation.grader_for(source)
  with grader:
    assert grader.unusable([r"\sin(x)", "2\\pi", "x = 1, 2"]) == [None] * 3
    with pytest.raises(
        evaluation.UngradableAnswerError,
        match=r"eval\.jsonl line 2: answer 'banana' is text \('banana'\), not"
        r" math that math-verify can compare; .* \(1 of 3 rows do not\)",
    ):
      evaluation.check_gradable(grader, source)


def test_skip_ungradable_drops_and_counts_the_rows(tmp_path, capsys):
  source = _file(
      tmp_path,
      [
          {"question": "a", "answer": "12"},
          {"question": "b", "answer": "banana"},
          {"question": "c", "answer": r"\frac{1}{"},
          {"question": "d", "answer": "7"},
      ],
  )
  kept = evaluation.drop_ungradable(source, num_workers=1)
  assert [r.question for r in kept.records()] == ["a", "d"]
  assert kept.location(1) == "line 4"
  out = capsys.readouterr().out
  assert (
      out.startswith("--skip_ungradable: 2 of 4 evaluation rows of")
      and "dropped, no grader can use their answers (first: line 2: answer"
      in out
  )
  # The rows left are integers: the banana no longer makes it math-verify.
  assert isinstance(evaluation.grader_for(kept), evaluation.IntegerGrader)
  with pytest.raises(
      evaluation.UngradableAnswerError, match="no row has an answer"
  ):
    evaluation.drop_ungradable(
        _file(tmp_path, [{"question": "b", "answer": "banana"}], "b.jsonl")
    )
