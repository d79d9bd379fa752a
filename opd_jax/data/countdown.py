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
"""Countdown: reach a target from four numbers, by a written search.

A problem is four numbers and a target ("Use 3 5 7 9 to make 24."). The
reference response is a depth-first search written one move per line, in
the style of Stream of Search (Gandhi et al., 2024): a move combines two of
the numbers left into one, and the line shows the numbers left after it;
indentation is the depth. A move that leaves two numbers is followed by a
final move whose line writes its value against the target and ends ' yes'
(it hits the target) or ' no'. Dead ends
are written and left, so a trace recovers from wrong turns; the last line
is `#### <expression>`, the solution over the original numbers:

    Use 3 5 7 9 to make 24.

    9*3=27: 5 7 27
     27-7=20: 5 20
      20+5=25 vs 24 no
    9-5=4: 3 7 4
     7*3=21: 4 21
      21+4=25 vs 24 no
     7-3=4: 4 4
      4*4=16 vs 24 no
    9+7=16: 3 5 16
     5+3=8: 16 8
      16+8=24 vs 24 yes
    #### (9+7)+(5+3)

Each final line repeats the target so that the yes / no is a comparison of
two numbers side by side. Without it a model must compare with the target
in the prompt, hundreds of tokens back; a 4.3M-parameter teacher trained on
that format wrote 95% of its arithmetic right but ended 62 of 64 searches
in a false ' yes', placed by the search's length (docs/tasks.md).

Rules (checked by `check_expression`): each number is used exactly once,
operations are + - * / with parentheses, and every intermediate result is a
non-negative integer (so a division must be exact and not by zero). The
generator's own moves keep results positive (a - b only when a > b).

The moves under one state are written in one fixed order (the pairs of
the numbers left, in order, then + - * /), so a search never tries a move
twice and each line comes after its previous sibling in that order: a
teacher trained on random orders looped, retrying the moves of a dead end
for the whole budget (docs/tasks.md). Which moves it tries is random: on
the path to the solution a right move is drawn (one that leaves numbers
from which the target is reachable) and wrong moves before it in the order
are tried first, a geometric number with continuation probability
`Difficulty.wrong_turn`; a dead end (no solution below it) tries one move,
and another with probability `dead_end_breadth`, before giving up. Problems keep only targets with at
least `min_solutions` distinct solution expressions, so most problems have
several valid answers in different surface forms.
"""

from __future__ import annotations

import dataclasses
import fractions
import functools
import hashlib
import itertools
import random
import re
from typing import Sequence

from opd_jax.data import generated

SPLITS = generated.SPLITS
ANSWER_MARKER = generated.ANSWER_MARKER
DIFFICULTIES = ("easy", "default", "hard")
OPS = ("+", "-", "*", "/")

_QUESTION = "Use {numbers} to make {target}."
_QUESTION_RE = re.compile(r"Use ((?:\d+ )*\d+) to make (\d+)\.")
# The grading key of a problem (`Example.answer`): "24 from 3 5 7 9".
_KEY_RE = re.compile(r"(\d+) from ((?:\d+ )*\d+)")
_MOVE_RE = re.compile(
    r"^( *)(\d+)([-+*/])(\d+)=(\d+)(?:: ([\d ]+)| vs (\d+) (yes|no))$"
)


