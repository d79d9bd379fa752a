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
"""data.source=countdown end to end: training, OPSD contexts, evaluate.py."""

import json
import os
import subprocess
import sys

import pytest

from opd_jax import testing
from opd_jax.trainer import loop
from opd_jax.trainer.config import start_run

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
  return testing.tiny_distillation_pair(
      str(tmp_path_factory.mktemp("pair")), task="countdown"
  )


def _config(pair, **overrides):
  c = testing.tiny_train_config(
      pair,
      total_steps=2,
      checkpoint_every=2,
      eval_every=2,
      eval_examples=4,
      batch_size=2,
      max_prompt_len=24,
      # The shortest default-level reference is 55 tokens with <eos>.
      max_new_tokens=56,
      **overrides,
  )
  c.data.update(source="countdown", difficulty="default", num_examples=16)
  return c


def test_trains_and_evaluates_on_countdown(pair, tmp_path):
  workdir = tmp_path / "run"
  metrics = loop.train_and_evaluate(start_run(_config(pair)), str(workdir))
  assert 0.0 <= metrics["eval/accuracy"] <= 1.0
  with open(workdir / "config.json") as f:
    assert json.load(f)["data"]["source"] == "countdown"


def test_a_self_teacher_reads_the_tasks_context(pair, tmp_path):
  c = _config(
      pair,
      method="rkl",
      teacher="self",
      **{
          "self_teacher.weights": "initial",
          "teacher_context.template": "summary",
          "teacher_context.max_prompt_len": 64,
      },
  )
  metrics = loop.train_and_evaluate(start_run(c), str(tmp_path / "opsd"))
  assert 0.0 <= metrics["eval/accuracy"] <= 1.0


@pytest.mark.slow
def test_evaluate_script_takes_the_runs_task(pair, tmp_path):
  workdir = tmp_path / "run"
  loop.train_and_evaluate(start_run(_config(pair)), str(workdir))
  proc = subprocess.run(
      [
          sys.executable,
          os.path.join(_ROOT, "scripts", "evaluate.py"),
          f"--model={workdir}",
          "--num_questions=2",
          "--max_new_tokens=56",
          f"--out_dir={tmp_path / 'eval'}",
      ],
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "task countdown (the run's), difficulty default (the run's)" in (
      proc.stdout
  )
  rows = [
      json.loads(l)
      for l in (tmp_path / "eval" / "responses.jsonl").read_text().splitlines()
  ]
  assert [r["answer"].split(" from ")[1].count(" ") for r in rows] == [3, 3]
