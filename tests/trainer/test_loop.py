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
"""The training loop end to end on tiny models: metrics, checkpoints, guards."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from opd_jax import testing
from opd_jax.models import load_hf
from opd_jax.trainer import builders, config as trainer_config, loop, reporting, restore
from opd_jax.trainer.config import start_run

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
  return testing.tiny_distillation_pair(str(tmp_path_factory.mktemp("pair")))


def _params(trainer):
  return jax.tree.map(np.asarray, trainer.state.params)


def _metric_lines(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(l) for l in f if '"step"' in l and "loss/total" in l]


def test_trains_logs_checkpoints_and_exports(pair, tmp_path, capsys):
  workdir = str(tmp_path / "run")
  c = testing.tiny_train_config(pair, eval_every=4)
  last = loop.train_and_evaluate(start_run(c), workdir)
  # The eval scores reach the console, not only metrics.jsonl; the last
  # line says where the checkpoint, metrics and plots are.
  console = capsys.readouterr()
  assert "step 4: eval/accuracy" in console.err
  assert (
      f"run at step 4: checkpoint {os.path.abspath(workdir)}/checkpoints/4,"
      f" metrics {workdir}/metrics.jsonl (TensorBoard: {workdir}/tensorboard),"
      f" plots {workdir}/plots"
  ) in console.out
  lines = _metric_lines(workdir)
  assert [l["step"] for l in lines] == [1, 2, 3, 4]
  for key in (
      "loss/total",
      "select/frac",
      "train/grad_norm",
      "rollout/len_mean",
      "rollout/eos_rate",
      "train/lr",
  ):
    assert key in lines[-1], key
  assert 0 < lines[-1]["select/frac"] <= 1
  assert "eval/accuracy" in last
  assert os.path.isdir(os.path.join(workdir, "tensorboard"))
  # The plots train.py's help promises, written at the end of the run.
  assert sorted(os.listdir(os.path.join(workdir, "plots"))) == [
      "accuracy.png",
      "loss.png",
      "selected_fraction.png",
  ]
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
  model, step, _ = restore.restore_student(workdir)
  assert step == 4
  # Rerunning the finished command resumes at the end and does nothing.
  trainer = loop.Trainer(start_run(c), workdir)
  assert trainer.start_step == 4
  np.testing.assert_array_equal(
      np.asarray(trainer.state.params["final_norm"]["scale"]),
      np.asarray(nnx.state(model)["final_norm"]["scale"][...]),
  )
  trainer.checkpointer.close()
  trainer.writer.close()
  # scripts/sample.py answers a prompt file from the run's newest student.
  prompts = tmp_path / "q.txt"
  prompts.write_text(
      "Ann has 5 coins. She buys 3 more. How many coins does"
      " she have?\nTom has 9 pens.\n"
  )
  proc = subprocess.run(
      [
          sys.executable,
          os.path.join(_ROOT, "scripts", "sample.py"),
          f"--workdir={workdir}",
          f"--prompts={prompts}",
          "--num_samples=2",
          "--temperature=1.0",
          "--max_new_tokens=5",
      ],
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]
  assert len(rows) == 4 and {r["sample"] for r in rows} == {0, 1}
  assert all(r["step"] == 4 for r in rows)


def test_resume_after_corrupt_latest_checkpoint(pair, tmp_path, capsys):
  workdir = str(tmp_path / "run")
  c = testing.tiny_train_config(pair, total_steps=3, checkpoint_every=1)
  first = loop.Trainer(start_run(c), workdir)
  first.run()
  final = _params(first)
  # Garble every file of the newest step.
  latest = os.path.join(workdir, "checkpoints", "3")
  for root, _, files in os.walk(latest):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"\x00garbage")
  second = loop.Trainer(start_run(c), workdir)
  assert "checkpoint step 3 is unreadable" in capsys.readouterr().out
  assert second.start_step == 2
  assert os.listdir(os.path.join(workdir, "corrupt_checkpoints"))
  second.run()  # step 3 again, from step 2's checkpoint and data position
  jax.tree.map(np.testing.assert_array_equal, _params(second), final)


def test_non_finite_steps_are_skipped_then_stop(pair, tmp_path):
  # NaN teacher weights (a checkpoint with them is refused at load, so put
  # them in after) make every loss NaN.
  c = testing.tiny_train_config(pair, total_steps=6, max_consecutive_skips=3)
  trainer = loop.Trainer(start_run(c), str(tmp_path / "run"))
  trainer.teacher_params = jax.tree.map(
      lambda x: x * np.nan, trainer.teacher_params
  )
  before = _params(trainer)
  with pytest.raises(
      loop.TrainingDivergedError, match="3 consecutive steps"
  ) as e:
    trainer.run()
  assert isinstance(e.value, ValueError)  # one `error:` line from the CLI
  # The advice points at the teacher, whose outputs are what is not finite.
  assert "The teacher's outputs are not finite" in str(e.value)
  assert "learning_rate" not in str(e.value)
  assert int(trainer.state.total_skips) == 3
  jax.tree.map(np.testing.assert_array_equal, _params(trainer), before)
  lines = _metric_lines(str(tmp_path / "run"))
  assert [l["train/skipped"] for l in lines] == [1.0, 1.0, 1.0]


def _nan_on(trainer, steps):
  """Makes the step's teacher NaN (every loss NaN) on the given calls."""
  nan = jax.tree.map(lambda x: x * np.nan, trainer.teacher_params)
  step_fn, calls = trainer.step_fn, []

  def step(state, teacher, batch):
    calls.append(None)
    return step_fn(state, nan if len(calls) in steps else teacher, batch)

  trainer.step_fn = step


