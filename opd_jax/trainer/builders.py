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
"""Builds models, data and the jitted step from a config (shared by train, dry run, scripts)."""

from __future__ import annotations

import os
from typing import Any

import jax
from flax import nnx

from opd_jax import cli
from opd_jax import evaluation
from opd_jax import sharding
from opd_jax.data import sources, tasks
from opd_jax.data import tokenizer as tokenizers
from opd_jax.data.dataset import PromptDataset
from opd_jax.data.sources import FileSource, TaskSource
from opd_jax.models import (
    ModelConfig,
    Transformer,
    load_hf,
    preset,
    resize_vocab,
)
from opd_jax.models.hf_io import read_hf_config
from opd_jax.trainer import run_config as run_config_lib
from opd_jax.trainer.run_config import RunConfig


class VocabularyMismatchError(ValueError):
  """Teacher and student do not share a vocabulary."""


def model_config(
    run: RunConfig, role: str, *, allow_preset_fallback: bool
) -> tuple[ModelConfig, str]:
  """The ModelConfig of `role` ('student' / 'teacher') and where it came from.

  Reads `<path>/config.json` when the directory exists; with no path, the
  preset (random weights). With `allow_preset_fallback` (a dry run,
  restoring a run elsewhere) the preset also stands in for a directory that
  is not on this machine, with one warning naming both (a mistyped path
  must not pass silently).
  """
  if role == "teacher" and run.teacher.is_self:
    config, where = model_config(
        run, "student", allow_preset_fallback=allow_preset_fallback
    )
    return config, f"self ({where}, weights {run.teacher.self_weights})"
  path, name = run.checkpoint(role)
  if path and os.path.isdir(path):
    return read_hf_config(path)[0], path
  if path and os.path.exists(path):
    raise FileNotFoundError(
        f"config.{role}: {path!r} is a file; expected an HF checkpoint"
        " directory (config.json, model.safetensors)"
    )
  if path and not (allow_preset_fallback and name):
    raise FileNotFoundError(
        f"config.{role}: checkpoint directory {path!r} does not exist"
    )
  if path:
    cli.warn(
        f"config.{role}: {path!r} is not a directory on this machine; using"
        f" the shapes of config.{role}_preset={name!r} in its place"
    )
    return preset(name), f"preset {name} (in place of {path})"
  return preset(name), f"preset {name} (random weights)"


def check_vocabularies(
    student: ModelConfig, teacher: ModelConfig, *, pad_student: bool = False
) -> None:
  """Raises unless the two models share the id range (after any padding)."""
  if pad_student and student.vocab_size < teacher.vocab_size:
    return
  if student.vocab_size != teacher.vocab_size:
    raise VocabularyMismatchError(
        "teacher and student vocabularies differ: teacher vocab_size="
        f"{teacher.vocab_size}, student vocab_size={student.vocab_size}; OPD"
        " scores the student's tokens with the teacher, so both must use the"
        " same tokenizer. If the student's is the same tokenizer with fewer"
        " padding rows, set config.pad_student_vocab=True"
    )


def build_model(
    run: RunConfig,
    role: str,
    mesh,
    *,
    dtype,
    vocab_size: int | None = None,
) -> Transformer:
  """Loads `role`'s checkpoint onto `mesh`, or builds its preset randomly.

  With `vocab_size` larger than the checkpoint's (the plan's padded student
  vocabulary), the embedding and head get new rows (`resize_vocab`).
  The teacher 'self' is the student's checkpoint (theta_0); a live or EMA
  self-teacher takes its weights from the train state, so it is abstract
  here (its graph only: no second copy of the student's parameters).
  """
  source = role
  execution = run.models.execution(role)
  if role == "teacher" and run.teacher.is_self:
    source = "student"
    if run.teacher.step_weights != "external":
      config, _ = model_config(run, "teacher", allow_preset_fallback=False)
      return abstract_model(config, dtype).set_execution(**execution)
  path, name = run.checkpoint(source)
  if path:
    model = load_hf(path, dtype=dtype, mesh=mesh, role=f"config.{source}")
  else:
    seed = run.seed + (0 if source == "student" else 1)
    model = _random_model(preset(name), seed, dtype, mesh)
  if vocab_size is not None and model.config.vocab_size != vocab_size:
    model = resize_vocab(model, vocab_size)
  return model.set_execution(**execution)


