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
"""A workdir remembers its run: reruns resume it or stop with the differences."""

import json
import os

import pytest

from opd_jax.trainer import config as trainer_config
from opd_jax.trainer import workdir as workdir_lib


def _config(**overrides):
  c = trainer_config.default_config()
  c.student, c.teacher = "/models/student", "/models/teacher"
  for key, value in overrides.items():
    node = c
    *path, last = key.split(".")
    for part in path:
      node = node[part]
    node[last] = value
  return c


def _start(tmp_path, c):
  workdir = str(tmp_path / "run")
  assert not workdir_lib.prepare_workdir(workdir, c)
  with open(os.path.join(workdir, workdir_lib.CONFIG_FILE), "w") as f:
    f.write(c.to_json())
  os.makedirs(os.path.join(workdir, "checkpoints", "2"))
  return workdir


def test_same_run_resumes_and_rescheduling_is_allowed(tmp_path):
  workdir = _start(tmp_path, _config())
  assert workdir_lib.prepare_workdir(workdir, _config())
  longer = _config(total_steps=500, eval_every=10, log_every=5)
  assert workdir_lib.prepare_workdir(workdir, longer)
  # An unused method's block does not define the run.
  assert workdir_lib.prepare_workdir(workdir, _config(**{"dear.p": 0.5}))


@pytest.mark.parametrize(
    "overrides,fragment",
    [
        ({"method": "dear"}, "method: 'tip' -> 'dear'"),
        ({"tip.rho": 0.2}, "tip.rho: 0.5 -> 0.2"),
        ({"student": "/models/other"}, "student: '/models/student' ->"),
        ({"data.source": "file", "data.path": "q.jsonl"}, "data.path: '' ->"),
        ({"optimizer.learning_rate": 1e-3}, "optimizer.learning_rate"),
        ({"seed": 3}, "seed: 0 -> 3"),
    ],
)
def test_a_different_run_is_refused_naming_the_fields(
    tmp_path, overrides, fragment
):
  workdir = _start(tmp_path, _config())
  before = sorted(os.listdir(workdir))
  with pytest.raises(workdir_lib.WorkdirError, match="holds another run") as e:
    workdir_lib.prepare_workdir(workdir, _config(**overrides))
  assert fragment in str(e.value) and "--restart" in str(e.value)
  assert sorted(os.listdir(workdir)) == before  # nothing touched


def test_restart_moves_the_old_run_aside(tmp_path):
  workdir = _start(tmp_path, _config())
  assert not workdir_lib.prepare_workdir(
      workdir, _config(method="dear"), restart=True
  )
  assert os.listdir(workdir) == ["previous_runs"]
  (old,) = os.listdir(os.path.join(workdir, "previous_runs"))
  old = os.path.join(workdir, "previous_runs", old)
  assert sorted(os.listdir(old)) == ["checkpoints", "config.json"]
  with open(os.path.join(old, "config.json")) as f:
    assert json.load(f)["method"] == "tip"


def test_workdir_that_is_a_file_or_has_orphan_checkpoints(tmp_path):
  path = tmp_path / "file"
  path.write_text("x")
  with pytest.raises(workdir_lib.WorkdirError, match="is a file"):
    workdir_lib.prepare_workdir(str(path), _config())
  orphan = tmp_path / "orphan"
  os.makedirs(orphan / "checkpoints" / "5")
  with pytest.raises(workdir_lib.WorkdirError, match="no config.json"):
    workdir_lib.prepare_workdir(str(orphan), _config())
  (tmp_path / "broken").mkdir()
  (tmp_path / "broken" / "config.json").write_text("{not json")
  with pytest.raises(workdir_lib.WorkdirError, match="unreadable run config"):
    workdir_lib.prepare_workdir(str(tmp_path / "broken"), _config())


