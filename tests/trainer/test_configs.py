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
"""Every config file passes --dry_run; the recipes on 8 fake devices, compiling nothing."""

import glob
import os
import subprocess
import sys

import jax
import pytest
from ml_collections import config_flags  # noqa: F401  (config file loader)

from opd_jax.trainer import loop
from opd_jax.trainer.config import start_run

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
_CONFIGS = sorted(glob.glob(os.path.join(_ROOT, "configs", "*.py")))
_RECIPES = [p for p in _CONFIGS if os.path.basename(p).startswith("recipe_")]


def _load(path):
  import importlib.util  # pylint: disable=g-import-not-at-top

  spec = importlib.util.spec_from_file_location("cfg", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def test_there_is_one_config_per_method():
  from opd_jax import methods  # pylint: disable=g-import-not-at-top

  names = {os.path.basename(p)[:-3] for p in _CONFIGS}
  assert set(methods.REGISTRY) <= names
  assert len(_RECIPES) >= 2


@pytest.mark.parametrize(
    "path", [p for p in _CONFIGS if p not in _RECIPES], ids=os.path.basename
)
def test_method_config_dry_run_compiles_nothing(path):
  compiles = []

  def listener(event, duration, **kwargs):
    del duration, kwargs
    if "backend_compile" in event:
      compiles.append(event)

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    report = loop.dry_run(start_run(_load(path), names=False), memory=False)
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert not compiles
  assert report["student_params"] > 0
  assert "loss/total" in report["metrics"]


@pytest.mark.parametrize("path", _RECIPES, ids=os.path.basename)
def test_recipe_dry_run_on_8_fake_devices(path):
  env = dict(
      os.environ,
      XLA_FLAGS=os.environ.get("XLA_FLAGS", "")
      + " --xla_force_host_platform_device_count=8",
      JAX_PLATFORMS="cpu",
  )
  proc = subprocess.run(
      [
          sys.executable,
          os.path.join(_ROOT, "scripts", "train.py"),
          f"--config={path}",
          "--dry_run",
          # The recipes' memory is compiled in `benchmarks step-memory`
          # (minutes each); here the plan and the traced step.
          "--nodry_run_memory",
      ],
      env=env,
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert "over 8 devices" in proc.stdout
  assert "step traced" in proc.stdout


def test_dry_run_prints_compiled_memory_of_step_and_sampler(tmp_path, capsys):
  """The dry run's memory lines, in the documented form, for a tiny pair."""
  import re  # pylint: disable=g-import-not-at-top

  from opd_jax import testing  # pylint: disable=g-import-not-at-top

  c = testing.tiny_train_config(testing.tiny_distillation_pair(str(tmp_path)))
  report = loop.dry_run(start_run(c, names=False))
  out = capsys.readouterr().out
  for what in ("step", "sampler"):
    m = re.search(
        rf"^{what} memory per device: arguments ([\d.]+) GiB, temporaries"
        r" ([\d.]+) GiB, total ([\d.]+) GiB$",
        out,
        re.M,
    )
    assert m, out
    figures = report[f"{what}_memory"]
    assert figures["argument_bytes"] > 0 and figures["temp_bytes"] > 0
    assert figures["total_bytes"] == (
        figures["argument_bytes"]
        + figures["temp_bytes"]
        + figures["output_bytes"]
        - figures["alias_bytes"]
    )


def test_dry_run_sampler_under_a_context_compiles_the_teachers_prompt(
    tmp_path, monkeypatch
):
  """A mixture under a teacher context: the student's prompt at its budget,
  the teacher's at teacher_context.max_prompt_len (as the run samples)."""
  from opd_jax import testing  # pylint: disable=g-import-not-at-top
  from opd_jax.rollouts import sampler  # pylint: disable=g-import-not-at-top

  c = testing.tiny_train_config(
      testing.tiny_distillation_pair(str(tmp_path)),
      rollout_source="mixture",
  )
  c.teacher_context.template = "solution"
  c.teacher_context.max_prompt_len = 48
  widths = []
  jitted = sampler.jitted_sampler

  def spy(*args, **kwargs):
    fn = jitted(*args, **kwargs)

    class Traced:

      def lower(self, states, prompts, masks, key):
        widths.append(tuple(p.shape[1] for p in prompts))
        return fn.lower(states, prompts, masks, key)

    return Traced()

  monkeypatch.setattr(sampler, "jitted_sampler", spy)
  report = loop.dry_run(start_run(c, names=False))
  assert widths == [(c.max_prompt_len, 48)]
  assert report["sampler_memory"]["argument_bytes"] > 0