@dataclasses.dataclass(frozen=True)
class Difficulty:
  """Knobs of the generator.

  Attributes:
    count: numbers per problem.
    number_range: inclusive range of each number.
    target_range: inclusive range of the target.
    min_solutions: fewest distinct solution expressions a target needs.
    wrong_turn: on the solution path, the probability of trying one more
      wrong move before a right one (a geometric number of wrong turns).
    dead_end_breadth: in a dead end, the probability of trying one more
      move before backtracking.
    max_lines: a drawn search longer than this is drawn again (bounds the
      response length: about 12 tokens a line).
  """

  count: int = 4
  number_range: tuple[int, int] = (1, 13)
  target_range: tuple[int, int] = (10, 60)
  min_solutions: int = 2
  wrong_turn: float = 0.65
  dead_end_breadth: float = 0.35
  max_lines: int = 28

  def __post_init__(self):
    if not 2 <= self.count <= 5:
      raise ValueError(f"Difficulty.count: expected 2..5, got {self.count}")
    for field in ("number_range", "target_range"):
      lo, hi = getattr(self, field)
      if not 1 <= lo <= hi:
        raise ValueError(
            f"Difficulty.{field}: expected 1 <= lo <= hi, got {(lo, hi)}"
        )
    if self.min_solutions < 1:
      raise ValueError(
          f"Difficulty.min_solutions: expected >= 1, got {self.min_solutions}"
      )
    for field in ("wrong_turn", "dead_end_breadth"):
      if not 0.0 <= getattr(self, field) < 1.0:
        raise ValueError(
            f"Difficulty.{field}: expected a probability in [0, 1), got"
            f" {getattr(self, field)}"
        )
    if self.max_lines < self.count:
      raise ValueError(
          f"Difficulty.max_lines: expected >= count ({self.count}), got"
          f" {self.max_lines}"
      )

  @classmethod
  def easy(cls) -> Difficulty:
    """Numbers 1..9, targets 10..40: short searches."""
    return cls(
        number_range=(1, 9),
        target_range=(10, 40),
        wrong_turn=0.45,
        max_lines=24,
    )

  @classmethod
  def default(cls) -> Difficulty:
    """Numbers 1..13, targets 10..60: the results grid's level."""
    return cls()

  @classmethod
  def hard(cls) -> Difficulty:
    """Numbers 1..25, targets 10..100: longer searches, bigger products."""
    return cls(
        number_range=(1, 25),
        target_range=(10, 100),
        wrong_turn=0.6,
        max_lines=30,
    )


@dataclasses.dataclass(frozen=True)
class Example:
  """One problem.

  Attributes:
    question: the user turn ("Use 3 5 7 9 to make 24.").
    rationale: the written search, ending with `#### <expression>`.
    answer: the grading key, "<target> from <numbers>" (what
      `is_correct` checks a response against).
    numbers: the numbers, in the question's order.
    target: the target.
    solution: the expression the rationale ends with.
  """

  question: str
  rationale: str
  answer: str
  numbers: tuple[int, ...]
  target: int
  solution: str


@dataclasses.dataclass(frozen=True)
class _Move:
  """Combining items `i` and `j` (values a >= b) into `value` by `op`."""

  i: int
  j: int
  a: int
  op: str
  b: int
  value: int
  expr: str


def _apply(a: int, op: str, b: int) -> int | None:
  """a op b when it is a positive integer, else None (the game's rule)."""
  if op == "+":
    return a + b
  if op == "*":
    return a * b
  if op == "-":
    return a - b if a > b else None
  return a // b if b and a % b == 0 else None


def _wrap(expr: str) -> str:
  return expr if expr.isdigit() else f"({expr})"


def _moves(
    items: Sequence[tuple[int, str]], unique: bool = False
) -> list[_Move]:
  """Every legal move on `items` [(value, expression)], larger value first.

  With `unique`, one move per written line (a, op, b): equal values give
  the same line and the same numbers left, so a search tries them once.
  """
  moves, seen = [], set()
  for i, j in itertools.combinations(range(len(items)), 2):
    (x, ex), (y, ey) = items[i], items[j]
    if x < y:
      (x, ex), (y, ey), i, j = (y, ey), (x, ex), j, i
    for op in OPS:
      value = _apply(x, op, y)
      if value is not None and not (unique and (x, op, y) in seen):
        seen.add((x, op, y))
        moves.append(
            _Move(i, j, x, op, y, value, f"{_wrap(ex)}{op}{_wrap(ey)}")
        )
  return moves


def _after(items, move: _Move) -> list[tuple[int, str]]:
  """The items left after `move`: the others in order, then its result."""
  rest = [it for k, it in enumerate(items) if k not in (move.i, move.j)]
  return rest + [(move.value, move.expr)]


