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
"""One grader per data source, shared by the trainer and scripts/evaluate.py.

`grader_for(source)` picks it: the built-in task's exact verifier, exact
integer comparison when every reference answer is an integer (GSM8K-style
word problems), or math-verify in a worker pool otherwise (`\\frac{1}{2}`).
`check_gradable` runs at start-up and names the first row whose reference
answer the grader cannot use.
"""

from __future__ import annotations

import decimal
import re
from typing import Any, Sequence

from opd_jax.data import tasks
from opd_jax.data.sources import PromptSource, TaskSource
from opd_jax.evaluation import answers as answers_lib
from opd_jax.evaluation.grading import GradingPool

_INT_RE = re.compile(r"[+-]?\d+(?:\.0+)?")
# A number not glued to a preceding digit or point: '5-3' yields 5 and 3.
_NUMBER_RE = re.compile(r"(?<![\d.])-?\d+(?:\.\d+)?")


class UngradableAnswerError(ValueError):
  """An evaluation row has no reference answer its grader can use."""


def reference_text(answer: str) -> str:
  """The final answer inside a reference: what follows `####` when present.

  GSM8K's `answer` field is a worked solution ending in `#### 72`.
  """
  if "####" in answer:
    return answers_lib.extract_final_line(answer) or ""
  return answer.strip()


def reference_integer(answer: str | None) -> int | None:
  """The reference as an int ('1,234', '-5', '12.0', '... #### 72'), or None."""
  if answer is None:
    return None
  text = answers_lib.normalize_answer(reference_text(str(answer)))
  if not _INT_RE.fullmatch(text):
    return None
  return int(decimal.Decimal(text))


def _single_number(text: str) -> decimal.Decimal | None:
  numbers = _NUMBER_RE.findall(text)
  return decimal.Decimal(numbers[0]) if len(numbers) == 1 else None


def integer_prediction(text: str) -> decimal.Decimal | None:
  """The number a response commits to, or None.

  The explicit final answer wins: the last `\\boxed{}`, else the last
  `#### x` / `The answer is x` / `Final answer: x` line, when it holds one
  number (`\\boxed{12 apples}` is 12; `\\boxed{3/4}` is none). Without an
  explicit answer, the last number of the response. Thousands separators
  and `$` are ignored.

  Examples:
    >>> integer_prediction("7+5=12, 12-3=9. #### 9")
    Decimal('9')
    >>> integer_prediction("So she has 1,234 coins left.")
    Decimal('1234')
  """
  final = answers_lib.extract_answer(text)
  if final is not None:
    return _single_number(final)
  numbers = _NUMBER_RE.findall(answers_lib.remove_thousands_separators(text))
  return decimal.Decimal(numbers[-1]) if numbers else None


class Grader:
  """Grades responses against reference answers: `(texts, answers) -> bools`.

  Use as a context manager (or call `close`): the math grader owns worker
  processes.
  """

  name = "grader"

  def __call__(
      self, texts: Sequence[str], answers: Sequence[str]
  ) -> list[bool]:
    raise NotImplementedError

  def unusable(self, answers: Sequence[str | None]) -> list[str | None]:
    """Per answer, why the grader cannot use it (None when it can)."""
    return [
        None
        if a is not None and reference_text(str(a))
        else "no reference answer"
        for a in answers
    ]

  def close(self) -> None:
    pass

  def __enter__(self) -> Grader:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


class TaskGrader(Grader):
  """A built-in task's exact verifier (`data.tasks`)."""

  def __init__(self, task: str = "arithmetic"):
    self._task = tasks.get(task)
    self.name = f"{task} task verifier"

  def __call__(self, texts, answers):
    return [self._task.is_correct(t, str(a)) for t, a in zip(texts, answers)]

  def unusable(self, answers):
    return [self._task.answer_problem(a) for a in answers]


