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
"""The trainer: config -> plan -> rollouts -> jitted step -> eval -> checkpoints.

`train_and_evaluate(start_run(config), workdir)` runs (or resumes) a run;
`dry_run` checks one without compiling. The ConfigDict becomes a typed
`RunConfig` once, where a script starts a run (`start_run`); `plan_run`
is the one place it becomes models, dtypes, a method and an optimizer;
`restore_student` rebuilds a run's student for export and sampling.
"""

from opd_jax.trainer.checkpointing import Checkpointer
from opd_jax.trainer.config import ConfigError
from opd_jax.trainer.config import default_config
from opd_jax.trainer.config import start_run
from opd_jax.trainer.config import to_run_config
from opd_jax.trainer.config import validate
from opd_jax.trainer.loop import dry_run
from opd_jax.trainer.loop import train_and_evaluate
from opd_jax.trainer.loop import Trainer
from opd_jax.trainer.loop import TrainingDivergedError
from opd_jax.trainer.plan import plan_run
from opd_jax.trainer.plan import RunPlan
from opd_jax.trainer.reporting import create_writer
from opd_jax.trainer.reporting import ProgressBar
from opd_jax.trainer.restore import load_run_config
from opd_jax.trainer.restore import restore_student
from opd_jax.trainer.run_config import RunConfig
from opd_jax.trainer.sft import sft_train
from opd_jax.trainer.sft import SftSettings
from opd_jax.trainer.state import make_optimizer
from opd_jax.trainer.state import TrainState
from opd_jax.trainer.step import compile_step
from opd_jax.trainer.step import train_step
from opd_jax.trainer.update import guarded_update

__all__ = [
    "Checkpointer",
    "compile_step",
    "ConfigError",
    "create_writer",
    "default_config",
    "dry_run",
    "guarded_update",
    "load_run_config",
    "make_optimizer",
    "plan_run",
    "ProgressBar",
    "restore_student",
    "RunConfig",
    "RunPlan",
    "sft_train",
    "SftSettings",
    "train_and_evaluate",
    "train_step",
    "Trainer",
    "TrainingDivergedError",
    "TrainState",
    "start_run",
    "to_run_config",
    "validate",
]