@functools.lru_cache(maxsize=1 << 16)
def _solutions(values: tuple[int, ...]) -> dict[int, int]:
  """Reachable targets of sorted `values` -> distinct solution expressions.

  Exhaustive: at most 6*4 * 3*4 * 4 = 1152 leaves for four numbers. Only
  the counts are cached (the expressions would hold ~1 GB at 'hard').
  """
  out: dict[int, set[str]] = {}

  def walk(items):
    if len(items) == 1:
      out.setdefault(items[0][0], set()).add(items[0][1])
      return
    for move in _moves(items):
      walk(_after(items, move))

  walk([(v, str(v)) for v in values])
  return {t: len(e) for t, e in out.items()}


@functools.lru_cache(maxsize=1 << 16)
def _solvable(values: tuple[int, ...], target: int) -> bool:
  """True when sorted `values` can reach `target` (all of them used)."""
  return target in _solutions(values)


def split_of(numbers: Sequence[int], target: int) -> str:
  """The split a problem belongs to: a hash of its sorted numbers and target.

  Sorted, so the same problem asked in another order stays in its split.
  """
  key = " ".join(map(str, sorted(numbers))) + f" -> {target}"
  return generated.split_of_key(key)


def _line(move: _Move, left, depth: int, target: int) -> str:
  head = " " * depth + f"{move.a}{move.op}{move.b}={move.value}"
  if not left:
    verdict = " yes" if move.value == target else " no"
    return f"{head} vs {target}{verdict}"
  return head + ": " + " ".join(str(v) for v, _ in left)


def _count(rng: random.Random, p: float, limit: int) -> int:
  """A geometric count: k more with probability p each, at most `limit`."""
  k = 0
  while k < limit and rng.random() < p:
    k += 1
  return k


def _is_right(items, move: _Move, target: int) -> bool:
  left = _after(items, move)
  if len(left) == 1:
    return move.value == target
  return _solvable(tuple(sorted(v for v, _ in left)), target)


def _subset_in_order(rng, moves: list, k: int) -> list:
  """`k` of `moves` drawn at random, written in the order of `moves`."""
  return [moves[i] for i in sorted(rng.sample(range(len(moves)), k))]


def _dead_end(rng, items, target, d: Difficulty, depth: int, lines) -> None:
  """Writes a few moves below an unsolvable state, then gives up."""
  moves = _moves(items, unique=True)
  k = 1 + _count(rng, d.dead_end_breadth, len(moves) - 1)
  for move in _subset_in_order(rng, moves, k):
    left = _after(items, move)
    lines.append(_line(move, left if len(left) > 1 else [], depth, target))
    if len(left) > 1:
      _dead_end(rng, left, target, d, depth + 1, lines)


def _search(rng, items, target, d: Difficulty, depth: int, lines) -> str:
  """Writes the search from a solvable state; returns the solution."""
  moves = _moves(items, unique=True)
  at = rng.choice(
      [i for i, m in enumerate(moves) if _is_right(items, m, target)]
  )
  # Wrong turns come from the moves before the right one, in their order.
  wrong = [m for m in moves[:at] if not _is_right(items, m, target)]
  for move in _subset_in_order(
      rng, wrong, _count(rng, d.wrong_turn, len(wrong))
  ):
    left = _after(items, move)
    lines.append(_line(move, left if len(left) > 1 else [], depth, target))
    if len(left) > 1:
      _dead_end(rng, left, target, d, depth + 1, lines)
  move = moves[at]
  left = _after(items, move)
  lines.append(_line(move, left if len(left) > 1 else [], depth, target))
  if len(left) == 1:
    return move.expr
  return _search(rng, left, target, d, depth + 1, lines)


