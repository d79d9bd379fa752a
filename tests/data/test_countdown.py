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
"""The Countdown task: its verifier on hand-checked cases, its statistics."""

import dataclasses
import re
import statistics

import pytest

from opd_jax.data import countdown
from opd_jax.data import tasks
from opd_jax.data import tokenizer as task_tokenizer
from opd_jax.data.sources import TaskSource
from opd_jax.evaluation.graders import TaskGrader, grader_for

# Each checked by hand; None means a solution.
EXPRESSIONS = [
    ("(9-5)*(3+3)", (3, 3, 5, 9), 24, None),
    ("(3+3)*(9-5)", (9, 5, 3, 3), 24, None),  # another surface form
    ("9*3-5+2", (2, 3, 5, 9), 24, None),  # precedence: (9*3)-5+2
    ("((8/2)*6)*1", (1, 2, 6, 8), 24, None),
    ("9*3-5", (3, 5, 9, 2), 24, "uses [3, 5, 9] (expected [2, 3, 5, 9])"),
    ("9*3-5+2+2", (2, 3, 5, 9), 24, "uses"),  # a number used twice
    ("9*3+5-2", (2, 3, 5, 9), 24, "reaches 30 (target 24)"),
    ("9/(5-5)*3*3", (3, 3, 5, 9), 24, "division by zero"),
    ("(9/2)*8-12", (2, 8, 9, 12), 24, "non-integer step 9/2"),
    ("7/2*2+17", (2, 2, 7, 17), 24, "non-integer step 7/2"),
    ("3-5+26", (3, 5, 26), 24, "negative step 3-5=-2"),
    ("(9-5*(3+3)", (3, 3, 5, 9), 24, "malformed: unbalanced"),
    ("9 5 3 3", (3, 3, 5, 9), 24, "malformed: unexpected '5'"),
    ("9--5", (5, 9), 14, "malformed: expected a number, got '-'"),
    ("", (3, 3, 5, 9), 24, "malformed: expected a number, got None"),
    ("09+15", (9, 15), 24, "malformed: expected a number, got '09'"),
    ("9.5*2+5", (2, 5, 9), 24, "malformed"),
    ("2**3*3", (2, 3, 3), 24, "malformed"),
]


@pytest.mark.parametrize("expr,numbers,target,why", EXPRESSIONS)
def test_check_expression_on_hand_checked_cases(expr, numbers, target, why):
  got = countdown.check_expression(expr, numbers, target)
  if why is None:
    assert got is None
  else:
    assert got is not None and got.startswith(why), got


# A hand-written search: two dead ends, then the solution.
TRACE = """9*3=27: 5 7 27
 27-7=20: 5 20
  20+5=25 vs 24 no
9-5=4: 3 7 4
 7*3=21: 4 21
  21+4=25 vs 24 no
 7-3=4: 4 4
  4*4=16 vs 24 no
 4*3=12: 7 12
  12+7=19 vs 24 no
 7+3=10: 4 10
  10+4=14 vs 24 no
 7-4=3: 3 3
  3+3=6 vs 24 no
 4+3=7: 7 7
  7*7=49 vs 24 no
9+7=16: 3 5 16
 5+3=8: 16 8
  16+8=24 vs 24 yes
#### (9+7)+(5+3)"""


def _example(rationale, numbers=(3, 5, 7, 9), target=24):
  return countdown.Example(
      question="Use 3 5 7 9 to make 24.",
      rationale=rationale,
      answer=f"{target} from {' '.join(map(str, numbers))}",
      numbers=numbers,
      target=target,
      solution=rationale.rsplit("#### ", 1)[-1],
  )


@pytest.mark.parametrize(
    "edit,valid",
    [
        (lambda t: t, True),
        (lambda t: t.replace("27-7=20", "27-7=21"), False),  # bad arithmetic
        (lambda t: t.replace("=25 vs 24 no", "=25 vs 24 yes"), False),  # false
        (lambda t: t.replace("=24 vs 24 yes", "=24 vs 24 no"), False),
        (
            lambda t: t.replace("=24 vs 24", "=24 vs 25"),
            False,
        ),  # not the target
        (lambda t: t.replace("=24 vs 24 yes", "=24 yes"), False),  # no target
        (lambda t: t.replace(": 5 7 27", ": 5 27"), False),  # lost a number
        (lambda t: t.replace(" 5+3=8", " 5+2=7"), False),  # 2 is not there
        (lambda t: t.replace("#### (9+7)+(5+3)", "#### (9+7)+(5-3)"), False),
        (lambda t: t.replace("#### ", "### "), False),  # no answer marker
        (lambda t: t.replace("  16+8", " 16+8"), False),  # wrong depth
    ],
)
def test_verify_trace_on_hand_checked_traces(edit, valid):
  assert countdown.verify_trace(_example(edit(TRACE))) is valid


