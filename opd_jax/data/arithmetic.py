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
"""Generated multi-step arithmetic word problems with an exact verifier."""

from __future__ import annotations

import dataclasses
import hashlib
import random
import re
from typing import Sequence

from opd_jax.data import generated

# Splits partition the space of *arithmetic chains* (start value + steps), so
# a held-out question never shares its numbers with a training question, for
# any seed or index: `_split_of` hashes the chain, not the seed.
SPLITS = generated.SPLITS

NAMES = (
    ("Tom", "He"),
    ("Sam", "He"),
    ("Ben", "He"),
    ("Ann", "She"),
    ("Mia", "She"),
    ("Eva", "She"),
)
ITEMS = ("apples", "cards", "coins", "books", "pens", "stamps")
# One phrase list per operation; `{b}` is the operand. Verbs fit every item.
PHRASES = {
    "+": ("buys {b} more", "finds {b} more", "gets {b} more"),
    "-": ("gives away {b}", "loses {b}", "sells {b}"),
    "*": ("multiplies them by {b}",),
}
_QUESTION = (
    "{name} has {start} {item}. {pron} {clauses}. How many {item} {tail}"
)
_TAIL = "does {pron} have?"
ANSWER_MARKER = generated.ANSWER_MARKER

# After the last marker (`generated.last_marker_end`) only a canonical
# integer (no sign '+', no leading zeros, at most 18 digits) and whitespace
# may follow.
_ANSWER_RE = re.compile(r"\s*(-?(?:0|[1-9]\d{0,17}))\s*")
# Names of the `Difficulty` presets (classmethods), easiest first.
DIFFICULTIES = ("easy", "two_step", "default", "hard")


@dataclasses.dataclass(frozen=True)
class Difficulty:
  """Knobs of the generator.

  Attributes:
    min_steps: fewest operations after the start value.
    max_steps: most operations after the start value.
    start_range: inclusive range of the start value.
    operand_range: inclusive range of the operand of '+' and '-'.
    factor_range: inclusive range of the factor of '*'.
    ops: operations to draw from ('+', '-', '*').
    max_value: every intermediate value stays in [0, max_value].
  """

  min_steps: int = 2
  max_steps: int = 4
  start_range: tuple[int, int] = (10, 99)
  operand_range: tuple[int, int] = (2, 49)
  factor_range: tuple[int, int] = (2, 3)
  ops: tuple[str, ...] = ("+", "-")
  max_value: int = 999

  def __post_init__(self):
    if not 1 <= self.min_steps <= self.max_steps:
      raise ValueError(
          "Difficulty.min_steps/max_steps: expected 1 <= min <= max, got"
          f" {self.min_steps}, {self.max_steps}"
      )
    for field in ("start_range", "operand_range", "factor_range"):
      lo, hi = getattr(self, field)
      if not 0 <= lo <= hi:
        raise ValueError(
            f"Difficulty.{field}: expected 0 <= lo <= hi, got {(lo, hi)}"
        )
    if not self.ops or set(self.ops) - set(PHRASES):
      raise ValueError(
          f"Difficulty.ops: expected a non-empty subset of {tuple(PHRASES)},"
          f" got {self.ops}"
      )
    if self.start_range[1] > self.max_value:
      raise ValueError(
          f"Difficulty.start_range: expected hi <= max_value={self.max_value},"
          f" got {self.start_range}"
      )

  @classmethod
  def easy(cls) -> Difficulty:
    """One or two steps with small numbers: a sanity-check level."""
    return cls(1, 2, (2, 20), (1, 9))

  @classmethod
  def two_step(cls) -> Difficulty:
    """The easy level's numbers, always two steps: its harder half.

    The shipped demo teacher (trained on 'easy') still scores >= 0.95 here,
    unlike 'default' and 'hard' (longer chains, bigger numbers), so it is
    the hardest level the results grid can distil on (see RESULTS.md).
    """
    return cls(2, 2, (2, 20), (1, 9))

  @classmethod
  def default(cls) -> Difficulty:
    """Two to four '+'/'-' steps on two-digit numbers, with carries."""
    return cls()

  @classmethod
  def hard(cls) -> Difficulty:
    """Three to five steps, '*' included, values up to 999."""
    return cls(3, 5, ops=("+", "-", "*"))


@dataclasses.dataclass(frozen=True)
class Example:
  """One problem.

  Attributes:
    question: the word problem (the user turn).
    rationale: the worked solution, one `a op b = c.` per step, ending with
      `#### <answer>` (the assistant turn).
    answer: the final integer.
  """

  question: str
  rationale: str
  answer: int


