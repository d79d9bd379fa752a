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
"""The trainer's ConfigDict: its defaults, its names, and where it becomes typed.

Config files in `configs/` start from `default_config()` (generated from
the typed blocks of `run_config` and the methods' fields) and change what
their recipe needs; after absl has applied the `--config.field=value`
overrides, `check_fields` refuses a misspelled field, `to_run_config`
converts the ConfigDict into the checked `RunConfig` (the one boundary) and
`check_active` refuses settings that cannot act in the run. Saved configs
of older runs are read under today's names (`migrate_saved`).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util

import ml_collections

from opd_jax import cli
from opd_jax import methods
from opd_jax.data import tasks
from opd_jax.trainer import run_config as run_config_lib
from opd_jax.trainer.reporting import flatten
from opd_jax.trainer.run_config import ConfigError, RunConfig


def method_defaults(name: str) -> ml_collections.ConfigDict:
  """A config block holding every field of method `name` at its default."""
  cls = methods.REGISTRY[name]
  out = {}
  for f in dataclasses.fields(cls):
    if f.default is not dataclasses.MISSING:
      value = f.default
    elif f.default_factory is not dataclasses.MISSING:  # type: ignore
      value = f.default_factory()  # type: ignore
    else:
      continue
    # A nested settings record (`loss_pass`) is a nested block.
    out[f.name] = (
        dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    )
  return ml_collections.ConfigDict(out)


def default_config() -> ml_collections.ConfigDict:
  """Every trainer field with its default (a small CPU-sized run).

  The fields and their defaults are the typed blocks' (`run_config`), each
  at its `key`; a method's block holds its dataclass's fields.
  """
  c = ml_collections.ConfigDict()
  for key, value in run_config_lib.default_blocks().items():
    *path, name = key.split(".")
    node = c
    for part in path:
      if part not in node:
        node[part] = ml_collections.ConfigDict()
      node = node[part]
    node[name] = value
  c.method = methods.DEFAULT_METHOD
  for name in sorted(methods.REGISTRY):
    c[name] = method_defaults(name)
  return c


# Fields renamed since runs were first saved: old dotted name -> (new one,
# {old value: new value}), from each method's `RENAMED` table. `with_defaults`
# reads saved configs under the new names, and a config file or flag still
# using an old one is told the new one.
_RENAMES = {
    f"{name}.{old}": (f"{name}.{new}", values)
    for name in sorted(methods.REGISTRY)
    for old, (new, values) in methods.renamed_fields(name).items()
}
RENAMED_FIELDS = {old: new for old, (new, _) in _RENAMES.items()}


def config_file(path: str) -> ml_collections.ConfigDict:
  """The `get_config()` of the absl `--config` file at `path`.

  For a config file that extends another (a recipe that swaps the teacher
  of another recipe), so the two cannot drift apart.
  """
  spec = importlib.util.spec_from_file_location("opd_jax_config_file", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def migrate_saved(saved: dict) -> dict:
  """A saved run config (a dict) with today's field names and values.

  Only `RENAMED_FIELDS` move (into nested blocks where the new name is
  deeper), their old values translated (`methods.renamed_fields`);
  everything else is returned as saved (a new dict: `saved` is not
  changed).
  """

  def copy(node):
    if isinstance(node, dict):
      return {k: copy(v) for k, v in node.items()}
    return node

  out = copy(saved)
  for old, (new, values) in _RENAMES.items():
    *old_path, old_key = old.split(".")
    node = out
    for part in old_path:
      node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict) or old_key not in node:
      continue
    value = node.pop(old_key)
    *new_path, new_key = new.split(".")
    node = out
    for part in new_path:
      node = node.setdefault(part, {})
    node.setdefault(new_key, values.get(value, value))
  return out


def with_defaults(saved: dict) -> ml_collections.ConfigDict:
  """A saved run config over `default_config()`.

  A run saved before a field existed gets the field's default, and one saved
  under a field's old name (`config.RENAMED_FIELDS`) is read under its new
  one, so older workdirs still resume, export, sample and evaluate.
  """
  c = default_config()
  saved = migrate_saved(saved)
  data = saved.get("data")
  if (
      isinstance(data, dict)
      and "eval_fraction" not in data
      and data.get("source") == "file"
  ):
    # Saved before the held-out split: it trained on every row.
    data["eval_fraction"] = 0.0

  def merge(node, values):
    for key, value in values.items():
      if isinstance(value, dict) and isinstance(
          node.get(key), ml_collections.ConfigDict
      ):
        merge(node[key], value)
      else:
        node[key] = value

  merge(c, saved)
  return c


def unknown_fields(
    c: ml_collections.ConfigDict, reference: ml_collections.ConfigDict
) -> list[tuple[str, str | None]]:
  """(field, closest known name or None) for each field `reference` lacks.

  Nested blocks are compared field by field (`sampling.temprature`).
  """
  out = []

  def walk(node, ref, prefix):
    for key in node.keys():
      name = f"{prefix}{key}"
      if key not in ref:
        near = difflib.get_close_matches(key, list(ref.keys()), n=1)
        out.append((name, f"{prefix}{near[0]}" if near else None))
      elif isinstance(ref[key], ml_collections.ConfigDict) and isinstance(
          node[key], ml_collections.ConfigDict
      ):
        walk(node[key], ref[key], name + ".")

  walk(c, reference, "")
  return out


def missing_fields(
    c: ml_collections.ConfigDict, reference: ml_collections.ConfigDict
) -> list[str]:
  """The fields (and blocks) of `reference` that `c` lacks, dotted."""
  out = []

  def walk(node, ref, prefix):
    for key in ref.keys():
      if key not in node:
        out.append(f"{prefix}{key}")
      elif isinstance(ref[key], ml_collections.ConfigDict) and isinstance(
          node[key], ml_collections.ConfigDict
      ):
        walk(node[key], ref[key], f"{prefix}{key}.")

  walk(c, reference, "")
  return out


def check_fields(c: ml_collections.ConfigDict) -> None:
  """Refuses fields `default_config()` does not have (a misspelled name),
  and fields or blocks it has that `c` lacks.

  A config file may set any attribute (`c.optimiser = ...`); such a field
  would be accepted, saved and have no effect. Raises ConfigError naming the
  first unknown field and the closest known one.
  """
  reference = default_config()
  missing = missing_fields(c, reference)
  if missing:
    raise ConfigError(
        f"config.{missing[0]}: missing (the config file deleted or replaced"
        " it); start from default_config() and change fields, not blocks"
    )
  unknown = unknown_fields(c, reference)
  if unknown:
    name, near = unknown[0]
    hint = f"; did you mean config.{near}?" if near else ""
    if name in RENAMED_FIELDS:
      hint = f"; it is config.{RENAMED_FIELDS[name]} now"
    more = (
        f" (also: {', '.join('config.' + n for n, _ in unknown[1:4])})"
        if len(unknown) > 1
        else ""
    )
    raise ConfigError(f"config.{name}: no such field{hint}{more}")


def run_method(c: ml_collections.ConfigDict) -> methods.Method:
  """The run's method: `config.<config.method>` built (its fields checked)."""
  return run_config_lib.method_from_config_dict(c)


