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
"""Property tests of the arithmetic task generator and its verifier."""

import random
import re

import pytest

from opd_jax.data import arithmetic
from opd_jax.data.arithmetic import Difficulty

DIFFICULTIES = {
    "easy": Difficulty.easy(),
    "two_step": Difficulty.two_step(),
    "default": Difficulty.default(),
    "hard": Difficulty.hard(),
}


def _cases(n=200, seeds=(0, 1)):
  for name, d in DIFFICULTIES.items():
    for seed in seeds:
      for split in arithmetic.SPLITS:
        for i in range(n // len(arithmetic.SPLITS)):
          yield name, d, arithmetic.make_example(
              split, i, seed=seed, difficulty=d
          )


@pytest.fixture(scope="module")
def cases():
  return list(_cases())


def test_rationales_are_correct_step_by_step(cases):
  for name, d, ex in cases:
    steps = re.findall(r"(\d+)([+\-*])(\d+)=(\d+)\.", ex.rationale)
    assert d.min_steps <= len(steps) <= d.max_steps, (name, ex)
    start = int(re.search(r"has (\d+)", ex.question).group(1))
    value = start
    for a, op, b, c in steps:
      assert int(a) == value, ex
      value = eval(f"{a}{op}{b}")  # Independent of the generator's _apply.
      assert value == int(c), ex
      assert 0 <= value <= d.max_value, ex
      assert op in d.ops, ex
    assert value == ex.answer
    assert ex.rationale.endswith(f"#### {ex.answer}")
    assert arithmetic.verify_rationale(ex)
    assert arithmetic.is_correct(ex.rationale, ex.answer)
    # Every operand is mentioned in the question, in order.
    numbers = [int(x) for x in re.findall(r"\d+", ex.question)]
    assert numbers == [start] + [int(b) for _, _, b, _ in steps], ex


def test_every_named_difficulty_is_a_preset():
  assert set(arithmetic.DIFFICULTIES) == set(DIFFICULTIES)
  for name in arithmetic.DIFFICULTIES:
    assert isinstance(getattr(Difficulty, name)(), Difficulty)


def test_verify_rationale_rejects_wrong_step():
  ex = arithmetic.make_example("train", 3)
  first = re.search(r"=(\d+)\.", ex.rationale)
  bad = ex.rationale[: first.start(1)] + str(int(first.group(1)) + 1)
  bad += ex.rationale[first.end(1) :]
  assert not arithmetic.verify_rationale(
      arithmetic.Example(ex.question, bad, ex.answer)
  )


def test_verifier_accepts_exactly_the_answer(cases):
  rng = random.Random(0)
  for _, _, ex in cases[::7]:
    a = ex.answer
    assert arithmetic.is_correct(f"#### {a}", a)
    assert arithmetic.is_correct(f"  ####{a} \n", a)
    assert arithmetic.is_correct(f"#### 0 wait. #### {a}", a)  # Last wins.
    for wrong in (a - 1, a + 1, a + rng.randint(2, 100), -a - 1):
      assert not arithmetic.is_correct(f"#### {wrong}", a)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "9",
        "the answer is 9",
        "### 9",
        "##### 9",
        "#### nine",
        "#### ",
        "####",
        "#### 9.",
        "#### 9 apples",
        "#### 9 #### ",
        "#### 9.0",
        "#### +9",
        "#### 09",
        "#### 9,000",
        "#### 1e3",
        "#### 99999999999999999999",
    ],
)
def test_malformed_outputs_are_wrong(text):
  assert arithmetic.extract_answer(text) is None
  assert not arithmetic.is_correct(text, 9)


def test_extract_answer_forms():
  assert arithmetic.extract_answer("a. #### 12") == 12
  assert arithmetic.extract_answer("#### -3") == -3
  assert arithmetic.extract_answer("#### 0") == 0
  assert arithmetic.extract_answer("#### 1 #### 2") == 2
  assert arithmetic.extract_answer(None) is None


def test_splits_are_disjoint():
  questions = {}
  for split in arithmetic.SPLITS:
    for seed in (0, 1):
      questions.setdefault(split, set()).update(
          ex.question for ex in arithmetic.make_dataset(split, 300, seed=seed)
      )
  train, val, test = (questions[s] for s in arithmetic.SPLITS)
  assert not train & test and not train & val and not val & test
  # Disjoint by construction: the chain's hash names the split.
  for ex in arithmetic.make_dataset("test", 50):
    steps = re.findall(r"(\d+)([+\-*])(\d+)=", ex.rationale)
    start = int(steps[0][0])
    chain = [(op, int(b)) for _, op, b in steps]
    assert arithmetic._split_of(start, chain) == "test"


def test_deterministic():
  a = arithmetic.make_dataset("train", 20, seed=3)
  assert a == arithmetic.make_dataset("train", 20, seed=3)
  assert a[5:] == arithmetic.make_dataset("train", 15, seed=3, start=5)
  assert a != arithmetic.make_dataset("train", 20, seed=4)
  task = arithmetic.ArithmeticTask(seed=3)
  assert task.dataset("train", 20) == a
  it = task.iterate("train", start=2)
  assert [next(it) for _ in range(3)] == a[2:5]
  assert task.score(a[0].rationale, a[0].answer) == 1.0


def test_default_difficulty_is_multi_step_with_carries():
  exs = arithmetic.make_dataset("train", 300)
  steps = [len(re.findall(r"=", ex.rationale)) for ex in exs]
  assert set(steps) == {2, 3, 4}
  # Carries/borrows in most problems: the ones digits overflow somewhere.
  carries = 0
  for ex in exs:
    ops = re.findall(r"(\d+)([+-])(\d+)=", ex.rationale)
    carries += any(
        (int(a) % 10 + int(b) % 10 >= 10)
        if op == "+"
        else (int(a) % 10 < int(b) % 10)
        for a, op, b in ops
    )
  assert carries / len(exs) > 0.6


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(min_steps=0), "min_steps"),
        (dict(min_steps=3, max_steps=2), "min_steps"),
        (dict(ops=("/",)), "ops"),
        (dict(operand_range=(5, 2)), "operand_range"),
        (dict(start_range=(1, 5000)), "start_range"),
    ],
)
def test_difficulty_validation(kwargs, field):
  with pytest.raises(ValueError, match=field):
    Difficulty(**kwargs)


def test_bad_split_and_index():
  with pytest.raises(ValueError, match="split"):
    arithmetic.make_example("dev", 0)
  with pytest.raises(ValueError, match="index"):
    arithmetic.make_example("train", -1)