def test_search_stats_on_a_hand_written_search():
  assert countdown.search_stats(TRACE, 24) == dict(
      moves=19,
      arithmetic_wrong=0,
      finals=8,
      target_wrong=0,
      verdict_wrong=0,
      repeated=0,
      ended=1,
  )
  bad = "\n".join([
      "9*3=27: 5 7 27",
      " 27-7=20: 5 20",
      "  20+5=26 vs 24 no",  # arithmetic
      "  20+5=26 vs 24 no",  # repeated sibling
      "  20*5=100 vs 42 no",  # target copied wrong
      "  20-5=15 vs 24 yes",  # verdict
      "9*3=27: 5 7 27",  # repeated at depth 0
      " 27-7=20: 5 20",  # a new parent: not a repeat
  ])
  assert countdown.search_stats(bad, 24) == dict(
      moves=8,
      arithmetic_wrong=2,
      finals=4,
      target_wrong=1,
      verdict_wrong=1,
      repeated=2,
      ended=0,
  )


def test_is_correct_reads_the_last_marker_and_the_key():
  key = "24 from 3 5 7 9"
  assert countdown.is_correct("#### (9+7)+(5+3)", key)
  assert countdown.is_correct("#### 9*3-5 #### (9+7)+(5+3)\n", key)
  assert not countdown.is_correct("#### (9+7)+(5+3) ####", key)
  assert not countdown.is_correct("(9+7)+(5+3)", key)  # no marker
  assert not countdown.is_correct("##### (9+7)+(5+3)", key)
  assert not countdown.is_correct("#### (9+7)+(5+3)", "24 from 3 5 7")
  assert not countdown.is_correct("#### (9+7)+(5+3)", "24")  # not a key
  assert countdown.parse_key(" 24 from 3 5 7 9 ") == ((3, 5, 7, 9), 24)


@pytest.fixture(scope="module")
def default_examples():
  return {
      split: countdown.make_dataset(split, 240 if split == "train" else 120)
      for split in countdown.SPLITS
  }


def test_generated_traces_are_valid_searches(default_examples):
  for examples in default_examples.values():
    for ex in examples:
      assert countdown.verify_trace(ex), ex.rationale
      assert ex.rationale.endswith(f"#### {ex.solution}")
      assert countdown.split_of(ex.numbers, ex.target) in countdown.SPLITS