def _draw_problem(
    rng: random.Random, d: Difficulty, split: str
) -> tuple[tuple[int, ...], int]:
  """Draws numbers, then a target of `split` reachable in enough ways.

  The target is drawn among those that hash into `split`, not drawn and
  rejected: rejection would enumerate 16 number sets per held-out problem.
  """
  lo, hi = d.target_range
  while True:
    numbers = tuple(rng.randint(*d.number_range) for _ in range(d.count))
    sols = _solutions(tuple(sorted(numbers)))
    targets = sorted(
        t
        for t, count in sols.items()
        if lo <= t <= hi
        and count >= d.min_solutions
        and split_of(numbers, t) == split
    )
    if targets:
      return numbers, rng.choice(targets)


def make_example(
    split: str,
    index: int,
    *,
    seed: int = 0,
    difficulty: Difficulty | None = None,
) -> Example:
  """Returns example `index` of `split`, a pure function of its arguments.

  Problems are drawn from an RNG seeded by sha256(split, seed, index) and
  rejected until they hash into `split` (`split_of`), so a problem (its
  numbers in any order and its target) belongs to exactly one split.

  Args:
    split: one of 'train', 'validation', 'test'.
    index: non-negative example index.
    seed: dataset seed.
    difficulty: generator knobs; `Difficulty()` when None.

  Returns:
    The `Example`.
  """
  generated.check_split_index(split, index)
  d = difficulty or Difficulty()
  rng = generated.seeded_rng(f"countdown/{split}/{seed}/{index}")
  numbers, target = _draw_problem(rng, d, split)
  items = [(v, str(v)) for v in numbers]
  while True:
    lines: list[str] = []
    solution = _search(rng, items, target, d, 0, lines)
    if len(lines) <= d.max_lines:
      break
  rationale = "\n".join(lines + [f"{ANSWER_MARKER} {solution}"])
  listed = " ".join(map(str, numbers))
  return Example(
      question=_QUESTION.format(numbers=listed, target=target),
      rationale=rationale,
      answer=f"{target} from {listed}",
      numbers=numbers,
      target=target,
      solution=solution,
  )


def _problem(ex: Example) -> tuple[tuple[int, ...], int]:
  return tuple(sorted(ex.numbers)), ex.target


class _DistinctScan:
  """Raw indices of the first-seen problems of one split, grown on demand."""

  # Draws without a new problem before a split counts as exhausted.
  PATIENCE = 20000

  def __init__(self, split: str, seed: int, difficulty: Difficulty):
    self.split, self.seed, self.difficulty = split, seed, difficulty
    self.indices: list[int] = []
    self._seen: set[tuple[tuple[int, ...], int]] = set()
    self._next = 0

  def raw_index(self, index: int) -> int:
    while len(self.indices) <= index:
      ex = make_example(
          self.split, self._next, seed=self.seed, difficulty=self.difficulty
      )
      self._next += 1
      if _problem(ex) not in self._seen:
        self._seen.add(_problem(ex))
        self.indices.append(self._next - 1)
      elif self._next - (self.indices[-1] if self.indices else 0) > (
          self.PATIENCE
      ):
        raise ValueError(
            f"countdown {self.split}: asked for distinct problem {index}, but"
            f" only {len(self.indices)} were found at this difficulty"
        )
    return self.indices[index]


@functools.lru_cache(maxsize=64)
def _scan(split: str, seed: int, difficulty: Difficulty) -> _DistinctScan:
  return _DistinctScan(split, seed, difficulty)


def distinct_example(
    split: str,
    index: int,
    *,
    seed: int = 0,
    difficulty: Difficulty | None = None,
) -> Example:
  """The `index`-th distinct problem of `split` in `make_example` order.

  Draws repeat problems (2,400 test problems exist at the default level),
  so held-out sets are deduplicated: a repeated question would count twice
  in an accuracy and shrink its interval without adding evidence.
  """
  d = difficulty or Difficulty()
  raw = _scan(split, seed, d).raw_index(index)
  return make_example(split, raw, seed=seed, difficulty=d)


