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
"""The catalogue of a user's mistakes: each one clear line, nothing lost.

Every case builds a run the way `scripts/train.py` does and expects a
`ValueError` / `OSError` (which the CLI prints as one `error: ...` line,
exit code 2) whose message names the thing that is wrong. The failures all
come before any compile and before the workdir is written to.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from opd_jax import cli
from opd_jax import testing
from opd_jax.trainer import loop, plan
from opd_jax.trainer import builders
from opd_jax.trainer import config as config_lib
from opd_jax.trainer.config import start_run

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
  return testing.tiny_distillation_pair(str(tmp_path_factory.mktemp("pair")))


def _copy(pair, role, tmp_path, name):
  out = str(tmp_path / name)
  shutil.copytree(pair[role], out)
  return out


def _jsonl(tmp_path, name, lines):
  path = tmp_path / name
  path.write_bytes(b"\n".join(lines) + b"\n")
  return str(path)


def _broken_config_json(pair, tmp_path, c):
  c.teacher = _copy(pair, "teacher", tmp_path, "t")
  with open(os.path.join(c.teacher, "config.json"), "w") as f:
    f.write("{not json")


def _no_tokenizer_files(pair, tmp_path, c):
  c.student = _copy(pair, "student", tmp_path, "s")
  for name in os.listdir(c.student):
    if name.startswith(("tokenizer", "special_tokens", "vocab")):
      os.remove(os.path.join(c.student, name))


def _swapped_teacher_vocab(pair, tmp_path, c):
  c.teacher = _copy(pair, "teacher", tmp_path, "t")
  path = os.path.join(c.teacher, "tokenizer.json")
  with open(path) as f:
    tok = json.load(f)
  vocab = tok["model"]["vocab"]
  a, b = sorted(vocab, key=vocab.get)[10:12]
  vocab[a], vocab[b] = vocab[b], vocab[a]
  with open(path, "w") as f:
    json.dump(tok, f)


def _a_file(tmp_path, name):
  (tmp_path / name).write_text("{}")
  return str(tmp_path / name)


def _file_data(tmp_path, c, path, **fields):
  c.data.source, c.data.path = "file", path
  c.data.update(fields)


CASES = {
    "splash attention on cpu": (
        lambda p, t, c: c.update(attention="splash"),
        (
            "config.attention: 'splash' cannot run on cpu (it needs tpu);"
            " 'auto' would choose 'blockwise'"
        ),
    ),
    "unknown attention": (
        lambda p, t, c: c.update(attention="flash"),
        "config.attention: expected one of ('auto', 'dense', 'blockwise',",
    ),
    "remat offload on cpu": (
        lambda p, t, c: c.update(remat="offload"),
        "config.remat: 'offload' moves activations to host memory",
    ),
    "negative seed": (
        lambda p, t, c: c.update(seed=-1),
        "config.seed: expected an integer >= 0",
    ),
    "adam b2 above 1": (
        lambda p, t, c: c.optimizer.update(b2=1.5),
        "config.optimizer.b2: expected a value in [0, 1)",
    ),
    "rho out of range": (
        lambda p, t, c: c.tip.update(rho=1.5),
        "config.tip.rho must be in (0, 1]",
    ),
    "too long for the model": (
        lambda p, t, c: c.update(max_prompt_len=505),
        (
            "config.max_prompt_len + config.max_new_tokens: expected <= the"
            " student's max_position_embeddings (512), got 505 + 12"
        ),
    ),
    "topd: more candidates than response tokens": (
        lambda p, t, c: c.update(method="topd")
        or c.topd.update(max_candidates=13),
        (
            "config.topd.max_candidates must be <= the response length T = 12"
            " (config.max_new_tokens), got 13"
        ),
    ),
    "topd: branches too long for the model": (
        lambda p, t, c: c.update(method="topd") or c.topd.update(window=500),
        (
            "config.max_prompt_len + config.max_new_tokens + the topd stage's"
            " branches: expected <= the student's max_position_embeddings"
            " (512), got 552"
        ),
    ),
    "topd: negative lambda_traj": (
        lambda p, t, c: c.update(method="topd")
        or c.topd.update(lambda_traj=-1.0),
        "config.topd.lambda_traj must be in [0, inf]",
    ),
    "topd: OT quantile above 1": (
        lambda p, t, c: c.update(method="topd")
        or c.topd.update(ot_quantile=1.5),
        "config.topd.ot_quantile must be in [0, 1]",
    ),
    "topd: empty window": (
        lambda p, t, c: c.update(method="topd") or c.topd.update(window=0),
        "config.topd.window must be an int >= 1",
    ),
    "unknown task": (
        lambda p, t, c: c.data.update(source="countdwon"),
        (
            "config.data.source: expected one of ('arithmetic', 'countdown',"
            " 'file'), got 'countdwon'"
        ),
    ),
    "a difficulty the task lacks": (
        lambda p, t, c: c.data.update(
            source="countdown", difficulty="two_step"
        ),
        (
            "config.data.difficulty: expected one of task 'countdown''s"
            " ('easy', 'default', 'hard'), got 'two_step'"
        ),
    ),
    "a response budget below the task's shortest trace": (
        lambda p, t, c: c.data.update(source="countdown", difficulty="default"),
        (
            "config.max_new_tokens: expected >= 55 (the shortest countdown"
            " (default) reference response"
        ),
    ),
    "a tokenizer without the task's words": (
        lambda p, t, c: c.data.update(source="countdown")
        or c.update(max_new_tokens=64),
        (
            "config.student: its tokenizer reads countdown's words [' make',"
            " ' no', ' to', ' vs', ' yes'] as <unk>"
        ),
    ),
    "config.json not JSON": (_broken_config_json, "t/config.json"),
    "no tokenizer files": (_no_tokenizer_files, "has no tokenizer files"),
    "tokenizers disagree": (
        _swapped_teacher_vocab,
        "student and teacher tokenizers disagree on 2",
    ),
    "tokenizers disagree: names the config field": (
        _swapped_teacher_vocab,
        "(--config.allow_tokenizer_mismatch=True to proceed anyway)",
    ),
    "student is a file": (
        lambda p, t, c: c.update(student=_a_file(t, "s.json")),
        "s.json' is a file; expected an HF checkpoint directory",
    ),
    "misspelled top-level field": (
        lambda p, t, c: c.update(eval_evry=10),
        "config.eval_evry: no such field; did you mean config.eval_every?",
    ),
    "malformed jsonl line": (
        lambda p, t, c: _file_data(
            t, c, _jsonl(t, "q.jsonl", [b'{"question": "a"}', b'{"question": '])
        ),
        "q.jsonl line 2: not valid JSON",
    ),
    "non-UTF-8 jsonl": (
        lambda p, t, c: _file_data(
            t,
            c,
            _jsonl(
                t, "q.jsonl", [b'{"question": "a"}', b'{"question": "\xff"}']
            ),
        ),
        "q.jsonl line 2: not UTF-8",
    ),
    "a .txt data file": (
        lambda p, t, c: _file_data(t, c, _jsonl(t, "q.txt", [b"1 + 1"])),
        ".jsonl",
    ),
    "a file of one question has none to hold out for evaluation": (
        lambda p, t, c: _file_data(
            t,
            c,
            _jsonl(t, "q.jsonl", [b'{"question": "1 + 1 =", "answer": 2}']),
        ),
        (
            "q.jsonl has 1 distinct question(s); holding some out for"
            " evaluation needs at least 2"
        ),
    ),
    "eval file without answers": (
        lambda p, t, c: _file_data(
            t,
            c,
            _jsonl(t, "q.jsonl", [b'{"question": "1 + 1 ="}']),
            eval_path=_jsonl(t, "e.jsonl", [b'{"question": "2 + 2 ="}']),
        ),
        "e.jsonl",
    ),
    "a forgotten teacher is not a random preset": (
        lambda p, t, c: c.update(teacher="", teacher_preset="qwen3_0p6b"),
        (
            "config.teacher: expected an HF checkpoint directory (or 'self')"
            " beside config.student="
        ),
    ),
    "a forgotten teacher: names the preset it would have built": (
        lambda p, t, c: c.update(teacher="", teacher_preset="qwen3_0p6b"),
        (
            "got ''; config.teacher_preset='qwen3_0p6b' alone would be a"
            " teacher with random weights"
        ),
    ),
    "a forgotten student beside a teacher": (
        lambda p, t, c: c.update(
            student="", student_preset="qwen3_0p6b", tokenizer=p["student"]
        ),
        "config.student: expected an HF checkpoint directory beside",
    ),
    "data.path with the built-in task": (
        lambda p, t, c: c.data.update(
            path=_jsonl(t, "q.jsonl", [b'{"question": "1 + 1 ="}'])
        ),
        (
            "config.data.path: expected '' with the built-in task"
            " config.data.source='arithmetic'"
        ),
    ),
    "eval_path with the built-in task": (
        lambda p, t, c: c.data.update(
            eval_path=_jsonl(t, "e.jsonl", [b'{"question": "1", "answer": 2}'])
        ),
        "config.data.eval_path: expected '' with the built-in task",
    ),
    "skip_ungradable with the built-in task": (
        lambda p, t, c: c.data.update(skip_ungradable=True),
        "config.data.skip_ungradable: expected False with the built-in task",
    ),
    "a context column with the built-in task": (
        lambda p, t, c: c.data.update(solution_field="solution"),
        "config.data.solution_field: expected '' with the built-in task",
    ),
    "a method block deleted by the config file": (
        lambda p, t, c: c.__delitem__("tip"),
        (
            "config.tip: missing (the config file deleted or replaced it);"
            " start from default_config()"
        ),
    ),
    "a batch of more tokens than an int32 counts": (
        lambda p, t, c: c.update(batch_size=10**8),
        (
            "config.batch_size: expected a batch of at most 2^31 - 1 tokens"
            " (batch_size x (max_prompt_len + max_new_tokens)), got 100000000"
        ),
    ),
    "a warm-up as long as the run, refused before any compile": (
        lambda p, t, c: c.optimizer.update(warmup_steps=4),
        (
            "config.optimizer.warmup_steps: expected an integer <"
            " config.total_steps=4 (the warm-up must end inside the run), got 4"
        ),
    ),
    "a step count beyond int32": (
        lambda p, t, c: c.update(total_steps=10**10),
        "config.total_steps: expected an integer <= 2^31 - 1, got 10000000000",
    ),
    "workdir is a file": (
        lambda p, t, c: (t / "run").write_text("x"),
        "is a file, not a directory",
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_gets_a_clear_error(pair, tmp_path, name):
  mutate, fragment = CASES[name]
  c = testing.tiny_train_config(pair, eval_every=2)
  mutate(pair, tmp_path, c)
  workdir = tmp_path / "run"
  with pytest.raises((ValueError, OSError)) as e:
    loop.Trainer(start_run(c), str(workdir))
  assert fragment in str(e.value), str(e.value)
  assert "\n" not in str(e.value).strip()
  assert not (workdir / "checkpoints").exists()


def test_another_methods_field_on_the_command_line_is_refused(pair, tmp_path):
  # `--config.tip.rho=0.2 --config.method=rkl`: the run never reads it.
  c = testing.tiny_train_config(pair, method="rkl", **{"tip.rho": 0.2})
  with pytest.raises(
      ValueError,
      match=r"^--config\.tip\.rho: a field of method 'tip', but config\.method"
      r" is 'rkl': it has no effect in this run; drop it or set"
      r" --config\.method=tip$",
  ):
    loop.Trainer(start_run(c, overridden=("tip.rho",)), str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_settings_without_effect_are_warned_once(pair, capsys):
  # From a config file (switching a config's method is a documented use),
  # a file source without evaluation rows (none held out).
  c = testing.tiny_train_config(
      pair, method="rkl", eval_every=2, **{"tip.rho": 0.2}
  )
  _file_data(None, c, "q.jsonl", eval_fraction=0.0)
  cli._WARNED.clear()  # pylint: disable=protected-access (earlier cases')
  config_lib.check_active(c)
  config_lib.check_active(c)
  lines = capsys.readouterr().out.splitlines()
  assert lines == [
      (
          "warning: config.tip.rho: a field of method 'tip', but config.method"
          " is 'rkl': it has no effect in this run"
      ),
      (
          "warning: config.data.eval_path is '' and config.data.eval_fraction"
          " is 0: this run will not evaluate (config.eval_every=2 has nothing"
          " to score); give a file with answers to evaluate on, or hold rows"
          " out"
      ),
  ], lines


def test_dry_run_preset_in_place_of_a_missing_directory_says_so(pair, capsys):
  cli._WARNED.clear()  # pylint: disable=protected-access
  c = testing.tiny_train_config(pair)
  c.student, c.student_preset = "/no/such/student", "qwen3_0p6b"
  run = config_lib.to_run_config(c)
  _, where = builders.model_config(run, "student", allow_preset_fallback=True)
  assert where == "preset qwen3_0p6b (in place of /no/such/student)"
  assert capsys.readouterr().out == (
      "warning: config.student: '/no/such/student' is not a directory on"
      " this machine; using the shapes of config.student_preset='qwen3_0p6b'"
      " in its place\n"
  )
  with pytest.raises(OSError, match="'/no/such/student' does not exist"):
    builders.model_config(run, "student", allow_preset_fallback=False)


def test_skip_ungradable_drops_evaluation_rows(pair, tmp_path, capsys):
  c = testing.tiny_train_config(pair, eval_every=2)
  rows = [
      b'{"question": "1 + 1 =", "answer": "2"}',
      b'{"question": "x", "answer": "banana"}',
  ]
  _file_data(
      tmp_path,
      c,
      _jsonl(tmp_path, "q.jsonl", rows[:1]),
      eval_path=_jsonl(tmp_path, "e.jsonl", rows),
  )
  tokenizer = builders.load_tokenizer(c)
  with pytest.raises(ValueError, match="answer 'banana' is text"):
    loop.Trainer(start_run(c), str(tmp_path / "run"))
  c.data.skip_ungradable = True
  run = config_lib.to_run_config(c)
  assert len(builders.eval_dataset(run, tokenizer)) == 1
  assert (
      "config.data.skip_ungradable: 1 of 2 evaluation rows"
      in capsys.readouterr().out
  )


def test_training_file_without_answers_is_fine(pair, tmp_path):
  # OPD needs questions only; answers are for evaluation.
  c = testing.tiny_train_config(pair)
  _file_data(
      tmp_path, c, _jsonl(tmp_path, "q.jsonl", [b'{"question": "1 + 1 ="}'] * 3)
  )
  data = builders.train_dataset(
      config_lib.to_run_config(c), builders.load_tokenizer(c)
  )
  assert len(data) == 3


class _Mesh:
  shape = {"data": 2, "fsdp": 2, "tensor": 2}


def test_batch_must_split_over_the_data_parallel_devices(pair):
  c = testing.tiny_train_config(pair, batch_size=6)
  with pytest.raises(ValueError, match="multiple of the 4 data-parallel"):
    plan.check_shapes(config_lib.to_run_config(c), _Mesh(), [])
  plan.check_shapes(
      config_lib.to_run_config(testing.tiny_train_config(pair, batch_size=8)),
      _Mesh(),
      [],
  )


def test_micro_batches_must_split_over_the_data_parallel_devices(pair):
  c = testing.tiny_train_config(pair, batch_size=8, micro_batches=4)
  with pytest.raises(
      ValueError,
      match=r"^config\.micro_batches: expected groups of rows that split over"
      r" the 4 data-parallel devices, got 4 groups of 8 / 4 = 2 rows; use a"
      r" divisor of 2$",
  ):
    plan.check_shapes(config_lib.to_run_config(c), _Mesh(), [])
  c.micro_batches = 2
  plan.check_shapes(config_lib.to_run_config(c), _Mesh(), [])


@pytest.mark.slow
def test_cli_prints_one_line_and_exits_2(pair, tmp_path):
  config = os.path.join(os.path.dirname(__file__), "tiny_run_config.py")
  pair_dir = os.path.dirname(pair["student"])
  for flag, fragment in (
      (
          "--config.tip.rhoo=0.5",
          "error: --config.tip.rhoo: no such field; did you mean 'rho'?",
      ),
      ("--config.seed=-1", "error: config.seed: expected an integer >= 0"),
      (  # renamed since (config.RENAMED_FIELDS): told the new flag
          "--config.gkd.beta=0.3",
          (
              "error: --config.gkd.beta: no such field; it is"
              " --config.gkd.loss_pass.jsd_beta now"
          ),
      ),
  ):
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(_ROOT, "scripts", "train.py"),
            f"--config={config}:{pair_dir}",
            f"--workdir={tmp_path / 'run'}",
            flag,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert lines[-1].startswith(fragment), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
