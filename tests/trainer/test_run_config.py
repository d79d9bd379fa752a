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
"""The typed run config's refusals of issue 38 that no config we ship meets."""

import glob
import importlib.util
import os

import pytest

from opd_jax.results import grid as grid_lib
from opd_jax.trainer import config as config_lib
from opd_jax.trainer.run_config import ConfigError

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
_CONFIGS = sorted(glob.glob(os.path.join(_ROOT, "configs", "*.py")))
_GRIDS = sorted(glob.glob(os.path.join(_ROOT, "configs", "grids", "*.py")))


def _load(path):
  spec = importlib.util.spec_from_file_location("cfg", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def test_warmup_beyond_the_run_is_refused_naming_the_field():
  c = _load(os.path.join(_ROOT, "configs", "demo.py"))  # 10 warm-up steps
  c.total_steps = 10
  with pytest.raises(ConfigError, match="config.total_steps=10 .*got 10$"):
    config_lib.to_run_config(c)
  c.total_steps, c.optimizer.warmup_steps = 5, 5
  with pytest.raises(ConfigError) as e:
    config_lib.to_run_config(c)
  assert str(e.value) == (
      "config.optimizer.warmup_steps: expected an integer <"
      " config.total_steps=5 (the warm-up must end inside the run), got 5"
  )
  c.optimizer.warmup_steps = 50
  with pytest.raises(ConfigError, match="config.total_steps=5 .*got 50$"):
    config_lib.to_run_config(c)
  c.optimizer.warmup_steps = 4
  assert config_lib.to_run_config(c).optimizer.warmup_steps == 4


@pytest.mark.parametrize("path", _CONFIGS, ids=os.path.basename)
def test_every_shipped_config_warms_up_inside_its_run(path):
  c = _load(path)
  assert c.optimizer.warmup_steps < c.total_steps
  config_lib.to_run_config(c)


@pytest.mark.parametrize("quick", [False, True], ids=["full", "quick"])
@pytest.mark.parametrize("path", _GRIDS, ids=os.path.basename)
def test_every_grid_run_warms_up_inside_its_run(path, quick):
  # --quick's few steps included: its overrides shorten the warm-up too.
  grid = grid_lib.load_grid(path, quick=quick)
  for v in grid.variants:
    c = grid.config(v, grid.seeds[0])
    assert c.optimizer.warmup_steps < c.total_steps, (v.name, quick)
    config_lib.validate(c)


def test_evaluation_rows_beyond_a_split_are_refused_as_config_fields():
  c = _load(os.path.join(_ROOT, "configs", "demo.py"))
  c.eval_examples = 10**8
  with pytest.raises(ConfigError, match=r"^config.eval_examples: expected at"):
    config_lib.to_run_config(c)
  c.eval_examples, c.data.eval_split = 8, "tset"
  with pytest.raises(
      ConfigError,
      match=r"^config.data.eval_split: expected one of \('train',",
  ):
    config_lib.to_run_config(c)
