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
"""What several `scripts/` share: flag blocks, their checks, model loading.

Each `*_flags()` function defines a block of flags that more than one
script takes (same names, defaults and help) and returns their FlagHolders,
absl style; a script calls it at import, where its `DEFINE_*` lines were:

  _SRC = script_flags.source_flags(
      difficulty_default=None, difficulty_help="Built-in task (...)."
  )
  _GRADING = script_flags.grading_flags()
  ... _SRC.question_field.value, _GRADING.workers.value ...

The flags count as the calling script's own (absl's `module_name`), so its
`--help` lists them as before. Where scripts differ on purpose (a default, a
help text) the difference is an argument at the call site.

`load_model` / `restore_workdir` / `hf_model` load the model a flag names
(an HF directory or a training workdir's newest checkpoint) as a
`LoadedModel`; `task_source` builds a built-in task's questions;
`check_sampling` and `check_response_length` are the checks with one
`error:` line that the scripts share. Everything heavy is imported inside
the functions, so a script's flags are checked before JAX loads.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any, NamedTuple

from absl import flags

from opd_jax.cli import InputError


def _caller_module() -> str:
  """The module calling into this one, named as absl names a flag's module.

  absl's `--help` lists the flags of the main module (`sys.argv[0]`); a flag
  defined here would count as this module's and drop out of it.
  """
  frame = sys._getframe(1)  # pylint: disable=protected-access
  while frame.f_globals.get("__name__") == __name__:
    frame = frame.f_back
  name = frame.f_globals.get("__name__")
  return sys.argv[0] if name == "__main__" else name


class SourceFlags(NamedTuple):
  """The flags naming a question source's fields and the built-in task."""

  question_field: flags.FlagHolder[str]
  answer_field: flags.FlagHolder[str]
  split: flags.FlagHolder[str]
  difficulty: flags.FlagHolder[str | None]


def source_flags(
    *,
    difficulty_default: str | None,
    difficulty_help: str,
    answer_help: str = "Answer field.",
) -> SourceFlags:
  """Defines --question_field, --answer_field, --split and --difficulty.

  Args:
    difficulty_default: --difficulty's default (None: the script resolves
      it, e.g. from a run's config).
    difficulty_help: its help text (says where the default comes from).
    answer_help: --answer_field's help text.

  Returns:
    Their FlagHolders.
  """
  from opd_jax.data import tasks  # pylint: disable=g-import-not-at-top

  # Every task's levels; `task_source` checks the one a task has.
  levels = tuple(
      dict.fromkeys(d for t in tasks.TASKS.values() for d in t.difficulties)
  )
  module = _caller_module()
  return SourceFlags(
      question_field=flags.DEFINE_string(
          "question_field", "question", "Question field.", module_name=module
      ),
      answer_field=flags.DEFINE_string(
          "answer_field", "answer", answer_help, module_name=module
      ),
      split=flags.DEFINE_string(
          "split", "test", "Built-in task split.", module_name=module
      ),
      difficulty=flags.DEFINE_enum(
          "difficulty",
          difficulty_default,
          levels,
          difficulty_help,
          module_name=module,
      ),
  )


class GradingFlags(NamedTuple):
  """The math-verify pool's flags (timeout None where not defined)."""

  workers: flags.FlagHolder[int]
  timeout: flags.FlagHolder[float] | None


def grading_flags(*, timeout: bool = True) -> GradingFlags:
  """Defines --grading_workers and (with `timeout`) --grading_timeout."""
  module = _caller_module()
  return GradingFlags(
      workers=flags.DEFINE_integer(
          "grading_workers", 2, "math-verify workers.", module_name=module
      ),
      timeout=(
          flags.DEFINE_float(
              "grading_timeout",
              10.0,
              "Seconds per answer.",
              module_name=module,
          )
          if timeout
          else None
      ),
  )


class SamplingFlags(NamedTuple):
  """Temperature and nucleus sampling, greedy by default."""

  temperature: flags.FlagHolder[float]
  top_p: flags.FlagHolder[float]


def sampling_flags() -> SamplingFlags:
  """Defines --temperature (0: greedy) and --top_p; see `check_sampling`."""
  module = _caller_module()
  return SamplingFlags(
      temperature=flags.DEFINE_float(
          "temperature", 0.0, "0 is greedy.", module_name=module
      ),
      top_p=flags.DEFINE_float(
          "top_p", 1.0, "Nucleus sampling.", module_name=module
      ),
  )