def make_dataset(
    split: str,
    n: int,
    *,
    seed: int = 0,
    difficulty: Difficulty | None = None,
    start: int = 0,
) -> list[Example]:
  """Examples `start .. start + n - 1` of `split`.

  'train' is `make_example` order (problems may repeat); 'validation' and
  'test' are `distinct_example` order (each problem once).
  """
  return CountdownTask(difficulty or Difficulty(), seed).dataset(
      split, n, start
  )


def num_solutions(numbers: Sequence[int], target: int) -> int:
  """How many distinct solution expressions the generator knows for a problem."""
  return _solutions(tuple(sorted(numbers))).get(target, 0)


def problem_counts(difficulty: Difficulty | None = None) -> dict[str, int]:
  """How many distinct problems (number multiset, target) each split holds.

  Exhaustive over the number multisets of `difficulty` (seconds at the
  default level): the size of the space `make_example` draws from.
  """
  d = difficulty or Difficulty()
  counts = dict.fromkeys(SPLITS, 0)
  lo, hi = d.target_range
  values = range(d.number_range[0], d.number_range[1] + 1)
  for numbers in itertools.combinations_with_replacement(values, d.count):
    for target, count in _solutions(numbers).items():
      if lo <= target <= hi and count >= d.min_solutions:
        counts[split_of(numbers, target)] += 1
  return counts


class _Malformed(ValueError):
  pass


def _parse(expr: str):
  """The syntax tree of `expr`: an int, or (op, left, right).

  Written by hand rather than with `ast`: Python's grammar accepts far more
  (unary minus, '**', floats, names) than the game does, and the game needs
  each intermediate result checked (`_evaluate`).

  Raises:
    _Malformed: `expr` is not an expression over + - * / and parentheses.
  """
  tokens = re.findall(r"\d+|[-+*/()]|\S", expr)
  pos = 0

  def peek():
    return tokens[pos] if pos < len(tokens) else None

  def take():
    nonlocal pos
    pos += 1
    return tokens[pos - 1]

  def atom():
    tok = take() if peek() is not None else None
    if tok == "(":
      tree = sum_()
      if peek() != ")":
        raise _Malformed("unbalanced parentheses")
      take()
      return tree
    if tok is None or not tok.isdigit() or (len(tok) > 1 and tok[0] == "0"):
      raise _Malformed(f"expected a number, got {tok!r}")
    return int(tok)

  def chain(operand, ops):
    tree = operand()
    while peek() in ops:
      op = take()
      tree = (op, tree, operand())
    return tree

  def product():
    return chain(atom, ("*", "/"))

  def sum_():
    return chain(product, ("+", "-"))

  tree = sum_()
  if peek() is not None:
    raise _Malformed(f"unexpected {peek()!r}")
  return tree


def _evaluate(tree, used: list[int]) -> fractions.Fraction:
  """Evaluates `tree` step by step (left to right), collecting its numbers.

  Raises:
    ValueError: a division by zero, a non-integer or a negative step.
  """
  if isinstance(tree, int):
    used.append(tree)
    return fractions.Fraction(tree)
  op, left, right = tree
  a, b = _evaluate(left, used), _evaluate(right, used)
  if op == "/" and b == 0:
    raise ValueError("division by zero")
  value = {"+": a + b, "-": a - b, "*": a * b}[op] if op != "/" else a / b
  if value.denominator != 1:
    raise ValueError(f"non-integer step {a}{op}{b}")
  if value < 0:
    raise ValueError(f"negative step {a}{op}{b}={value}")
  return value