class IntegerGrader(Grader):
  """Exact integer answers, written `#### n`, `\\boxed{n}` or last."""

  name = "integer answers"

  def __call__(self, texts, answers):
    out = []
    for text, answer in zip(texts, answers):
      want, got = reference_integer(answer), integer_prediction(text)
      out.append(want is not None and got is not None and got == want)
    return out

  def unusable(self, answers):
    return [
        None
        if reference_integer(a) is not None
        else "no reference answer"
        if a is None
        else f"answer {a!r} is not an integer"
        for a in answers
    ]


# Letter runs that are math, not words ("banana" parses as a product of six
# symbols and would grade any anagram correct).
_MATH_WORDS = frozenset(
    "sin cos tan cot sec csc arcsin arccos arctan sinh cosh tanh log ln lg"
    " exp sqrt frac dfrac tfrac binom choose pi infty inf lim max min gcd lcm"
    " mod pmod bmod cdot times div pm mp le leq ge geq neq ne approx left right"
    " text mathrm mathbf boxed circ deg degree degrees cup cap emptyset in"
    " notin subset alpha beta gamma delta theta lambda mu sigma phi omega"
    " and or".split()
)
_WORD_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{3,}")


def math_reference(answer: str) -> str:
  """A reference answer as math-verify's gold: plain-text math (`2^(n-1)`,
  `sqrt(3)/3`, `C(n, 4)`) as LaTeX, inside `$...$` unless delimited."""
  text = reference_text(str(answer))
  if "$" in text or "\\boxed" in text or "\\(" in text or "\\[" in text:
    return text
  return f"${answers_lib.plain_to_latex(text)}$"


def math_prediction(text: str) -> str:
  """A response as math-verify's prediction: its final answer boxed.

  The last `\\boxed{}`, else the last `#### x` / `The answer is x` /
  `Final answer: x` line (without a box math-verify would take the last
  expression it finds, often a step before the answer), plain-text math
  as LaTeX; a response with neither is passed whole.
  """
  final = answers_lib.extract_boxed(text)
  if final is None:
    final = answers_lib.extract_final_line(text)
    if final is not None:
      final = final.strip().rstrip(".").strip().strip("$").strip()
      final = answers_lib.remove_thousands_separators(final)
  if not final:
    return text
  return f"\\boxed{{{answers_lib.plain_to_latex(final)}}}"


def _word(answer: str) -> str | None:
  """The first letter run of `answer` that is a word, not math, or None."""
  for word in _WORD_RE.findall(reference_text(str(answer))):
    if word.lower() not in _MATH_WORDS:
      return word
  return None


class MathGrader(Grader):
  """math-verify equivalence (`0.5` = `\\frac{1}{2}`) in a worker pool.

  The pool starts on first use; every item is bounded by `timeout` seconds.
  """

  name = "math-verify"

  def __init__(self, num_workers: int = 2, timeout: float = 10.0):
    self._args = dict(num_workers=num_workers, timeout=timeout)
    self._pool: GradingPool | None = None

  @property
  def pool(self) -> GradingPool:
    if self._pool is None:
      self._pool = GradingPool(**self._args)
    return self._pool

  def __call__(self, texts, answers):
    pairs = [
        (math_prediction(t), math_reference(a)) for t, a in zip(texts, answers)
    ]
    return [g.correct for g in self.pool.grade(pairs)]

  def unusable(self, answers):
    # A reference is usable when it is math (not a word, which parses as a
    # product of symbols) and a response boxing it is graded correct.
    why = super().unusable(answers)
    for i, w in enumerate(why):
      word = None if w is not None else _word(answers[i])
      if word is not None:
        why[i] = (
            f"answer {answers[i]!r} is text ({word!r}), not math that"
            " math-verify can compare"
        )
    rows = [i for i, w in enumerate(why) if w is None]
    refs = [reference_text(str(answers[i])) for i in rows]
    ok = self([f"\\boxed{{{r}}}" for r in refs], refs) if rows else []
    for i, good, ref in zip(rows, ok, refs):
      if not good:
        why[i] = (
            f"answer {answers[i]!r} cannot be graded: math-verify does"
            f" not find '\\boxed{{{ref}}}' equal to it"
        )
    return why

  def close(self):
    if self._pool is not None:
      self._pool.close()
      self._pool = None


