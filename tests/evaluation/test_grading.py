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
"""Tests for answer extraction and the timeout-bounded grading pool."""

import sys
import time

import pytest

from opd_jax.evaluation import answers
from opd_jax.evaluation import grading

HANG = "<<hang>>"


def _grade_for_tests(prediction: str, reference: str) -> bool:
  """math-verify, plus markers that hang, raise or report the imports."""
  if prediction == HANG:
    while True:  # A stand-in for sympy stuck on a pathological expression.
      time.sleep(0.05)
  if prediction == "<<raise>>":
    raise ValueError("boom")
  if prediction == "<<no-jax>>":
    return "jax" not in sys.modules
  return grading.math_verify_grade(prediction, reference)


@pytest.fixture(scope="module")
def pool():
  with grading.GradingPool(
      num_workers=2,
      timeout=2.0,
      max_tasks_per_worker=5,
      grade_fn=_grade_for_tests,
  ) as p:
    yield p


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"so \boxed{1} or rather \boxed{\frac{1}{2}}.", r"\frac{1}{2}"),
        (r"\boxed{\frac{\sqrt{2}}{2}}", r"\frac{\sqrt{2}}{2}"),
        (r"\boxed{\{1,2\}}", r"\{1,2\}"),
        (r"\fbox{7}", "7"),
        (r"\boxed 5", "5"),
        (r"\boxed{\text{12,345}}.", "12345"),
        (r"\boxed{3} and then \boxed{4", "3"),
        ("7+5=12. #### 12", "12"),
        ("#### 1\n#### 2", "2"),
        ("The answer is $1,234$.", "1234"),
        ("so the final answer is 3.", "3"),
        (r"Final answer: \text{42}", "42"),
        (r"Final Answer: $\dfrac{3}{4}$", r"\frac{3}{4}"),
        (r"The answer is \boxed{9}", "9"),
    ],
)
def test_extract_answer(text, expected):
  assert answers.extract_answer(text) == expected


@pytest.mark.parametrize(
    "text", ["", "no answer here", r"\boxed{1", "##### 3", "The answer is"]
)
def test_extract_answer_none(text):
  assert answers.extract_answer(text) is None


@pytest.mark.parametrize(
    "raw, expected",
    [
        (" $12$. ", "12"),
        ("1,000,000", "1000000"),
        ("(1,2)", "(1,2)"),
        ("1,23", "1,23"),
        (r"\left( 1, 2 \right)", "(1,2)"),
        (r"\text{\textbf{5}}", "5"),
        (r"\boxed{x + 1}", "x+1"),
    ],
)
def test_normalize_answer(raw, expected):
  assert answers.normalize_answer(raw) == expected


def test_equivalent_answers_accepted(pool):
  results = pool.grade([
      (r"\boxed{\frac{1}{2}}", "0.5"),
      (r"\boxed{2\sqrt{2}}", r"\sqrt{8}"),
      ("The answer is 1,234", "1234"),
  ])
  assert [r.correct for r in results] == [True, True, True]
  assert not any(r.timed_out for r in results)


def test_wrong_and_unparseable_rejected(pool):
  results = pool.grade([(r"\boxed{3}", "4"), ("no idea", "4")])
  assert [r.correct for r in results] == [False, False]


def test_workers_do_not_import_jax(pool):
  assert pool.grade_one("<<no-jax>>", "").correct


def test_grade_fn_error_is_wrong_not_fatal(pool):
  result = pool.grade_one("<<raise>>", "1")
  assert not result.correct and "boom" in result.error
  assert pool.grade_one(r"\boxed{1}", "1").correct


def test_hang_times_out_and_pool_recovers(pool):
  before = dict(pool.stats)
  start = time.monotonic()
  results = pool.grade([
      (HANG, "1"),
      (r"\boxed{2}", "2"),
      (r"\boxed{3}", "4"),
      (r"\boxed{\frac{1}{2}}", "0.5"),
  ])
  elapsed = time.monotonic() - start
  assert results[0] == grading.Grade(False, timed_out=True)
  assert [r.correct for r in results[1:]] == [True, False, True]
  assert elapsed < 2.0 + 10.0  # The timeout plus generous slack.
  assert pool.stats["timed_out"] == before["timed_out"] + 1
  # Both workers hang at once; later items still grade after the respawn.
  results = pool.grade([(HANG, "1"), (HANG, "1"), (r"\boxed{5}", "5")])
  assert [r.timed_out for r in results] == [True, True, False]
  assert results[2].correct


def test_workers_are_recycled(pool):
  before = pool.stats["restarts"]
  results = pool.grade([(rf"\boxed{{{i}}}", str(i)) for i in range(12)])
  assert all(r.correct for r in results)
  assert pool.stats["restarts"] >= before + 2


def test_invalid_arguments():
  with pytest.raises(ValueError, match="timeout"):
    grading.GradingPool(timeout=0)
  with pytest.raises(ValueError, match="num_workers"):
    grading.GradingPool(num_workers=0)


def test_empty_batch_starts_nothing():
  pool = grading.GradingPool(grade_fn=_grade_for_tests)
  assert not pool.grade([])
  assert pool.stats["restarts"] == 0 and not pool._workers