def to_run_config(c: ml_collections.ConfigDict) -> RunConfig:
  """The checked, typed `RunConfig` of trainer ConfigDict `c`.

  Raises:
    ConfigError / ValueError: one line naming the `config.*` field.
  """
  return RunConfig.from_config_dict(c)


# Fields read only from a file source (`data.source='file'`): with a
# built-in task they would be ignored.
FILE_ONLY_FIELDS = (
    "path",
    "eval_path",
    "question_field",
    "answer_field",
    "response_field",
    "solution_field",
    "summary_field",
    "wrong_field",
    "skip_ungradable",
    "eval_fraction",
)


def inactive_method_fields(c: ml_collections.ConfigDict) -> list[str]:
  """Fields of methods other than `config.method` set away from defaults.

  `config.<other>.<field>` set under `config.method='<one>'` is such a
  field: the run never reads it. Returns dotted names (`<other>.<field>`).
  """
  out = []
  for name in sorted(methods.REGISTRY):
    if name == c.method or name not in c:
      continue
    default = flatten(method_defaults(name).to_dict(), sep=".")
    for field, value in flatten(c[name].to_dict(), sep=".").items():
      if field in default and value != default[field]:
        out.append(f"{name}.{field}")
  return out


def check_active(
    c: ml_collections.ConfigDict, *, overridden: tuple[str, ...] = ()
) -> None:
  """Refuses settings that cannot act in this run (one line each).

  Called where a run starts (the trainer, the dry run), after `validate`:
  a saved run's config is not re-judged when it is only restored.

  - a model built from a preset (random weights) beside a checkpoint of the
    other role: a forgotten `config.teacher` (or student) would otherwise
    train against a random model;
  - a file source's field (`data.path`, `data.eval_path`, the column names)
    with a built-in task, which would train and evaluate on the task;
  - a field of another method than `config.method`: refused when the
    command line set it (`overridden`: dotted names, `<method>.<field>`), warned
    once when the config file did (switching a config's method is a
    documented use);
  - `data.eval_fraction` beside a `data.eval_path` (refused from the
    command line, else warned once), and warned once: a file source with
    neither (the run will not evaluate).

  Raises:
    ConfigError: naming the field, expected vs got.
  """
  for role, other in (("teacher", "student"), ("student", "teacher")):
    if c[other] and not c[role] and c[other] != "self":
      preset = c[f"{role}_preset"]
      random = (
          f"; config.{role}_preset={preset!r} alone would be a {role} with"
          " random weights"
          if preset
          else ""
      )
      also = " (or 'self')" if role == "teacher" else ""
      raise ConfigError(
          f"config.{role}: expected an HF checkpoint directory{also} beside"
          f" config.{other}={c[other]!r}, got ''{random}"
      )
  d = c.data
  if d.source in tasks.NAMES:
    defaults = default_config().data
    for field in FILE_ONLY_FIELDS:
      if d[field] != defaults[field]:
        raise ConfigError(
            f"config.data.{field}: expected {defaults[field]!r} with the"
            f" built-in task config.data.source={d.source!r} (which trains"
            " and evaluates on its own problems), got"
            f" {d[field]!r}; set config.data.source='file' to use a file"
        )
  for field in inactive_method_fields(c):
    message = (
        f"config.{field}: a field of method {field.split('.')[0]!r}, but"
        f" config.method is {c.method!r}: it has no effect in this run"
    )
    if field in overridden:
      raise ConfigError(
          f"--{message}; drop it or set --config.method={field.split('.')[0]}"
      )
    cli.warn(message)
  _check_evaluation_rows(c, overridden)


