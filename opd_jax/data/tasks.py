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
"""The built-in tasks by name: what `data.source=<task>` selects.

Each task is a generator with disjoint train / validation / test splits and
an exact verifier. Everything that takes a task name (the trainer's
`data.source`, `--task` / `--data` of the scripts, the tokenizer) looks it up
here, so adding a task is one `BuiltinTask` entry in `TASKS`:

  * `arithmetic`: multi-step word problems, ~17-token worked answers
    (`opd_jax.data.arithmetic`);
  * `countdown`: reach a target from four numbers, the response a written
    search with dead ends, median ~180 tokens (`opd_jax.data.countdown`).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, Callable, Mapping

from opd_jax.data import arithmetic
from opd_jax.data import countdown


@dataclasses.dataclass(frozen=True)
class BuiltinTask:
  """One built-in task.

  Attributes:
    name: the `data.source` / `--task` value.
    difficulties: its generator levels (classmethods of its Difficulty).
    make: (difficulty name, seed) -> a generator with
      `.example(split, index)`.
    context_fields: an example -> the fields a teacher context template can
      name (`solution`, `summary`, `wrong`, `answer`).
    answer_key: an example -> its reference answer as a string (what
      `is_correct` grades against).
    is_correct: (response, answer key) -> whether the response solves it.
    answer_problem: an answer key -> why it cannot be graded, or None.
    vocabulary_pieces: the word pieces its text uses, for the tokenizer.
    max_length: longest prompt + response it produces, in tokens (the
      tokenizer's `model_max_length`).
    held_out_size: (difficulty, split) -> how many distinct problems the
      held-out `split` holds, or None where its indices have no end (each a
      fresh draw).
  """

  name: str
  difficulties: tuple[str, ...]
  make: Callable[[str, int], Any]
  context_fields: Callable[[Any], Mapping[str, str]]
  answer_key: Callable[[Any], str]
  is_correct: Callable[[str, str], bool]
  answer_problem: Callable[[Any], str | None]
  vocabulary_pieces: Callable[[], list[str]]
  max_length: int
  held_out_size: Callable[[str, str], int | None] = lambda level, split: None

  def task(self, difficulty: str = "default", seed: int = 0):
    """The generator at `difficulty` (one of `difficulties`)."""
    check_difficulty(self.name, difficulty)
    return self.make(difficulty, seed)


def _integer_problem(answer: Any) -> str | None:
  if answer is not None and re.fullmatch(r"-?\d+", str(answer)):
    return None
  return f"answer {answer!r} is not an integer"


def _arithmetic_correct(text: str, answer: str) -> bool:
  return _integer_problem(answer) is None and arithmetic.is_correct(
      text, int(answer)
  )


def _countdown_problem(answer: Any) -> str | None:
  if answer is not None and countdown.parse_key(str(answer)):
    return None
  return f"answer {answer!r} is not a countdown problem ('24 from 3 5 7 9')"


# countdown.problem_counts of each level's held-out splits (the hard level
# takes a minute to count; tests/data/test_tasks.py checks the others).
_COUNTDOWN_HELD_OUT = {
    "easy": {"validation": 497, "test": 480},
    "default": {"validation": 2362, "test": 2400},
    "hard": {"validation": 28734, "test": 28495},
}


def _countdown_held_out(level: str, split: str) -> int | None:
  """Distinct problems of countdown's held-out `split` at `level`."""
  if split == "train" or level not in countdown.DIFFICULTIES:
    return None  # (check_difficulty names a level the task lacks)
  if level not in _COUNTDOWN_HELD_OUT:
    return countdown.problem_counts(getattr(countdown.Difficulty, level)())[
        split
    ]
  return _COUNTDOWN_HELD_OUT[level][split]


TASKS: dict[str, BuiltinTask] = {
    "arithmetic": BuiltinTask(
        name="arithmetic",
        difficulties=arithmetic.DIFFICULTIES,
        make=lambda level, seed: arithmetic.ArithmeticTask(
            getattr(arithmetic.Difficulty, level)(), seed=seed
        ),
        context_fields=arithmetic.context_fields,
        answer_key=lambda ex: str(ex.answer),
        is_correct=_arithmetic_correct,
        answer_problem=_integer_problem,
        vocabulary_pieces=arithmetic.vocabulary_pieces,
        max_length=256,
    ),
    "countdown": BuiltinTask(
        name="countdown",
        difficulties=countdown.DIFFICULTIES,
        make=lambda level, seed: countdown.CountdownTask(
            getattr(countdown.Difficulty, level)(), seed=seed
        ),
        context_fields=countdown.context_fields,
        answer_key=lambda ex: ex.answer,
        is_correct=countdown.is_correct,
        answer_problem=_countdown_problem,
        vocabulary_pieces=countdown.vocabulary_pieces,
        max_length=1024,
        # Held-out splits hold each problem once (distinct_example).
        held_out_size=_countdown_held_out,
    ),
}
NAMES = tuple(TASKS)


def get(name: str, *, field: str = "task") -> BuiltinTask:
  """The task called `name`; one clear ValueError line naming `field` if none."""
  if name not in TASKS:
    raise ValueError(f"{field}: expected one of {NAMES}, got {name!r}")
  return TASKS[name]


def check_difficulty(
    name: str, difficulty: str, *, field: str = "difficulty"
) -> None:
  """Raises one ValueError line unless task `name` has level `difficulty`."""
  levels = get(name).difficulties
  if difficulty not in levels:
    raise ValueError(
        f"{field}: task {name!r} has difficulties {levels}, got {difficulty!r}"
    )


# The most problems one evaluation draws from a held-out split without end
# (arithmetic's). 100,000 is 20x the largest public math test sets (MATH's
# 5,000) and pins accuracy to +-0.3% (95%); a million more problems change
# nothing measurable but take hours of decoding with no end in sight, which
# is what `--num_questions=1e8` did, silently (issue 38).
MAX_DRAWN_PROBLEMS = 100_000


def check_num_examples(
    name: str,
    difficulty: str,
    split: str,
    num_examples: int,
    start: int = 0,
    *,
    field: str = "num_examples",
) -> None:
  """Refuses more problems of a held-out split than it holds or than anyone
  evaluates on.

  Countdown's held-out splits hold each problem once and only so many
  exist (2,400 test problems at the default level): asking for more would
  search for problems that do not exist. Arithmetic's draw fresh problems
  without end: more than `MAX_DRAWN_PROBLEMS` would run for hours. The
  training split is not bounded (a run reads only the steps' batches).

  Raises:
    ValueError: one line naming `field`, the number available and asked.
  """
  size = get(name).held_out_size(difficulty, split)
  if size is None and split != "train" and num_examples > MAX_DRAWN_PROBLEMS:
    raise ValueError(
        f"{field}: expected at most {MAX_DRAWN_PROBLEMS} ({name}'s {split}"
        " problems are drawn without end; more would take hours and measure"
        " accuracy no better than +-0.3%), got"
        f" {num_examples}"
    )
  if size is not None and start + num_examples > size:
    raise ValueError(
        f"{field}: expected at most {max(size - start, 0)} ({name}"
        f" ({difficulty}) has {size} distinct {split} problems"
        + (f", from {start}" if start else "")
        + f"), got {num_examples}"
    )


@functools.lru_cache(maxsize=16)
def reference_lengths(
    name: str, difficulty: str, n: int = 256
) -> tuple[int, ...]:
  """Sorted token lengths (with <eos>) of the first `n` train references."""
  # Imported here: the tokenizer module builds its vocabulary from TASKS.
  from opd_jax.data.tokenizer import count_tokens  # pylint: disable=g-import-not-at-top

  task = get(name).task(difficulty)
  return tuple(
      sorted(
          count_tokens(task.example("train", i).rationale) + 1 for i in range(n)
      )
  )


def check_response_budget(
    name: str,
    difficulty: str,
    max_new_tokens: int,
    *,
    field: str = "max_new_tokens",
) -> None:
  """Refuses a response budget no reference solution of the task fits in.

  Below the shortest of 256 reference responses every rollout is cut
  before its answer, so no response can be graded correct: a run that
  silently cannot learn the task.

  Raises:
    ValueError: one line naming `field`, the shortest and median lengths.
  """
  lengths = reference_lengths(name, difficulty)
  if max_new_tokens < lengths[0]:
    raise ValueError(
        f"{field}: expected >= {lengths[0]} (the shortest {name}"
        f" ({difficulty}) reference response, in tokens with <eos>; median"
        f" {lengths[len(lengths) // 2]}, longest {lengths[-1]}), got"
        f" {max_new_tokens}"
    )


def check_tokenizer(name: str, tokenizer, *, role: str = "tokenizer") -> None:
  """Refuses a tokenizer that maps some of task `name`'s words to <unk>.

  A model trained on another task's tokenizer reads the words it lacks as
  <unk> and trains without error on prompts it cannot read.

  Args:
    name: a task name.
    tokenizer: an HF tokenizer.
    role: what the tokenizer is, for the message (e.g. 'config.student').

  Raises:
    ValueError: one line naming `role`, the first unknown pieces and how to
      get the task's tokenizer.
  """
  unk = tokenizer.unk_token_id
  if unk is None:
    return
  missing = [
      piece
      for piece in get(name).vocabulary_pieces()
      if unk in tokenizer(piece, add_special_tokens=False)["input_ids"]
  ]
  if missing:
    raise ValueError(
        f"{role}: its tokenizer reads {name}'s words {missing[:5]} as <unk>;"
        " expected a tokenizer with the task's vocabulary (a model trained"
        f" with `scripts/train_teacher.py --task={name}` has one)"
    )