def test_mostly_skipped_steps_stop_the_run(pair, tmp_path):
  # Never 3 in a row, but 3 of the first 4 steps: the model trains on
  # almost nothing (a learning rate of 1e6 does this), so the run stops.
  c = testing.tiny_train_config(pair, total_steps=8, max_consecutive_skips=3)
  trainer = loop.Trainer(start_run(c), str(tmp_path / "run"))
  _nan_on(trainer, {1, 2, 4, 5, 7})
  with pytest.raises(
      loop.TrainingDivergedError,
      match=r"^3 of 4 steps were skipped \(a non-finite loss or gradient\);",
  ):
    trainer.run()
  assert int(trainer.state.consecutive_skips) == 1


def test_skipped_steps_are_in_the_summary_and_a_mostly_skipped_run_fails(
    pair, tmp_path, capsys
):
  c = testing.tiny_train_config(pair, total_steps=3, max_consecutive_skips=3)
  trainer = loop.Trainer(start_run(c), str(tmp_path / "run"))
  _nan_on(trainer, {2})
  trainer.run()
  out = capsys.readouterr().out
  assert "run at step 3, 1 of 3 steps skipped as non-finite: checkpoint" in out
  # Two of three (never max_consecutive_skips in a row): an error at the end.
  trainer = loop.Trainer(start_run(c), str(tmp_path / "run2"))
  _nan_on(trainer, {1, 3})
  with pytest.raises(
      loop.TrainingDivergedError,
      match=r"^2 of 3 steps were skipped \(a non-finite loss or gradient\):"
      r" the run trained on 1\. Lower optimizer\.learning_rate",
  ):
    trainer.run()
  assert "run at step 3, 2 of 3 steps skipped" in capsys.readouterr().out


