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
"""scripts/token_map.py (HF dirs, a workdir, bad input); token pieces."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import scripts_worker  # tests/, on the path beside conftest.py

from opd_jax import testing
from opd_jax.trainer.config import start_run

ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)
SCRIPT = os.path.join(ROOT, "scripts", "token_map.py")


@pytest.fixture(scope="module")
def pair_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp("pair")
  paths = testing.tiny_distillation_pair(str(directory))
  # A teacher with 16 more vocabulary rows: the check reads config.json
  # before any weight, so editing it is enough.
  wide = directory / "wide_teacher"
  shutil.copytree(paths["teacher"], wide)
  config = json.loads((wide / "config.json").read_text(encoding="utf-8"))
  config["vocab_size"] = 96
  (wide / "config.json").write_text(json.dumps(config), encoding="utf-8")
  paths["wide_teacher"] = str(wide)
  return paths


def _run(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run(
      [sys.executable, SCRIPT, *args],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=600,
      check=False,
  )


def _bad_inputs(pair, tmp):
  """(name, args, words the error line must hold) for each bad input."""
  empty_run = tmp / "empty_run"
  empty_run.mkdir()
  config = testing.tiny_train_config(pair)
  no_ckpt = tmp / "no_checkpoint"
  no_ckpt.mkdir()
  (no_ckpt / "config.json").write_text(config.to_json(), encoding="utf-8")
  empty_q = tmp / "empty.jsonl"
  empty_q.write_text("\n", encoding="utf-8")
  context_run = tmp / "context_run"
  context_run.mkdir()
  config.teacher_context.template = "solution"
  (context_run / "config.json").write_text(config.to_json(), encoding="utf-8")
  hf = [f"--student={pair['student']}"]
  return [
      (
          "a run with a teacher context",
          [f"--workdir={context_run}"],
          [str(context_run), "--config.token_map_every=N"],
      ),
      (
          "not a workdir",
          [f"--workdir={empty_run}"],
          [str(empty_run), "not an opd_jax training workdir"],
      ),
      (
          "no checkpoint",
          [f"--workdir={no_ckpt}"],
          ["no restorable checkpoint", str(no_ckpt)],
      ),
      (
          "vocabulary",
          hf + [f"--teacher={pair['wide_teacher']}"],
          ["teacher vocab_size=96", "student vocab_size=80"],
      ),
      (
          "empty questions",
          hf + [f"--teacher={pair['teacher']}", f"--questions={empty_q}"],
          ["--questions", str(empty_q), "no questions"],
      ),
      ("no teacher", hf, ["--teacher"]),
  ]


def test_token_pieces_with_the_task_tokenizer(pair_dir):
  import transformers  # pylint: disable=g-import-not-at-top
  from opd_jax.diagnostics import token_map  # pylint: disable=g-import-not-at-top

  tok = transformers.AutoTokenizer.from_pretrained(pair_dir["tokenizer"])
  ids = tok("Tom has 12 apples. #### 42")["input_ids"] + [tok.eos_token_id]
  pieces = token_map.token_pieces(tok, ids)
  assert pieces[:3] == ["Tom", " has", " "]
  assert "".join(pieces) == tok.decode(ids, skip_special_tokens=False)


@pytest.mark.slow
def test_bad_input_is_one_error_line_and_writes_nothing(
    pair_dir, tmp_path, tmp_path_factory
):
  out = tmp_path / "out"
  cases = _bad_inputs(pair_dir, tmp_path)
  # Every case in a fork of one warmed-up process (tests/scripts_worker.py).
  results = scripts_worker.run_in_forks(
      [[SCRIPT, *args, f"--out={out / 'map.html'}"] for _, args, _ in cases],
      str(tmp_path_factory.mktemp("forks")),
      dict(os.environ, JAX_PLATFORMS="cpu"),
  )
  for (name, _, needles), r in zip(cases, results):
    assert r["rc"] == 2, (name, r["stderr"][-3000:])
    errors = [l for l in r["stderr"].splitlines() if l.startswith("error:")]
    assert len(errors) == 1, (name, r["stderr"][-3000:])
    for needle in needles:
      assert needle in errors[0], (name, errors[0])
  assert not out.exists()


@pytest.mark.slow
def test_pages_from_hf_dirs_and_from_a_workdir(pair_dir, tmp_path):
  page = tmp_path / "hf" / "map.html"
  questions = tmp_path / "q.jsonl"
  questions.write_text(
      json.dumps({"question": "Tom has 3 apples.", "answer": "3"}) + "\n",
      encoding="utf-8",
  )
  proc = _run(
      f"--student={pair_dir['student']}",
      f"--teacher={pair_dir['teacher']}",
      f"--questions={questions}",
      "--num_rollouts=2",
      "--max_new_tokens=6",
      "--topd",
      f"--out={page}",
      f"--json_out={tmp_path / 'map.json'}",
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"wrote {page}: 2 rollouts" in proc.stdout
  text = page.read_text(encoding="utf-8")
  assert text.count('class="rollout"') == 2 and "reference answer" in text
  data = json.loads((tmp_path / "map.json").read_text(encoding="utf-8"))
  assert [r["prompt"].count("Tom has 3 apples.") for r in data["rollouts"]] == [
      1,
      1,
  ]
  assert '<option value="topd_false_alarm"' in text
  assert data["meta"]["settings.topd.window"] == 50

  # A two-step run: its newest student, its teacher and its settings.
  from opd_jax.trainer.loop import train_and_evaluate  # pylint: disable=g-import-not-at-top

  workdir = tmp_path / "run"
  config = testing.tiny_train_config(
      pair_dir, total_steps=2, checkpoint_every=2, max_new_tokens=12
  )
  config.tip.rho = 0.25
  train_and_evaluate(start_run(config), str(workdir))
  page = tmp_path / "run_map.html"
  proc = _run(
      f"--workdir={workdir}",
      "--num_rollouts=3",
      f"--out={page}",
      f"--json_out={tmp_path / 'run.json'}",
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "(step 2)" in page.read_text(encoding="utf-8")
  data = json.loads((tmp_path / "run.json").read_text(encoding="utf-8"))
  assert data["meta"]["settings.tip.rho"] == 0.25
  assert "topd_candidate" not in page.read_text(encoding="utf-8")  # a TIP run
  assert all(r["verdict"] in (True, False) for r in data["rollouts"])
  for r in data["rollouts"]:
    assert sum(r["selectors"]["tip_soft_or"]) == len(r["ids"]) // 4