def test_length_and_branching_statistics(default_examples):
  d = countdown.Difficulty()
  examples = default_examples["train"]
  lengths = sorted(
      task_tokenizer.count_tokens(ex.rationale) + 1 for ex in examples
  )
  n = len(lengths)
  assert lengths[n // 2] >= 150, lengths[n // 2]  # the median
  assert lengths[int(0.9 * n)] <= 512, lengths[int(0.9 * n)]  # its p90
  # Decision points: every move line is one; dead ends are the ' no' lines
  # a trace recovers from.
  dead_ends = [ex.rationale.count(" no\n") for ex in examples]
  assert statistics.median(dead_ends) >= 3
  assert sum(k > 0 for k in dead_ends) >= 0.8 * n
  assert all(ex.rationale.count("\n") <= d.max_lines for ex in examples)
  # Several valid answers: at least min_solutions, most more than 2.
  sols = [countdown.num_solutions(ex.numbers, ex.target) for ex in examples]
  assert min(sols) >= d.min_solutions
  assert statistics.median(sols) >= 3


def _sibling_orders(ex):
  """For each move line, (depth, its index among its state's moves in the
  generator's order), and whether it repeats an earlier sibling."""
  states, out = {0: list(ex.numbers)}, []
  for line in ex.rationale.split("\n")[:-1]:
    depth = len(line) - len(line.lstrip(" "))
    a, op, b = re.match(r" *(\d+)([-+*/])(\d+)=", line).groups()
    moves = countdown._moves([(v, str(v)) for v in states[depth]], unique=True)
    index = [(m.a, m.op, m.b) for m in moves].index((int(a), op, int(b)))
    out.append((depth, index))
    for deeper in [k for k in states if k > depth]:
      del states[deeper]
    if ": " in line:
      states[depth + 1] = [int(v) for v in line.split(": ")[1].split()]
  return out


def test_siblings_follow_one_order_and_never_repeat(default_examples):
  """Under each state the moves tried come in the generator's fixed order,
  so no trace tries a move twice (a model can always make progress)."""
  for ex in default_examples["train"][:120]:
    last = {}
    for depth, index in _sibling_orders(ex):
      assert index > last.get(depth, -1), ex.rationale
      last = {k: v for k, v in last.items() if k < depth}
      last[depth] = index


def test_splits_are_disjoint_and_held_out_sets_distinct(default_examples):
  problems = {
      split: [(tuple(sorted(e.numbers)), e.target) for e in examples]
      for split, examples in default_examples.items()
  }
  for split in ("validation", "test"):
    assert len(set(problems[split])) == len(problems[split])
  sets = {k: set(v) for k, v in problems.items()}
  assert not sets["train"] & sets["test"]
  assert not sets["train"] & sets["validation"]
  assert not sets["validation"] & sets["test"]


def test_the_default_level_has_over_1000_test_problems():
  counts = countdown.problem_counts()
  assert counts["test"] >= 1000 and counts["validation"] >= 1000, counts
  assert counts["train"] > 10 * counts["test"]


def test_generation_is_a_pure_function_of_its_arguments():
  a = countdown.make_example("train", 7, seed=3)
  assert a == countdown.make_example("train", 7, seed=3)
  assert a != countdown.make_example("train", 7, seed=4)
  assert (
      countdown.make_dataset("test", 3, start=2)
      == countdown.make_dataset("test", 5)[2:]
  )


def test_difficulty_knobs_are_checked():
  with pytest.raises(ValueError, match="Difficulty.number_range"):
    countdown.Difficulty(number_range=(0, 9))
  with pytest.raises(ValueError, match="Difficulty.wrong_turn"):
    countdown.Difficulty(wrong_turn=1.0)
  tight = dataclasses.replace(countdown.Difficulty.easy(), max_lines=12)
  ex = countdown.make_example("train", 0, difficulty=tight)
  assert ex.rationale.count("\n") <= 12 and countdown.verify_trace(ex)


def test_context_fields_and_the_wrong_solution(default_examples):
  for ex in default_examples["test"][:60]:
    fields = countdown.context_fields(ex)
    assert fields["solution"] == ex.rationale
    assert countdown.is_correct(fields["summary"], ex.answer)
    assert not countdown.is_correct(fields["wrong"], ex.answer)
    assert fields["wrong"].split("\n")[:-2] == ex.rationale.split("\n")[:-2]
    assert fields["wrong"].split("\n")[-2].endswith(" yes")


def test_tokenizer_encodes_every_trace_without_unknowns(tmp_path):
  tok = task_tokenizer.load_task_tokenizer(
      task_tokenizer.build_task_tokenizer(tmp_path, "countdown")
  )
  assert tok.model_max_length == 1024
  for ex in countdown.make_dataset("train", 40, difficulty=None):
    text = ex.question + ex.rationale
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids
    assert tok.decode(ids) == text
    assert len(ids) == task_tokenizer.count_tokens(text)
  # Characters keep the arithmetic tokenizer's ids; only words differ.
  arithmetic = task_tokenizer.task_vocabulary("arithmetic")
  vocab = task_tokenizer.task_vocabulary("countdown")
  chars = len(task_tokenizer.SPECIAL_TOKENS) + len(task_tokenizer.CHARS) + 1
  assert vocab[:chars] == arithmetic[:chars]
  assert set(vocab[chars:]) == {"Use", " to", " make", " vs", " yes", " no"}


def test_task_source_records_and_grading():
  source = TaskSource("test", 12, task="countdown")
  assert source.name == "countdown:test[0:+12]"
  grader = grader_for(source)
  assert isinstance(grader, TaskGrader) and "countdown" in grader.name
  records = list(source.records())
  refs = [r.reference_response for r in records]
  answers = [r.answer for r in records]
  assert grader(refs, answers) == [True] * 12
  wrong = [r.context["wrong"] for r in records]
  assert grader(wrong, answers) == [False] * 12
  assert grader.unusable(answers) == [None] * 12
  assert grader.unusable(["24", None])[0].startswith("answer '24' is not a")
  assert re.fullmatch(r"Use (\d+ ){3}\d+ to make \d+\.", records[0].question)


def test_task_registry_errors_are_one_line():
  with pytest.raises(ValueError) as e:
    tasks.get("countdwon")
  assert str(e.value) == (
      "task: expected one of ('arithmetic', 'countdown'), got 'countdwon'"
  )
  with pytest.raises(ValueError, match="task 'countdown' has difficulties"):
    tasks.check_difficulty("countdown", "two_step")
  with pytest.raises(ValueError) as e:
    tasks.check_response_budget("countdown", "default", 16)
  assert str(e.value).startswith("max_new_tokens: expected >= ")
  assert "\n" not in str(e.value)
  lengths = tasks.reference_lengths("countdown", "default")
  tasks.check_response_budget("countdown", "default", lengths[0])