def _check_evaluation_rows(
    c: ml_collections.ConfigDict, overridden: tuple[str, ...]
) -> None:
  """A file run's evaluation rows: `eval_path`, or held out of `path`."""
  d = c.data
  default_fraction = default_config().data.eval_fraction
  if d.source == "file" and d.eval_path and d.eval_fraction != default_fraction:
    message = (
        f"config.data.eval_fraction={d.eval_fraction}: holds rows of"
        " config.data.path out for evaluation, but the run evaluates on"
        f" config.data.eval_path={d.eval_path!r}: it has no effect"
    )
    if "data.eval_fraction" in overridden:
      raise ConfigError(f"--{message}; drop one of them")
    cli.warn(message)
  if d.source == "file" and not (d.eval_path or d.eval_fraction):
    if c.eval_every:
      cli.warn(
          "config.data.eval_path is '' and config.data.eval_fraction is 0:"
          f" this run will not evaluate (config.eval_every={c.eval_every}"
          " has nothing to score); give a file with answers to evaluate on,"
          " or hold rows out"
      )


def start_run(
    c: ml_collections.ConfigDict,
    *,
    overridden: tuple[str, ...] = (),
    names: bool = True,
) -> RunConfig:
  """Where a run (or a dry run) starts: the ConfigDict becomes typed.

  `check_fields` first (`names`: a misspelled field would do nothing),
  then the ranges (`to_run_config`), then what cannot act (`check_active`,
  `overridden` the fields the command line set).
  """
  if names:
    check_fields(c)
  run = to_run_config(c)
  check_active(c, overridden=overridden)
  return run


def validate(c: ml_collections.ConfigDict) -> methods.Method:
  """Checks every field's range; raises ConfigError naming the field.

  Returns:
    The run's method (`run_method`).
  """
  return to_run_config(c).method
