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
"""A file source without eval_path evaluates on held-out rows of its file."""

import json
import os

import pytest

from opd_jax import cli
from opd_jax import testing
from opd_jax.data import sources
from opd_jax.trainer import builders
from opd_jax.trainer import config as config_lib
from opd_jax.trainer import loop
from opd_jax.trainer.config import start_run


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
  return testing.tiny_distillation_pair(str(tmp_path_factory.mktemp("pair")))


def _rows(n, answers=True):
  return [
      {
          "question": (
              f"Ann has {i} coins. She buys 3 more. How many coins does she"
              " have?"
          ),
          **({"answer": str(i + 3)} if answers else {}),
      }
      for i in range(n)
  ]


def _file_config(pair, tmp_path, rows, **overrides):
  path = tmp_path / "train.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  c = testing.tiny_train_config(pair, **overrides)
  c.data.source, c.data.path = "file", str(path)
  return c


def test_held_out_rows_are_evaluated_and_never_trained_on(
    pair, tmp_path, capsys
):
  c = _file_config(
      pair, tmp_path, _rows(40), total_steps=2, eval_every=2, checkpoint_every=2
  )
  workdir = str(tmp_path / "run")
  trainer = loop.Trainer(start_run(c), workdir)
  out = capsys.readouterr().out
  assert "warning:" not in out, out
  assert (
      f"evaluation rows: {c.data.path} (4 of 40 questions held out, 0.1)"
      " (not trained on)"
  ) in out
  _, held = sources.hold_out(sources.FileSource(c.data.path), 0.1)
  expected = [r.question for r in held.records()]
  assert trainer.eval_data.questions == expected
  assert len(trainer.train_data.questions) == 36
  assert not set(trainer.train_data.questions) & set(expected)
  last = trainer.run()
  assert "eval/accuracy" in last
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    evals = [json.loads(l) for l in f if "eval/accuracy" in l]
  assert [e["step"] for e in evals] == [2], evals


def test_no_evaluation_no_held_out_rows(pair, tmp_path):
  # eval_every=0: every row is trained on.
  c = _file_config(pair, tmp_path, _rows(40), eval_every=0)
  run = config_lib.to_run_config(c)
  tokenizer = builders.load_tokenizer(run.models)
  assert len(builders.train_dataset(run, tokenizer)) == 40


def test_file_without_answers_is_trained_whole_and_said_once(
    pair, tmp_path, capsys
):
  cli._WARNED.clear()  # pylint: disable=protected-access (earlier cases')
  c = _file_config(pair, tmp_path, _rows(40, answers=False), eval_every=2)
  run = config_lib.to_run_config(c)
  tokenizer = builders.load_tokenizer(run.models)
  assert len(builders.train_dataset(run, tokenizer)) == 40
  assert builders.eval_dataset(run, tokenizer) is None
  lines = capsys.readouterr().out.splitlines()
  assert lines == [
      f"warning: config.data.path {c.data.path} has no answer field"
      " (config.data.answer_field='answer'): nothing is held out and this run"
      " will not evaluate (config.eval_every=2); give config.data.eval_path"
      " or a file with answers"
  ], lines


def test_eval_fraction_that_cannot_act(pair, tmp_path, capsys):
  c = testing.tiny_train_config(pair)
  c.data.eval_fraction = 0.2
  with pytest.raises(
      ValueError,
      match=r"^config.data.eval_fraction: expected 0.1 with the built-in task",
  ):
    config_lib.check_active(c)
  c = _file_config(pair, tmp_path, _rows(4), eval_every=2)
  c.data.eval_path, c.data.eval_fraction = c.data.path, 0.2
  with pytest.raises(
      ValueError,
      match=(
          r"^--config.data.eval_fraction=0.2: holds rows of config.data.path"
          r" out for evaluation, but the run evaluates on"
          r" config.data.eval_path=.*: it has no effect; drop one of them$"
      ),
  ):
    config_lib.check_active(c, overridden=("data.eval_fraction",))
  c.data.eval_fraction = 1.0
  with pytest.raises(
      ValueError,
      match=r"^config.data.eval_fraction: expected a fraction in \[0, 1\)",
  ):
    config_lib.to_run_config(c)


def test_a_run_saved_before_the_field_held_nothing_out():
  saved = {"data": {"source": "file", "path": "t.jsonl", "eval_path": ""}}
  assert config_lib.with_defaults(saved).data.eval_fraction == 0.0
  task = {"data": {"source": "arithmetic"}}
  assert config_lib.with_defaults(task).data.eval_fraction == 0.1


def test_a_saved_dataset_dict_is_evaluated_at_eval_split(pair, tmp_path):
  # As evaluate.py reads one at --split; the trainer read its 'train'.
  import datasets  # pylint: disable=g-import-not-at-top

  rows = _rows(6)
  saved = str(tmp_path / "dict")
  datasets.DatasetDict({
      "train": datasets.Dataset.from_list(rows[:4]),
      "test": datasets.Dataset.from_list(rows[4:]),
  }).save_to_disk(saved)
  c = _file_config(pair, tmp_path, rows)
  c.data.eval_path = saved
  run = config_lib.to_run_config(c)
  got = builders.prompt_source(run, train=False)
  assert [r.question for r in got.records()] == [
      r["question"] for r in rows[4:]
  ]
  c.data.eval_split = "train"
  got = builders.prompt_source(config_lib.to_run_config(c), train=False)
  assert len(list(got.records())) == 4
