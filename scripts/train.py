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
r"""Trains a student by on-policy distillation from a config file.

  python scripts/train.py --config=configs/tip.py --workdir=/tmp/run \
      [--config.total_steps=200 ...] [--dry_run]

Rerunning the same command resumes from the newest checkpoint in --workdir;
a workdir holding a different run (model, method, data, ...) is an error
unless --restart. Metrics go to WORKDIR/metrics.jsonl and
WORKDIR/tensorboard, plots of the loss, accuracy and selected fraction to
WORKDIR/plots at the end (the last line says where). Mistakes in the
config file (one that does not load, a misspelled field) or the inputs
print one line `error: ...` and exit with code 2. Ctrl-C or SIGTERM lets
the current step finish, saves it and exits with 130 / 143; rerunning the
command resumes from there.
For a multi-process run on machines without a launcher environment, pass
--coordinator_address=HOST:PORT --num_processes=N --process_id=I.
"""

from absl import app, flags
from ml_collections import config_flags

from opd_jax import cli
from opd_jax.trainer import distributed

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Trainer config file (configs/*.py).", lock_config=True
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory: checkpoints, metrics, plots."
)
_DRY_RUN = flags.DEFINE_bool(
    "dry_run",
    False,
    "Check config, shapes and shardings without loading weights, and print"
    " the per-device memory of the compiled step and sampler.",
)
_DRY_RUN_MEMORY = flags.DEFINE_bool(
    "dry_run_memory",
    True,
    "With --dry_run: also compile the update step and the sampler ahead"
    " (nothing runs) and print each one's memory per device.",
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0 (multi-process)."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process.")
_RESTART = flags.DEFINE_bool(
    "restart",
    False,
    "Start over in a --workdir that holds another run (its"
    " files move to WORKDIR/previous_runs/).",
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from opd_jax.trainer import config as config_lib  # pylint: disable=g-import-not-at-top

  config = _CONFIG.value
  try:  # a misspelled field in the file (`c.optimiser`) would do nothing
    config_lib.check_fields(config)
  except config_lib.ConfigError as e:
    raise config_lib.ConfigError(
        f"--config={flags.FLAGS['config'].serialize().split('=', 1)[-1]}: {e}"
    ) from None
  distributed.initialize(
      _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value
  )
  from opd_jax.trainer import loop  # pylint: disable=g-import-not-at-top

  # The one place the ConfigDict becomes the typed run every module reads.
  run = config_lib.start_run(
      config, overridden=tuple(cli.config_overrides()), names=False
  )
  if _DRY_RUN.value:
    loop.dry_run(run, memory=_DRY_RUN_MEMORY.value)
    return
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required (except with --dry_run)")
  loop.train_and_evaluate(run, _WORKDIR.value, restart=_RESTART.value)


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  cli.run(main)
