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
"""scripts/diagnose.py: a small run on a tiny pair, and one-line errors on bad input."""

import json
import os
import subprocess
import sys

import pytest
import scripts_worker  # tests/, on the path beside conftest.py

from opd_jax import testing
from opd_jax.models import hf_io

REPO = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)
SCRIPT = os.path.join(REPO, "scripts", "diagnose.py")
# Small enough to run in seconds once compiled.
SMALL = [
    "--num_rollouts=4",
    "--top_c=2",
    "--continuations=4",
    "--nodes_per_window=1",
    "--budget=40",
    # The shortest 'easy' reference is 11 tokens: a shorter budget is
    # refused (no rollout could reach an answer).
    "--max_new_tokens=12",
]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
  return testing.tiny_distillation_pair(str(tmp_path_factory.mktemp("pair")))


def _run(args, cwd):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  return subprocess.run(
      [sys.executable, SCRIPT, *args],
      cwd=cwd,
      env=env,
      capture_output=True,
      text=True,
      timeout=900,
  )


@pytest.mark.slow
def test_runs_on_the_task_and_on_a_jsonl(pair, tmp_path):
  out = tmp_path / "report"
  proc = _run(
      [
          f"--student={pair['student']}",
          f"--teacher={pair['teacher']}",
          "--task=arithmetic",
          "--num_questions=2",
          f"--out={out}",
          *SMALL,
      ],
      tmp_path,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "report:" in proc.stdout
  with open(out / "nodes.json") as f:
    data = json.load(f)
  assert len(data["questions"]) == 2 and data["nodes"]
  assert all(q["rollouts"] <= 40 for q in data["questions"])
  assert (out / "report.md").read_text().startswith("# Gradient alignment")
  # HF dirs and a jsonl graded by the math-verify pool (evaluation's
  # grader_for: a non-integer reference answer).
  questions = tmp_path / "q.jsonl"
  questions.write_text(
      json.dumps({"problem": "What is 1/2?", "solution": "\\frac{1}{2}"}) + "\n"
  )
  proc = _run(
      [
          f"--student={pair['student']}",
          f"--teacher={pair['teacher']}",
          f"--task={questions}",
          "--question_field=problem",
          "--answer_field=solution",
          "--grading_workers=1",
          f"--out={out}",
          *SMALL,
      ],
      tmp_path,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(out / "nodes.json") as f:
    assert json.load(f)["questions"][0]["answer"] == "\\frac{1}{2}"
  with open(out / "summary.json") as f:
    assert json.load(f)["meta"]["grader"] == "math-verify"
  assert sorted(os.listdir(tmp_path)) == ["q.jsonl", "report"]


@pytest.mark.slow
def test_several_teacher_configurations_in_one_report(pair, tmp_path):
  out = tmp_path / "report"
  proc = _run(
      [
          f"--student={pair['student']}",
          f"--teacher={pair['teacher']}",
          "--teachers=teacher,self:solution,teacher:summary",
          "--num_questions=2",
          f"--out={out}",
          *SMALL,
      ],
      tmp_path,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  names = ["teacher", "self:solution", "teacher:summary"]
  for name in names:
    assert f"{name}: Alignment (rkl)" in proc.stdout or (
        f"{name}: Correct vs incorrect" in proc.stdout
    ), proc.stdout
  with open(out / "summary.json") as f:
    data = json.load(f)
  assert list(data["teachers"]) == names and data["meta"]["teachers"] == names
  assert list(data["paired"]) == names[1:]
  nodes = {}
  for i, name in enumerate(names):
    with open(
        out / "teachers" / f"{i}-{name.replace(':', '_')}" / "nodes.json"
    ) as f:
      nodes[name] = json.load(f)["nodes"]
  # The same nodes under every configuration; the teachers' numbers differ.
  key = lambda n: (n["question"], n["rollout"], n["position"], n["children"])
  assert [key(n) for n in nodes["self:solution"]] == [
      key(n) for n in nodes["teacher"]
  ]
  assert any(
      a["teacher_prob"] != b["teacher_prob"]
      for a, b in zip(nodes["teacher"], nodes["self:solution"])
  )
  assert "by teacher configuration" in (out / "report.md").read_text()


def _bad_inputs(pair, tmp_path):
  workdir = tmp_path / "workdir"
  workdir.mkdir()
  (workdir / "config.json").write_text(json.dumps({"student": "x"}))
  other = testing.random_model(testing.tiny_config("qwen3", vocab_size=96))
  hf_io.save_hf(other, str(tmp_path / "teacher96"))
  empty = tmp_path / "empty.jsonl"
  empty.write_text("")
  no_answers = tmp_path / "no_answers.jsonl"
  no_answers.write_text(json.dumps({"question": "1+1?"}) + "\n")
  answers = tmp_path / "answers.jsonl"
  answers.write_text(json.dumps({"question": "1+1?", "answer": "2"}) + "\n")
  s, t = f"--student={pair['student']}", f"--teacher={pair['teacher']}"
  return [
      ([f"--student={workdir}", t], "a workdir with no checkpoint"),
      (
          [s, f"--teacher={tmp_path / 'teacher96'}"],
          "vocabulary 96 differs from the student's 80",
      ),
      ([s, t, f"--task={empty}"], "the question file is empty"),
      (
          [s, t, "--budget=10"],
          "--budget: 10 rollouts is smaller than the tree needs",
      ),
      ([s, t, "--task=gsm8k"], "'gsm8k': no such task or file"),
      ([s, t, f"--task={no_answers}"], "has no answer in field 'answer'"),
      ([s, t, "--teachers=self"], "has no distillation direction"),
      ([s, t, "--teachers=teacher,self:nope"], "template 'nope' is not one"),
      ([s, t, "--teachers=teacher,teacher"], "'teacher' is given twice"),
      ([s, "--teachers=teacher"], "--teacher: required by the --teachers"),
      (
          [s, t, f"--task={answers}", "--teachers=self:solution"],
          "names {solution}, which the data does not provide",
      ),
  ]


@pytest.mark.slow
def test_bad_input_is_one_line_and_writes_nothing(
    pair, tmp_path, tmp_path_factory
):
  cases = _bad_inputs(pair, tmp_path)
  before = sorted(os.listdir(tmp_path))
  # Every case in a fork of one warmed-up process (tests/scripts_worker.py);
  # the case's own flags last: absl keeps the last value of a flag.
  argvs = [
      [SCRIPT, *SMALL, f"--out={tmp_path / 'report'}", *args]
      for args, _ in cases
  ]
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  results = scripts_worker.run_in_forks(
      argvs, str(tmp_path_factory.mktemp("forks")), env
  )
  for (args, message), r in zip(cases, results):
    assert r["rc"] == 2, (args, r["stderr"][-2000:])
    errors = [
        line for line in r["stderr"].splitlines() if line.startswith("error:")
    ]
    assert len(errors) == 1 and message in errors[0], (message, r["stderr"])
    assert "Traceback" not in r["stderr"]
  assert sorted(os.listdir(tmp_path)) == before  # nothing written