def test_nan_teacher_checkpoint_is_refused_at_load(pair, tmp_path):
  bad = str(tmp_path / "nan_teacher")
  teacher = load_hf(pair["teacher"])
  teacher.final_norm.scale[...] = teacher.final_norm.scale[...] * np.nan
  from opd_jax.models import save_hf  # pylint: disable=g-import-not-at-top

  save_hf(teacher, bad)
  c = testing.tiny_train_config(pair)
  c.teacher = bad
  with pytest.raises(ValueError, match="config.teacher.*NaN"):
    loop.Trainer(start_run(c), str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_vocab_mismatch_fails_before_compiling(pair, tmp_path):
  other = testing.tiny_config("qwen3", vocab_size=96)
  from opd_jax.models import save_hf  # pylint: disable=g-import-not-at-top

  save_hf(testing.random_model(other), str(tmp_path / "t"))
  c = testing.tiny_train_config(pair)
  c.teacher = str(tmp_path / "t")
  with pytest.raises(
      builders.VocabularyMismatchError,
      match="teacher vocab_size=96, student vocab_size=80",
  ):
    loop.Trainer(start_run(c), str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("lmbda", 1.5, r"config\.lmbda: expected a fraction in \[0, 1\]"),
        ("batch_size", 0, r"config\.batch_size: expected an integer >= 1"),
        ("dtype", "float16", r"config\.dtype: expected one of"),
        ("compute_dtype", "fp8", r"config\.compute_dtype: expected"),
        ("sampling.top_p", 0.0, r"config\.sampling\.top_p"),
        ("tip.rho", 1.5, r"config\.tip\.rho"),
        ("method", "distill", r"config\.method: expected one of"),
    ],
)
def test_bad_config_values_name_the_field(pair, field, value, match):
  c = testing.tiny_train_config(pair)
  c.update_from_flattened_dict({field: value})
  with pytest.raises(ValueError, match=match):
    trainer_config.validate(c)


def test_empty_dataset_fails_before_compiling(pair, tmp_path):
  empty = tmp_path / "empty.jsonl"
  empty.write_text("")
  c = testing.tiny_train_config(pair)
  c.data.source, c.data.path = "file", str(empty)
  with pytest.raises(ValueError, match="empty.jsonl"):
    loop.Trainer(start_run(c), str(tmp_path / "run"))


def test_bf16_compute_matches_float32_step(pair, tmp_path):
  results = {}
  for compute in ("", "bfloat16"):
    c = testing.tiny_train_config(pair, compute_dtype=compute)
    trainer = loop.Trainer(start_run(c), str(tmp_path / f"run{compute}"))
    with jax.set_mesh(trainer.mesh):
      batch = trainer._batch(0, next(trainer.iterator))  # pylint: disable=protected-access
      if (
          compute
      ):  # the same rollout for both: only the step's precision differs
        batch = results[""][1]
      state, m = trainer.step_fn(trainer.state, trainer.teacher_params, batch)
    assert jax.tree.leaves(state.params)[0].dtype == np.float32  # master copy
    results[compute] = (float(m["loss/total"]), batch)
    trainer.checkpointer.close()
    trainer.writer.close()
  f32, bf16 = results[""][0], results["bfloat16"][0]
  # Measured 0.022926 vs 0.022925; bf16 operands keep 8 mantissa bits, the
  # accumulation and the divergence are float32.
  print(f"loss float32 {f32:.6f}, bf16 compute {bf16:.6f}")
  assert abs(bf16 - f32) <= 0.01 * abs(f32), (f32, bf16)


def test_progress_bar_tokens_and_token_maps(pair, tmp_path, monkeypatch):
  # With log_every=2 the bar must still see every step's tokens (it used to
  # get one step's tokens per log, under-reporting tokens/s by log_every);
  # token_map_every=2 writes a page of the rollouts at steps 2 and 4.
  calls = []

  class Recorder(reporting.ProgressBar):

    def update(self, step, metrics=None, *, tokens=None):
      calls.append((step, tokens))
      super().update(step, metrics, tokens=tokens)

  monkeypatch.setattr(reporting, "ProgressBar", Recorder)
  c = testing.tiny_train_config(pair, eval_every=0)
  c.log_every = 2
  c.token_map_every = 2
  loop.train_and_evaluate(start_run(c), str(tmp_path / "run"))
  plots = tmp_path / "run" / "plots"
  assert sorted(p for p in os.listdir(plots) if p.endswith(".html")) == [
      "token_map_000002.html",
      "token_map_000004.html",
  ]
  page = (plots / "token_map_000004.html").read_text()
  assert "<html" in page and "reverse_kl" in page
  assert [s for s, _ in calls] == [1, 2, 3, 4]
  assert all(t is not None and t > 0 for _, t in calls)
  logged = {l["step"]: l for l in _metric_lines(str(tmp_path / "run"))}
  assert sorted(logged) == [2, 4]
  for step, tokens in calls:
    if step in logged:
      assert tokens == round(logged[step]["rollout/len_mean"] * c.batch_size)