def check_expression(
    expr: str, numbers: Sequence[int], target: int
) -> str | None:
  """Why `expr` does not solve the problem, or None when it does.

  Args:
    expr: an expression over integers with + - * / and parentheses.
    numbers: the problem's numbers; each must be used exactly once.
    target: the value `expr` must equal.

  Returns:
    None for a solution; otherwise one of 'malformed: ...', 'division by
    zero', 'non-integer step ...', 'non-positive step ...', 'uses ...
    (expected ...)', 'reaches ... (target ...)'.

  Examples:
    >>> check_expression("(9-5)*(3+3)", [3, 3, 5, 9], 24) is None
    True
    >>> check_expression("9/(5-5)+3+3", [3, 3, 5, 9], 24)
    'division by zero'
  """
  try:
    tree = _parse(expr)
  except _Malformed as e:
    return f"malformed: {e}"
  used: list[int] = []
  try:
    value = _evaluate(tree, used)
  except ValueError as e:
    return str(e)
  if sorted(used) != sorted(numbers):
    return f"uses {sorted(used)} (expected {sorted(numbers)})"
  if value != target:
    return f"reaches {value} (target {target})"
  return None


def extract_expression(text: str) -> str | None:
  """The expression after the last `####` (stripped), or None without one."""
  end = generated.last_marker_end(text)
  return None if end is None else text[end:].strip() or None


def parse_key(answer: str) -> tuple[tuple[int, ...], int] | None:
  """(numbers, target) of a grading key "24 from 3 5 7 9", or None."""
  match = _KEY_RE.fullmatch(str(answer).strip())
  if not match:
    return None
  return tuple(map(int, match.group(2).split())), int(match.group(1))


def is_correct(text: str, answer: str) -> bool:
  """True iff the expression after the last `####` solves problem `answer`.

  Args:
    text: a model completion (special tokens already removed).
    answer: the problem's grading key, "<target> from <numbers>".
  """
  problem, expr = parse_key(answer), extract_expression(text)
  if problem is None or expr is None:
    return False
  return check_expression(expr, *problem) is None


def verify_trace(example: Example) -> bool:
  """Recomputes every line of the written search and its final answer.

  Each move must combine two numbers present at its depth (the question's
  numbers at depth 0, else the numbers its parent line leaves), compute
  correctly, list the numbers left in order; a final move must write the
  problem's target after ' vs' and end in ' yes' exactly when it reaches
  it; and the trace must end with a solution.
  """
  lines = example.rationale.split("\n")
  if not lines or not is_correct(lines[-1], example.answer):
    return False
  states = {0: list(example.numbers)}
  for line in lines[:-1]:
    match = _MOVE_RE.match(line)
    if not match:
      return False
    depth = len(match.group(1))
    a, op, b, value = (
        match.group(2),
        match.group(3),
        match.group(4),
        match.group(5),
    )
    a, b, value = int(a), int(b), int(value)
    if depth not in states or _apply(a, op, b) != value:
      return False
    have = list(states[depth])
    for x in (a, b):
      if x not in have:
        return False
      have.remove(x)
    for deeper in [k for k in states if k > depth]:
      del states[deeper]
    if match.group(8) is not None:  # a final move: "= value vs target yes"
      claimed = int(match.group(7))
      if have or claimed != example.target:
        return False
      if (match.group(8) == "yes") != (value == example.target):
        return False
      continue
    left = [int(v) for v in match.group(6).split()]
    if sorted(left) != sorted(have + [value]) or left[-1] != value:
      return False
    states[depth + 1] = left
  return True


SEARCH_STATS = (
    "moves",
    "arithmetic_wrong",
    "finals",
    "target_wrong",
    "verdict_wrong",
    "repeated",
    "ended",
)


