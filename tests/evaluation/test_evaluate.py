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
"""evaluate(): accuracy and pass@k over k samples per question; the CLI script."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import scripts_worker  # tests/, on the path beside conftest.py
import transformers

from opd_jax import testing
from opd_jax import data as data_lib
from opd_jax.evaluation import evaluate as evaluation
from opd_jax.models import load_hf
from opd_jax.rollouts import Sampling, sample

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


@pytest.mark.parametrize(
    "n,c,k,want",
    [
        (4, 1, 1, 0.25),
        (4, 0, 2, 0.0),
        (4, 4, 1, 1.0),
        (5, 2, 2, 0.7),
        (3, 1, 3, 1.0),
    ],
)
def test_pass_at_k(n, c, k, want):
  assert evaluation.pass_at_k(n, c, k) == pytest.approx(want)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
  return testing.tiny_distillation_pair(str(tmp_path_factory.mktemp("pair")))


def test_evaluate_counts_every_question_once(pair):
  tok = transformers.AutoTokenizer.from_pretrained(pair["student"])
  model = load_hf(pair["student"])
  data = data_lib.PromptDataset(
      data_lib.TaskSource("test", 7), tok, max_prompt_len=48
  )
  seen = []

  def grader(texts, answers):
    seen.extend(answers)
    return [len(t) % 3 == 0 for t in texts]  # arbitrary but deterministic

  key = jax.random.PRNGKey(0)
  result = evaluation.evaluate(
      model,
      data,
      tok,
      grader,
      key=key,
      batch_size=4,
      num_samples=2,
      max_new_tokens=6,
      sampling=Sampling(temperature=1.0),
      eos_ids=(2,),
  )
  assert sorted(seen) == sorted(data.answers * 2)  # padding rows not graded
  # Recompute from the same samples.
  correct = np.zeros((7, 2), bool)
  for start in (0, 4):
    rows = np.minimum(np.arange(start, start + 4), 6)
    batch = data.batch(np.where(np.arange(start, start + 4) < 7, rows, 0))
    for j in range(2):
      out = sample(
          model,
          batch["prompt"],
          batch["prompt_mask"],
          jax.random.fold_in(jax.random.fold_in(key, start), j),
          max_new_tokens=6,
          sampling=Sampling(temperature=1.0),
          eos_ids=(2,),
          pad_id=data.pad_id,
      )
      for i, (r, m) in enumerate(
          zip(np.asarray(out.response), np.asarray(out.response_mask))
      ):
        if start + i < 7:
          text = tok.decode(r[m].tolist(), skip_special_tokens=True)
          correct[start + i, j] = len(text) % 3 == 0
  assert result.accuracy == pytest.approx(correct.mean())
  assert result.pass_at_k == pytest.approx(correct.any(axis=1).mean())
  assert result.num_questions == 7 and result.num_samples == 2
  np.testing.assert_array_equal(result.correct, correct)
  assert [len(s) for s in result.samples] == [2] * 7
  assert result.responses == [s[0] for s in result.samples]
  for name in ("num_samples", "batch_size", "max_new_tokens"):
    with pytest.raises(
        ValueError, match=f"evaluate: {name} expected an int >= 1, got 0"
    ):
      evaluation.evaluate(
          model,
          data,
          tok,
          grader,
          key=key,
          **{"num_samples": 1, "batch_size": 4, "max_new_tokens": 6, name: 0},
      )


@pytest.mark.slow
def test_evaluate_script_grades_math_with_the_pool(pair, tmp_path):
  data = tmp_path / "math.jsonl"
  data.write_text(
      "\n".join(
          json.dumps(r)
          for r in [
              {"problem": "What is 1/2 + 1/4?", "answer": "\\frac{3}{4}"},
              {"problem": "Compute 2+2.", "answer": "4"},
          ]
      )
      + "\n"
  )
  proc = subprocess.run(
      [
          sys.executable,
          os.path.join(_ROOT, "scripts", "evaluate.py"),
          f"--model={pair['student']}",
          f"--data={data}",
          "--question_field=problem",
          "--num_samples=2",
          "--temperature=1.0",
          "--max_new_tokens=8",
          f"--out_dir={tmp_path}/out",
      ],
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result["questions"] == 2 and result["k"] == 2
  assert "pass@2" in result and 0.0 <= result["accuracy"] <= 1.0
  assert result["grader"] == "math-verify"
  assert "timed out" in proc.stdout
  # Scores and every response are written beside each other.
  with open(tmp_path / "out" / "scores.json") as f:
    assert json.load(f) == result
  with open(tmp_path / "out" / "responses.jsonl") as f:
    rows = [json.loads(line) for line in f]
  assert [(r["index"], r["sample"]) for r in rows] == [
      (0, 0),
      (0, 1),
      (1, 0),
      (1, 1),
  ]
  assert rows[0]["answer"] == "\\frac{3}{4}"
  assert sum(r["correct"] for r in rows) / 4 == result["accuracy"]


# (flags; {student} and {tmp} filled in, message fragment).
CLI_ERRORS = [
    (["--num_samples=0"], "--num_samples: expected an integer >= 1, got 0"),
    (["--batch_size=0"], "--batch_size: expected an integer >= 1, got 0"),
    (["--max_new_tokens=-1"], "--max_new_tokens: expected an integer >= 1"),
    (["--model={tmp}/nope"], "--model: '{tmp}/nope' is not a directory"),
    (
        ["--data={tmp}/missing.jsonl"],
        (
            "--data: '{tmp}/missing.jsonl' is neither a built-in task"
            " ('arithmetic', 'countdown') nor an existing file or directory"
        ),
    ),
    (["--data={tmp}/q.txt"], "got '.txt'; for plain text"),
    (
        ["--data={tmp}/noanswer.jsonl"],
        (
            "noanswer.jsonl: answer_field='answer'"
            " is not a field; fields are ['question']"
        ),
    ),
    (
        ["--data={tmp}/partial.jsonl"],
        "partial.jsonl line 2: no reference answer",
    ),
]


@pytest.fixture(scope="module")
def cli_errors(pair, tmp_path_factory):
  """{case index: (names, {rc, stdout, stderr})}: every CLI_ERRORS case run
  as a user runs it, each in a fork of one warmed-up process
  (tests/scripts_worker.py: the script as `__main__`, its own argv), so a
  case costs the script's checks, not a fresh JAX start-up (8 subprocesses
  took 44 s of CI time, 5.5 s each)."""
  cases, argvs = {}, []
  for i, (flags, _) in enumerate(CLI_ERRORS):
    tmp = tmp_path_factory.mktemp(f"case{i}")  # each case its own out_dir
    (tmp / "q.txt").write_text("What is 2+2?\n")
    (tmp / "noanswer.jsonl").write_text('{"question": "2+2?"}\n')
    (tmp / "partial.jsonl").write_text(
        '{"question": "2+2?", "answer": 4}\n{"question": "3+3?"}\n'
    )
    names = dict(student=pair["student"], tmp=str(tmp))
    args = [f.format(**names) for f in flags]
    if not any(a.startswith("--model=") for a in args):
      args.append(f"--model={pair['student']}")
    argvs.append(
        [os.path.join(_ROOT, "scripts", "evaluate.py"), *args]
        + [f"--out_dir={tmp}/out"]
    )
    cases[i] = (names, tmp)
  results = scripts_worker.run_in_forks(
      argvs, str(tmp_path_factory.mktemp("forks"))
  )
  return {i: (*cases[i], r) for i, r in enumerate(results)}


@pytest.mark.parametrize(
    "i,flags,match", [(i, *case) for i, case in enumerate(CLI_ERRORS)]
)
def test_evaluate_script_errors_are_one_line(cli_errors, i, flags, match):
  del flags  # in the test's id; the case is run by `cli_errors`
  names, tmp, r = cli_errors[i]
  assert r["rc"] == 2, (r["stdout"], r["stderr"][-2000:])
  lines = r["stderr"].strip().splitlines()
  assert [l for l in lines if l.startswith("error: ")] == lines[-1:], lines
  assert "Traceback" not in r["stderr"]
  assert match.format(**names) in lines[-1]
  assert not os.path.exists(tmp / "out")
