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
"""A workdir remembers the run it holds: a rerun must be the same run.

The first run writes its config to `WORKDIR/config.json`. A rerun resumes
only if everything that defines the run (models, method, data, optimizer,
seed, shapes, sampling) is unchanged; fields that only schedule the run
(`total_steps`, logging, evaluation and checkpoint cadence, the mesh) may
change. Otherwise it stops with an error naming the differing fields,
before anything in the workdir is touched. `restart=True` (the CLI's
`--restart`) deliberately starts over: the old run is moved into
`WORKDIR/previous_runs/<time>/`, never deleted.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any

from opd_jax.trainer.reporting import flatten

CONFIG_FILE = "config.json"  # the run's config, in the workdir

# Fields a resumed run may change: they schedule the run, not define it.
RESCHEDULING_FIELDS = (
    "total_steps",
    "checkpoint_every",
    "keep_checkpoints",
    "async_checkpointing",
    "eval_every",
    "eval_examples",
    "log_every",
    "token_map_every",
    "max_consecutive_skips",
    "mesh",
)


class WorkdirError(ValueError):
  """The workdir cannot hold this run (a file, or another run's directory)."""


def checkpoint_steps(workdir: str) -> list[int]:
  """The step directories in `WORKDIR/checkpoints` (finished saves only)."""
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    return []
  return sorted(int(n) for n in os.listdir(directory) if n.isdigit())


def check_run_workdir(workdir: str | None, flag: str = "--workdir") -> dict:
  """Checks that `workdir` holds a training run with a checkpoint; cheap.

  Scripts that read a run (export, sample, evaluate) call it before any
  slow import, so a wrong path fails in a second.

  Returns:
    The run's config, as saved (a dict).

  Raises:
    WorkdirError: naming `flag`, when `workdir` is missing, a file, an HF
      model directory, or holds no finished checkpoint.
  """
  if not workdir:
    raise WorkdirError(f"{flag} is required")
  if not os.path.exists(workdir):
    raise WorkdirError(f"{flag}: {workdir} does not exist")
  if not os.path.isdir(workdir):
    raise WorkdirError(f"{flag}: {workdir} is a file, not a training workdir")
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise WorkdirError(
        f"{flag}: {workdir} holds no {CONFIG_FILE}: not an opd_jax training"
        " workdir"
    )
  try:
    with open(path, encoding="utf-8") as f:
      config = json.load(f)
  except (OSError, ValueError) as e:
    raise WorkdirError(f"{flag}: {path} is unreadable ({e})") from None
  if not isinstance(config, dict) or "method" not in config:
    raise WorkdirError(
        f"{flag}: {workdir} is a model directory (its {CONFIG_FILE} is not a"
        " run config), not a training workdir; scripts/evaluate.py --model"
        " takes model directories"
    )
  if not checkpoint_steps(workdir):
    raise WorkdirError(
        f"{flag}: {workdir} holds no checkpoint yet (nothing in"
        f" {os.path.join(workdir, 'checkpoints')})"
    )
  return config


def _defining(config: dict[str, Any]) -> dict[str, Any]:
  """The fields that define a run, flattened (`<method>.<field>`, `data.path`)."""
  method = config.get("method")
  kept = {}
  for key, value in config.items():
    if key in RESCHEDULING_FIELDS:
      continue
    # Only the chosen method's block matters; the others are unused.
    if (
        isinstance(value, dict)
        and key != method
        and key not in ("sampling", "optimizer", "data")
    ):
      continue
    kept[key] = value
  # Tuples as lists: a config read back from config.json has lists.
  return {
      k: list(v) if isinstance(v, tuple) else v
      for k, v in flatten(kept, sep=".").items()
  }


def config_differences(
    old: dict[str, Any], new: dict[str, Any]
) -> list[tuple[str, Any, Any]]:
  """(field, old value, new value) for each defining field that differs."""
  a, b = _defining(old), _defining(new)
  if old.get("method") != new.get("method"):
    # Another method: its block's fields say nothing more.
    blocks = (f"{old.get('method')}.", f"{new.get('method')}.")
    a = {k: v for k, v in a.items() if not k.startswith(blocks)}
    b = {k: v for k, v in b.items() if not k.startswith(blocks)}
  missing = object()
  return [
      (k, a.get(k, missing), b.get(k, missing))
      for k in sorted(set(a) | set(b))
      if a.get(k, missing) != b.get(k, missing)
  ]


def _show(value: Any) -> str:
  return (
      "(unset)"
      if not isinstance(value, (str, int, float, bool, list, type(None)))
      else repr(value)
  )


def prepare_workdir(
    workdir: str,
    c,
    *,
    restart: bool = False,
    is_main: bool = True,
) -> bool:
  """Checks that `workdir` can hold the run of `c`; creates it if needed.

  Args:
    workdir: the run directory.
    c: the run's config (a `RunConfig`, or a ConfigDict: its `to_dict()`).
    restart: start over even if the workdir holds another run (its files
      are moved to `previous_runs/`).
    is_main: only process 0 moves or creates files.

  Returns:
    True if the workdir holds this run already (a resume), else False.

  Raises:
    WorkdirError: `workdir` is a file, or holds a run whose defining fields
      differ (and `restart` is False).
  """
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise WorkdirError(f"--workdir {workdir!r} is a file, not a directory")
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    if os.path.isdir(os.path.join(workdir, "checkpoints")) and not restart:
      raise WorkdirError(
          f"--workdir {workdir!r} holds checkpoints but no {CONFIG_FILE}, so"
          " they cannot be matched to this run; use a new --workdir or pass"
          " --restart (the old files move to previous_runs/)"
      )
    if is_main:
      if restart and os.path.isdir(workdir) and os.listdir(workdir):
        _say_moved(workdir, move_aside(workdir))
      os.makedirs(workdir, exist_ok=True)
    return False
  try:
    with open(path, encoding="utf-8") as f:
      old = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise WorkdirError(
        f"{path}: unreadable run config ({type(e).__name__}: {e}); pass"
        " --restart to start a new run there (the old files are kept in"
        " previous_runs/)"
    ) from None
  # Imported here: the scripts check a workdir before their slow imports.
  from opd_jax.trainer import config as config_lib  # pylint: disable=g-import-not-at-top

  # Fields added since the old run was saved hold their defaults there.
  diffs = config_differences(
      config_lib.with_defaults(old).to_dict(), c.to_dict()
  )
  if not diffs:
    return True
  if not restart:
    shown = "; ".join(f"{k}: {_show(a)} -> {_show(b)}" for k, a, b in diffs[:6])
    more = f" (and {len(diffs) - 6} more)" if len(diffs) > 6 else ""
    raise WorkdirError(
        f"--workdir {workdir!r} holds another run: {shown}{more}. Use a new"
        " --workdir, rerun with the original config to resume, or pass"
        " --restart to start over (the old run moves to previous_runs/)"
    )
  if is_main:
    _say_moved(workdir, move_aside(workdir))
  return False


def _say_moved(workdir: str, dest: str) -> None:
  print(f"--restart: the previous run in {workdir} moved to {dest}")


def move_aside(workdir: str) -> str:
  """Moves every entry of `workdir` into `previous_runs/<time>/`; returns it."""
  stamp = time.strftime("%Y%m%d-%H%M%S")
  dest, n = os.path.join(workdir, "previous_runs", stamp), 1
  while os.path.exists(dest):  # two in one second
    n += 1
    dest = os.path.join(workdir, "previous_runs", f"{stamp}-{n}")
  os.makedirs(dest)
  for name in os.listdir(workdir):
    if name != "previous_runs":
      shutil.move(os.path.join(workdir, name), os.path.join(dest, name))
  return dest