def search_stats(text: str, target: int) -> dict[str, int]:
  """Counts what a model's written search gets wrong, line by line.

  For reading a teacher's greedy searches while it trains: which of the
  trace's skills is missing (docs/tasks.md).

  Args:
    text: a response (special tokens removed).
    target: the problem's target.

  Returns:
    {'moves': lines of the move form `a op b = c ...`, 'arithmetic_wrong':
    moves whose c is not a op b, 'finals': moves ending ' vs t yes|no',
    'target_wrong': finals whose t is not `target`, 'verdict_wrong':
    finals whose yes / no disagrees with c == t, 'repeated': moves that
    repeat an earlier sibling (same line under the same parent), 'ended':
    1 if a `####` answer line follows}.
  """
  out = dict.fromkeys(SEARCH_STATS, 0)
  parents: dict[int, int] = {}  # depth -> index of the last line there
  seen: set[tuple[int, str]] = set()
  for index, line in enumerate(text.split("\n")):
    match = _MOVE_RE.match(line)
    if not match:
      out["ended"] |= extract_expression(line) is not None
      continue
    depth = len(match.group(1))
    a, op, b, c = match.group(2, 3, 4, 5)
    out["moves"] += 1
    out["arithmetic_wrong"] += _apply(int(a), op, int(b)) != int(c)
    parent = parents.get(depth - 1, -1)
    key = (parent, line.strip())
    out["repeated"] += key in seen
    seen.add(key)
    parents = {d: i for d, i in parents.items() if d < depth}
    parents[depth] = index
    if match.group(8) is not None:
      out["finals"] += 1
      written = int(match.group(7))
      out["target_wrong"] += written != target
      out["verdict_wrong"] += (match.group(8) == "yes") != (int(c) == written)
  return out


def wrong_rationale(example: Example) -> str:
  """A written search that ends in a wrong answer, for teacher contexts.

  The solution's last move is swapped for another operation on the same two
  numbers (its line claims ' yes' and the answer follows it), so the trace
  reads like a solution but misses the target: the wrong demonstration of
  the `correct_wrong` context.
  """
  lines = example.rationale.split("\n")
  *moves, _ = lines
  match = _MOVE_RE.match(moves[-1])
  indent, op = match.group(1), match.group(3)
  a, b = int(match.group(2)), int(match.group(4))
  digest = hashlib.sha256(example.question.encode()).digest()
  others = [
      o
      for o in OPS
      if o != op and _apply(a, o, b) not in (None, example.target)
  ]
  if others:
    new = others[digest[0] % len(others)]
    value = _apply(a, new, b)
  else:  # Only `op` is legal here: claim a nearby wrong value instead.
    new, value = op, example.target + 1 + digest[0] % 3
  moves[-1] = f"{indent}{a}{new}{b}={value} vs {example.target} yes"
  # The solution is `wrap(left) op wrap(right)`: its one operator outside
  # parentheses is the last move's, so swapping it gives a op' b.
  depth, top = 0, None
  for k, ch in enumerate(example.solution):
    depth += (ch == "(") - (ch == ")")
    if depth == 0 and ch in OPS:
      top = k
  wrong = example.solution[:top] + new + example.solution[top + 1 :]
  if new == op:  # no other legal operation: the claimed value is off
    wrong = f"{wrong}+{value - example.target}"
  return "\n".join(moves + [f"{ANSWER_MARKER} {wrong}"])


def context_fields(example: Example) -> dict[str, str]:
  """The fields a teacher context template can name, for one example.

  `solution` is the written search, `summary` its answer line, `wrong` a
  search ending in a wrong answer (`wrong_rationale`), `answer` the
  solution expression.
  """
  return {
      "solution": example.rationale,
      "summary": f"{ANSWER_MARKER} {example.solution}",
      "wrong": wrong_rationale(example),
      "answer": example.solution,
  }


@dataclasses.dataclass(frozen=True)
class CountdownTask(generated.SplitView):
  """A seeded, difficulty-bound view of the generator and its verifier.

  Attributes:
    difficulty: generator knobs.
    seed: dataset seed.
  """

  difficulty: Difficulty = dataclasses.field(default_factory=Difficulty)
  seed: int = 0

  def example(self, split: str, index: int) -> Example:
    """Example `index` of `split` (held-out splits hold each problem once)."""
    make = make_example if split == "train" else distinct_example
    return make(split, index, seed=self.seed, difficulty=self.difficulty)


def vocabulary_pieces() -> list[str]:
  """Every word-like piece the task emits, for the tokenizer."""
  text = _QUESTION.format(numbers="1 2", target=3) + " vs yes no"
  return sorted(set(re.findall(r" ?[A-Za-z]+", text)))