def _random_model(config: ModelConfig, seed: int, dtype, mesh) -> Transformer:
  graphdef, abstract_state = nnx.split(abstract_model(config, dtype))
  init = jax.jit(
      lambda: nnx.split(Transformer(config, dtype=dtype, rngs=nnx.Rngs(seed)))[
          1
      ],
      out_shardings=sharding.param_shardings(abstract_state, mesh),
  )
  return nnx.merge(graphdef, init())


def abstract_model(config: ModelConfig, dtype) -> Transformer:
  return nnx.eval_shape(
      lambda: Transformer(config, dtype=dtype, rngs=nnx.Rngs(0))
  )


def load_tokenizer(models):
  """The tokenizer from `config.tokenizer`, else the student's directory.

  `models` is the run's `Models` block, or a run's ConfigDict as restored
  (both name the two directories alike).
  """
  path = models.tokenizer or models.student
  if not path or not os.path.isdir(path):
    raise FileNotFoundError(
        f"config.tokenizer: no tokenizer directory (got {path!r}); set"
        " config.tokenizer or config.student to an HF directory"
    )
  return tokenizers.load_tokenizer(
      path, role="config.tokenizer" if models.tokenizer else "config.student"
  )


def check_teacher_tokenizer(run: RunConfig, tokenizer) -> None:
  """Refuses a teacher whose tokenizer maps ids to other tokens.

  Equal vocabulary sizes are not enough: OPD scores the student's token ids
  with the teacher, so the two vocabularies must agree id by id. A teacher
  directory without tokenizer files is taken to share the student's.
  `config.allow_tokenizer_mismatch` turns the error into a warning.
  """
  path, m = run.teacher.path, run.models
  if (
      not path
      or not os.path.isdir(path)
      or not any(
          os.path.isfile(os.path.join(path, f))
          for f in tokenizers.VOCABULARY_FILES
      )
  ):
    return
  if os.path.realpath(path) == os.path.realpath(m.tokenizer or m.student):
    return
  teacher = tokenizers.load_tokenizer(path, role="config.teacher")
  try:
    tokenizers.check_same_vocabulary(
        tokenizer, teacher, allow_mismatch=m.allow_tokenizer_mismatch
    )
  except tokenizers.TokenizerMismatchError as e:  # name the config field
    raise tokenizers.TokenizerMismatchError(
        str(e).replace(
            "allow_mismatch=True", "--config.allow_tokenizer_mismatch=True"
        )
    ) from None


def prompt_source(run: RunConfig, *, train: bool):
  """The configured training or evaluation PromptSource."""
  d = run.data
  if d.is_task:
    split, n = (
        ("train", d.num_examples) if train else (d.eval_split, d.eval_examples)
    )
    return TaskSource(
        split, n, task=d.source, difficulty=d.difficulty, seed=run.seed
    )
  if holds_out(run):
    source = _held_out_split(run, train=train)
    if train or source is None:
      return source
    return sources.take(source, d.eval_examples)
  source = FileSource(
      d.path if train else d.eval_path,
      question_field=d.question_field,
      answer_field=d.answer_field or None,
      response_field=d.response_field or None,
      # OPD trains without answers; evaluation grades them.
      require_answers=not train,
      context_fields=d.context_columns if train else None,
      # A saved DatasetDict: evaluation reads it at `eval_split`, as
      # evaluate.py reads one at --split (both 'test' by default).
      split="train" if train else d.eval_split,
  )
  return source if train else sources.take(source, d.eval_examples)