# A run saved before the score-by divergence had one name (TIP's
# tip_divergence, DEAR's delta, TOPD's candidate_divergence, short values).
_OLD_NAMES = {
    "tip": ("tip_divergence", "rkl", "reverse_kl"),
    "dear": ("delta", "sampled_logratio", "sampled_logratio"),
    "topd": ("candidate_divergence", "fkl", "forward_kl"),
}


@pytest.mark.parametrize("method", sorted(_OLD_NAMES))
def test_a_run_saved_under_old_field_names_resumes(tmp_path, method):
  old_key, old_value, new_value = _OLD_NAMES[method]
  saved = _config(method=method).to_dict()
  del saved[method]["score_divergence"]
  saved[method][old_key] = old_value
  workdir = str(tmp_path / "run")
  os.makedirs(os.path.join(workdir, "checkpoints", "2"))
  with open(os.path.join(workdir, workdir_lib.CONFIG_FILE), "w") as f:
    json.dump(saved, f)
  same = _config(method=method, **{f"{method}.score_divergence": new_value})
  assert workdir_lib.prepare_workdir(workdir, same)
  # Read back under the new name, with the new vocabulary.
  migrated = trainer_config.migrate_saved(saved)
  assert migrated[method]["score_divergence"] == new_value
  assert old_key not in migrated[method] and old_key in saved[method]
  if new_value != "reverse_kl":  # the old value is still the run's value
    with pytest.raises(workdir_lib.WorkdirError, match="score_divergence"):
      workdir_lib.prepare_workdir(workdir, _config(method=method))


def test_a_run_saved_with_flat_loss_pass_fields_resumes(tmp_path):
  # Before the loss-pass fields nested under `loss_pass`: GKD's TRL names
  # (beta, loss_temperature) and TIP's flat fields.
  saved = _config(method="gkd").to_dict()
  for m in ("gkd", "tip"):
    del saved[m]["loss_pass"]
  saved["gkd"].update(
      beta=0.3, loss_temperature=0.9, divergence="jsd", chunk_size=128
  )
  saved["tip"].update(divergence="reverse_kl", temperature=0.7)
  migrated = trainer_config.migrate_saved(saved)
  assert migrated["gkd"]["loss_pass"] == {
      "jsd_beta": 0.3,
      "temperature": 0.9,
      "divergence": "jsd",
      "chunk_size": 128,
  }
  assert migrated["tip"]["loss_pass"] == {
      "divergence": "reverse_kl",
      "temperature": 0.7,
  }
  assert "beta" not in migrated["gkd"] and "beta" in saved["gkd"]
  workdir = str(tmp_path / "run")
  os.makedirs(os.path.join(workdir, "checkpoints", "2"))
  with open(os.path.join(workdir, workdir_lib.CONFIG_FILE), "w") as f:
    json.dump(saved, f)
  same = _config(
      method="gkd",
      **{"gkd.loss_pass.jsd_beta": 0.3, "tip.loss_pass.temperature": 0.7},
  )
  assert workdir_lib.prepare_workdir(workdir, same)
  # The saved values are still the run's: another beta is another run.
  with pytest.raises(workdir_lib.WorkdirError, match="jsd_beta"):
    workdir_lib.prepare_workdir(
        workdir,
        _config(method="gkd", **{"tip.loss_pass.temperature": 0.7}),
    )


def test_a_config_using_an_old_field_name_is_told_the_new_one():
  c = _config()
  c.tip.tip_divergence = "reverse_kl"
  with pytest.raises(
      trainer_config.ConfigError,
      match=r"config\.tip\.tip_divergence: no such field; it is"
      r" config\.tip\.score_divergence now",
  ):
    trainer_config.check_fields(c)
  c = _config()
  c.gkd.loss_temperature = 0.9
  with pytest.raises(
      trainer_config.ConfigError,
      match=r"config\.gkd\.loss_temperature: no such field; it is"
      r" config\.gkd\.loss_pass\.temperature now",
  ):
    trainer_config.check_fields(c)