def grader_for(
    source: PromptSource, *, num_workers: int = 2, timeout: float = 10.0
) -> Grader:
  """The grader for an evaluation source.

  Args:
    source: the built-in task (its exact verifier) or a file source:
      integer grading when every reference answer present is an integer,
      math-verify otherwise.
    num_workers, timeout: the math-verify pool's workers and seconds per
      answer.
  """
  if isinstance(source, TaskSource):
    return TaskGrader(source.task_name)
  answers = [r.answer for r in source.records() if r.answer is not None]
  if answers and all(reference_integer(a) is not None for a in answers):
    return IntegerGrader()
  return MathGrader(num_workers=num_workers, timeout=timeout)


def check_gradable(grader: Grader, dataset: Any) -> None:
  """Raises unless every row of `dataset` has an answer `grader` can use.

  Args:
    grader: from `grader_for`.
    dataset: a `PromptSource`, or a `PromptDataset` (its kept rows).

  Raises:
    UngradableAnswerError: naming the source, the first bad row (by line for
      jsonl files) and why, and how many rows are bad.
  """
  source = getattr(dataset, "source", dataset)
  if hasattr(dataset, "source_index"):
    index = [int(i) for i in dataset.source_index]
    answers = list(dataset.answers)
  else:
    index = list(range(len(source)))
    answers = [r.answer for r in source.records()]
  bad = [(i, why) for i, why in zip(index, grader.unusable(answers)) if why]
  if bad:
    i, why = bad[0]
    raise UngradableAnswerError(
        f"eval data {source.name} {source.location(i)}: {why}; every"
        f" evaluation row needs a reference answer the {grader.name} grader"
        f" can use ({len(bad)} of {len(answers)} rows do not)"
    )


class _KeptRows(PromptSource):
  """The rows `index` of another source (messages name the original rows)."""

  def __init__(self, source: PromptSource, index: Sequence[int]):
    self._source, self._index = source, list(index)

  @property
  def name(self) -> str:
    return self._source.name

  def __len__(self) -> int:
    return len(self._index)

  def __getitem__(self, index: int):
    return self._source[self._index[index]]

  def location(self, index: int) -> str:
    return self._source.location(self._index[index])

  def origin(self, index: int) -> int:
    return self._source.origin(self._index[index])


def drop_ungradable(
    source: PromptSource,
    *,
    num_workers: int = 2,
    timeout: float = 10.0,
    flag: str = "--skip_ungradable",
) -> PromptSource:
  """`source` without the rows no grader can use, counted in one line.

  What `check_gradable` refuses, dropped instead: rows without an answer or
  with a word for one first, then the grader is chosen on the rest (one
  such row cannot switch a set of integers to math-verify) and the
  rows it cannot use go too.

  Raises:
    UngradableAnswerError: no row is left.
  """
  answers = [r.answer for r in source.records()]
  why = Grader().unusable(answers)
  for i, w in enumerate(why):
    word = None if w is not None else _word(answers[i])
    if word is not None and reference_integer(answers[i]) is None:
      why[i] = f"answer {answers[i]!r} is text ({word!r}), not math"
  kept = [i for i, w in enumerate(why) if w is None]
  if kept:
    with grader_for(
        _KeptRows(source, kept), num_workers=num_workers, timeout=timeout
    ) as grader:
      later = grader.unusable([answers[i] for i in kept])
    for i, w in zip(kept, later):
      why[i] = w
  dropped = [(i, w) for i, w in enumerate(why) if w]
  if len(dropped) == len(answers):
    i, w = dropped[0]
    raise UngradableAnswerError(
        f"eval data {source.name}: no row has an answer a grader can use"
        f" ({source.location(i)}: {w})"
    )
  if dropped:
    i, w = dropped[0]
    print(
        f"{flag}: {len(dropped)} of {len(answers)} evaluation rows of"
        f" {source.name} dropped, no grader can use their answers (first:"
        f" {source.location(i)}: {w})",
        flush=True,
    )
  return _KeptRows(source, [i for i, w in enumerate(why) if not w])