def holds_out(run: RunConfig) -> bool:
  """A file run that evaluates without `eval_path`: on held-out rows."""
  return run.data.holds_out and run.logging.eval_every > 0


def _held_out_split(run: RunConfig, *, train: bool):
  """`data.path`'s training rows, or its held-out rows (None, said once,
  when the file has no answers to grade them by: it is trained on whole)."""
  d = run.data
  source = FileSource(
      d.path,
      question_field=d.question_field,
      answer_field=d.answer_field or None,
      response_field=d.response_field or None,
      context_fields=d.context_columns if train else None,
  )
  if not source.has_answers:
    cli.warn(
        f"config.data.path {d.path} has no answer field"
        f" (config.data.answer_field={d.answer_field!r}): nothing is held out"
        " and this run will not evaluate (config.eval_every="
        f"{run.logging.eval_every}); give config.data.eval_path or a file"
        " with answers"
    )
    return source if train else None
  rest, held = sources.hold_out(
      source, d.eval_fraction, field="config.data.eval_fraction"
  )
  if train:
    print(f"evaluation rows: {held.name} (not trained on)", flush=True)
  return rest if train else held


def train_dataset(run: RunConfig, tokenizer) -> PromptDataset:
  """Tokenized training prompts; raises before any compile if empty."""
  d = run.data
  if d.is_task:
    # Here, not in config validation: shape-only uses of a config (dry
    # runs, memory benchmarks) train on no data.
    tasks.check_response_budget(
        d.source,
        d.difficulty,
        d.max_new_tokens,
        field="config.max_new_tokens",
    )
    role = "config.tokenizer" if run.models.tokenizer else "config.student"
    tasks.check_tokenizer(d.source, tokenizer, role=role)
  return PromptDataset(
      prompt_source(run, train=True),
      tokenizer,
      max_prompt_len=d.max_prompt_len,
      max_new_tokens=d.max_new_tokens,
      overlong=d.overlong,
      teacher_context=run.teacher_context,
      **chat_format(run),
  )


def eval_dataset(run: RunConfig, tokenizer) -> PromptDataset | None:
  """Tokenized evaluation prompts (a file's ungradable rows dropped with
  `data.skip_ungradable`); None when there are none to grade."""
  source = prompt_source(run, train=False)
  if source is None:  # a file without answers to hold out (said once)
    return None
  if run.data.skip_ungradable and not run.data.is_task:
    source = evaluation.drop_ungradable(
        source, flag="config.data.skip_ungradable"
    )
  return PromptDataset(
      source,
      tokenizer,
      max_prompt_len=run.data.max_prompt_len,
      overlong=run.data.overlong,
      **chat_format(run),
  )


def chat_format(c) -> dict[str, Any]:
  """PromptDataset's chat settings from `config.data` (of a `RunConfig`,
  or of a run's ConfigDict as restored: both name the fields alike).

  `system_prompt='default'` leaves the system turn to the chat template
  (some add their own, e.g. SmolLM2's); '' sends an empty system turn,
  which replaces such a default; anything else is the system turn.
  """
  d = c.data
  return {
      "use_chat_template": d.use_chat_template,
      "system_prompt": (
          None if d.system_prompt == "default" else d.system_prompt
      ),
  }


def mesh_from_config(m: run_config_lib.Mesh) -> Any:
  """The mesh of `config.mesh`; `num_devices > 0` uses only the first ones."""
  devices = jax.devices()
  if m.num_devices:
    if m.num_devices > len(devices):
      raise ValueError(
          f"config.mesh.num_devices: expected <= {len(devices)}"
          f" (the available devices), got {m.num_devices}"
      )
    devices = devices[: m.num_devices]
  return sharding.make_mesh(
      sharding.MeshConfig(data=m.data, fsdp=m.fsdp, tensor=m.tensor), devices
  )