def check_sampling(sampling: SamplingFlags) -> None:
  """Refuses a temperature that is not a finite number >= 0, a top_p outside
  (0, 1], and a top_p below 1 with greedy decoding (it would do nothing)."""
  temperature, top_p = sampling.temperature.value, sampling.top_p.value
  if not 0 <= temperature < float("inf"):  # nan too
    raise InputError(
        "--temperature: expected a finite number >= 0 (0 is greedy), got"
        f" {temperature}"
    )
  if not 0 < top_p <= 1:
    raise InputError(f"--top_p: expected a value in (0, 1], got {top_p}")
  if top_p != 1 and temperature == 0:
    raise InputError(
        f"--top_p={top_p}: has no effect with greedy decoding"
        " (--temperature=0, the default); expected --temperature > 0 or"
        " --top_p=1"
    )


def check_response_length(longest: int, max_new: int, model_config) -> None:
  """Refuses rollouts longer than the model's positions (as train.py).

  Args:
    longest: the longest prompt, in tokens.
    max_new: --max_new_tokens (as resolved by the script).
    model_config: the model's `ModelConfig`.
  """
  limit = model_config.max_position_embeddings
  if longest + max_new > limit:
    raise InputError(
        f"--max_new_tokens: the longest prompt ({longest} tokens) +"
        f" {max_new} new tokens exceeds the model's max_position_embeddings"
        f" ({limit})"
    )


@dataclasses.dataclass(frozen=True)
class LoadedModel:
  """A model a script loaded, and what it reports about it.

  Attributes:
    model: the `Transformer`.
    tokenizer_dir: its tokenizer's directory (the HF directory, or the
      run's `tokenizer` else its `student`).
    name: how reports name it: the path, `PATH (step N)` for a workdir.
    step: the checkpoint's step (None for an HF directory).
    run_config: a workdir's run config (None for an HF directory).
  """

  model: Any
  tokenizer_dir: str
  name: str
  step: int | None = None
  run_config: Any = None


def hf_model(path: str, role: str | None = None) -> LoadedModel:
  """An HF directory's model; `role` prefixes load_hf's errors."""
  from opd_jax.models import load_hf  # pylint: disable=g-import-not-at-top

  return LoadedModel(load_hf(path, role=role), path, path)


def restore_workdir(path: str) -> LoadedModel:
  """A training workdir's newest student (FileNotFoundError without one)."""
  from opd_jax.trainer import restore  # pylint: disable=g-import-not-at-top

  model, step, c = restore.restore_student(path)
  return LoadedModel(
      model, c.tokenizer or c.student, f"{path} (step {step})", step, c
  )


def load_model(path: str, role: str, *, allow_workdir: bool) -> LoadedModel:
  """An HF directory's model or (`allow_workdir`) a workdir's newest student.

  Args:
    path: the value of the flag --`role`.
    role: the flag's name, without dashes (named by every error).
    allow_workdir: whether a training workdir is accepted.

  Raises:
    InputError: one line naming the flag: no such directory, no checkpoint
      in it, a workdir without a (restorable) checkpoint.
  """
  if not path or not os.path.isdir(path):
    raise InputError(f"--{role} {path!r}: no such directory")
  files = os.listdir(path)
  if any(f.endswith(".safetensors") for f in files):
    return hf_model(path)
  if not allow_workdir or "config.json" not in files:
    raise InputError(
        f"--{role} {path}: no checkpoint (expected config.json and"
        f" *.safetensors{' or a training workdir' if allow_workdir else ''})"
    )
  ckpt = os.path.join(path, "checkpoints")
  # Checked here: the checkpointer would create the directory otherwise.
  if not os.path.isdir(ckpt) or not os.listdir(ckpt):
    raise InputError(f"--{role} {path}: a workdir with no checkpoint")
  try:
    return restore_workdir(path)
  except FileNotFoundError as e:
    raise InputError(f"--{role} {path}: {e}") from e


def task_source(
    task: str,
    difficulty: str,
    split: str,
    num_questions: int,
    max_new_tokens: int | None = None,
):
  """Built-in task `task`'s `num_questions` questions of `split`.

  Raises:
    InputError: `task` has no level `difficulty` (--difficulty), its `split`
      holds fewer than `num_questions` distinct problems (--num_questions),
      or `max_new_tokens` (when given) is below its shortest reference
      response (--max_new_tokens).
  """
  from opd_jax.data import sources, tasks  # pylint: disable=g-import-not-at-top

  if split not in sources.SPLITS:
    raise InputError(
        f"--split: expected one of {sources.SPLITS}, got {split!r}"
    )
  try:
    tasks.check_difficulty(task, difficulty, field="--difficulty")
    tasks.check_num_examples(
        task, difficulty, split, num_questions, field="--num_questions"
    )
    if max_new_tokens is not None:
      tasks.check_response_budget(
          task, difficulty, max_new_tokens, field="--max_new_tokens"
      )
  except ValueError as e:
    raise InputError(str(e)) from None
  return sources.TaskSource(
      split, num_questions, task=task, difficulty=difficulty
  )