def _operand_bounds(op: str, value: int, d: Difficulty) -> tuple[int, int]:
  """Inclusive operand range keeping the result in [0, d.max_value].

  The range is empty (lo > hi) when `op` cannot follow `value`.
  """
  if op == "+":
    return d.operand_range[0], min(d.operand_range[1], d.max_value - value)
  if op == "-":  # Subtracting 0 would be a no-op step.
    return max(d.operand_range[0], 1), min(d.operand_range[1], value)
  if value == 0:  # Any factor gives 0: a degenerate step.
    return 1, 0
  return d.factor_range[0], min(d.factor_range[1], d.max_value // value)


def _draw_chain(
    rng: random.Random, d: Difficulty
) -> tuple[int, list[tuple[str, int]]]:
  """Draws a start value and (op, operand) steps keeping values in range."""
  value = rng.randint(*d.start_range)
  start, steps = value, []
  for _ in range(rng.randint(d.min_steps, d.max_steps)):
    bounds = {op: _operand_bounds(op, value, d) for op in d.ops}
    choices = [op for op in d.ops if bounds[op][0] <= bounds[op][1]]
    if not choices:  # Only reachable with a tiny max_value; stop early.
      break
    op = rng.choice(choices)
    b = rng.randint(*bounds[op])
    steps.append((op, b))
    value = _apply(value, op, b)
  return start, steps


def _apply(a: int, op: str, b: int) -> int:
  return {"+": a + b, "-": a - b, "*": a * b}[op]


def _split_of(start: int, steps: Sequence[tuple[str, int]]) -> str:
  return generated.split_of_key(
      f"{start}" + "".join(f"{op}{b}" for op, b in steps)
  )


def _join_clauses(clauses: Sequence[str]) -> str:
  if len(clauses) == 1:
    return clauses[0]
  return ", ".join(clauses[:-1]) + " and " + clauses[-1]


def _render(
    rng: random.Random, start: int, steps: Sequence[tuple[str, int]]
) -> Example:
  name, pron = rng.choice(NAMES)
  item = rng.choice(ITEMS)
  clauses = [rng.choice(PHRASES[op]).format(b=b) for op, b in steps]
  question = _QUESTION.format(
      name=name,
      start=start,
      item=item,
      pron=pron,
      clauses=_join_clauses(clauses),
      tail=_TAIL.format(pron=pron.lower()),
  )
  value, lines = start, []
  for op, b in steps:
    new = _apply(value, op, b)
    lines.append(f"{value}{op}{b}={new}.")
    value = new
  rationale = " ".join(lines + [f"{ANSWER_MARKER} {value}"])
  return Example(question=question, rationale=rationale, answer=value)


def make_example(
    split: str,
    index: int,
    *,
    seed: int = 0,
    difficulty: Difficulty | None = None,
) -> Example:
  """Returns example `index` of `split`, a pure function of its arguments.

  Chains are drawn from an RNG seeded by sha256(split, seed, index) and
  rejected until they hash into `split` (see `SPLITS`), which makes the
  splits disjoint by construction: every question string maps to exactly
  one split, whatever the seed. Rejection costs 16 draws on average for
  'test' and 'validation', about 1.1 for 'train'.

  Args:
    split: one of 'train', 'validation', 'test'.
    index: non-negative example index.
    seed: dataset seed; different seeds give different problem sequences.
    difficulty: generator knobs; `Difficulty()` when None.

  Returns:
    The `Example`.
  """
  generated.check_split_index(split, index)
  d = difficulty or Difficulty()
  rng = generated.seeded_rng(f"{split}/{seed}/{index}")
  while True:
    start, steps = _draw_chain(rng, d)
    if _split_of(start, steps) == split:
      return _render(rng, start, steps)


def make_dataset(
    split: str,
    n: int,
    *,
    seed: int = 0,
    difficulty: Difficulty | None = None,
    start: int = 0,
) -> list[Example]:
  """Returns examples `start .. start + n - 1` of `split` (see make_example)."""
  return [
      make_example(split, i, seed=seed, difficulty=difficulty)
      for i in range(start, start + n)
  ]


def extract_answer(text: str) -> int | None:
  """Parses the integer after the last `####` marker; None if malformed.

  The rule, strict because generations end at <eos>:
    * the marker is exactly four '#' ('###' or '#####' are not markers);
    * the last marker wins (earlier ones are treated as reasoning text);
    * after it only whitespace, one canonical integer (optional '-', no '+',
      no leading zeros, at most 18 digits) and whitespace may follow:
      trailing junk such as '9.' or '9 apples' makes the output malformed.

  Args:
    text: a model completion (special tokens already removed).

  Returns:
    The integer, or None when there is no well-formed final answer.

  Examples:
    >>> extract_answer("7+5=12. 12-3=9. #### 9")
    9
    >>> extract_answer("#### 9 apples") is None
    True
  """
  end = generated.last_marker_end(text)
  if end is None:
    return None
  match = _ANSWER_RE.fullmatch(text, end)
  return int(match.group(1)) if match else None


def is_correct(text: str, answer: int) -> bool:
  """True iff `extract_answer(text)` equals `answer` exactly."""
  got = extract_answer(text)
  return got is not None and got == answer


def verify_rationale(example: Example) -> bool:
  """Recomputes every `a op b = c.` step and checks the chain and the answer.

  Each step's left operand must be the previous result (the first one the
  start value of the question), and the final `#### x` must equal the last
  result and `example.answer`.
  """
  steps = re.findall(r"(-?\d+)([+\-*])(\d+)=(-?\d+)\.", example.rationale)
  if not steps:
    return False
  prev = None
  for a, op, b, c in steps:
    a, b, c = int(a), int(b), int(c)
    if (prev is not None and a != prev) or _apply(a, op, b) != c:
      return False
    prev = c
  return prev == example.answer and is_correct(example.rationale, prev)


def wrong_rationale(example: Example) -> str:
  """A worked solution of `example` with one arithmetic slip, for contexts.

  The last step's result is off by a nonzero amount fixed by the question
  (so the same example always gets the same wrong solution), and the final
  answer follows the slip: a plausible wrong demonstration for a teacher
  context that shows correct and wrong examples side by side.
  """
  steps = re.findall(r"(-?\d+)([+\-*])(\d+)=(-?\d+)\.", example.rationale)
  digest = hashlib.sha256(example.question.encode()).digest()
  delta = 1 + digest[0] % 3
  a, op, b, c = steps[-1]
  wrong = int(c) + delta
  lines = [f"{x}{o}{y}={z}." for x, o, y, z in steps[:-1]]
  lines.append(f"{a}{op}{b}={wrong}.")
  return " ".join(lines + [f"{ANSWER_MARKER} {wrong}"])


def context_fields(example: Example) -> dict[str, str]:
  """The fields a teacher context template can name, for one example.

  `solution` is the worked rationale, `summary` its final line only (the
  answer marker and the answer: a summarized demonstration), `wrong` a
  solution with one slip (`wrong_rationale`), `answer` the integer.
  """
  return {
      "solution": example.rationale,
      "summary": f"{ANSWER_MARKER} {example.answer}",
      "wrong": wrong_rationale(example),
      "answer": str(example.answer),
  }


@dataclasses.dataclass(frozen=True)
class ArithmeticTask(generated.SplitView):
  """A seeded, difficulty-bound view of the generator and its verifier.

  Attributes:
    difficulty: generator knobs.
    seed: dataset seed.
  """

  difficulty: Difficulty = dataclasses.field(default_factory=Difficulty)
  seed: int = 0

  def example(self, split: str, index: int) -> Example:
    """Returns example `index` of `split`."""
    return make_example(
        split, index, seed=self.seed, difficulty=self.difficulty
    )

  @staticmethod
  def score(text: str, answer: int) -> float:
    """Reward 1.0 for an exactly right final answer, else 0.0."""
    return float(is_correct(text, answer))


def vocabulary_pieces() -> list[str]:
  """Every word-like piece the generator can emit, for the tokenizer.

  Renders each template with each name, pronoun and item, then splits the
  text as the task tokenizer's pre-tokenizer does; digits, spaces and
  punctuation are added by the tokenizer itself.
  """
  texts = []
  for name, pron in NAMES:
    for item in ITEMS:
      clauses = [p.format(b=1) for ps in PHRASES.values() for p in ps]
      texts.append(
          _QUESTION.format(
              name=name,
              start=1,
              item=item,
              pron=pron,
              clauses=_join_clauses(clauses),
              tail=_TAIL.format(pron=pron.lower()),
          )
      )
  words = set()
  for text in texts:
    words.update(re.findall(r" ?[A-Za-z]+", text))
  return sorted(words)
