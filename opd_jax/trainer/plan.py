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
"""One function turns a config into the run's plan: models, dtypes, method, optimizer.

The dry run, the trainer, `restore_student` and the benchmarks all start
from `plan_run`, so the vocabulary padding, the dtypes and the optimizer
are decided in one place.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from opd_jax import methods
from opd_jax.models import ModelConfig, Transformer, dtype_by_name
from opd_jax.rollouts import Sampling
from opd_jax.trainer import builders
from opd_jax.trainer import self_teacher
from opd_jax.trainer import step as steps
from opd_jax.trainer.config import ConfigError, to_run_config
from opd_jax.trainer.state import (
    TrainState,
    init_state,
    learning_rate_schedule,
    make_optimizer,
)


@dataclasses.dataclass(frozen=True)
class RunPlan:
  """What a config decides before any weight is loaded or compiled.

  Attributes:
    config: the validated config.
    mesh: the device mesh of `config.mesh` (or the one given).
    student_config: the student's ModelConfig, its vocabulary already
      padded to the teacher's when `config.pad_student_vocab`.
    teacher_config: the teacher's ModelConfig (None when the plan was made
      without the teacher, e.g. to restore a student for export).
    student_from, teacher_from: where each came from (directory or preset).
    dtype: parameter dtype.
    compute_dtype: mixed-precision compute dtype, or None.
    method: the built distillation method.
    optimizer: the optax optimizer.
    schedule: its learning-rate schedule.
  """

  config: ml_collections.ConfigDict
  mesh: Any
  student_config: ModelConfig
  teacher_config: ModelConfig | None
  student_from: str
  teacher_from: str
  dtype: Any
  compute_dtype: Any
  method: methods.Method
  optimizer: optax.GradientTransformation
  schedule: Callable[[jax.Array], jax.Array]

  @property
  def sampling(self) -> Sampling:
    """How the run samples its rollouts (`config.sampling`)."""
    return Sampling(**self.config.sampling.to_dict())

  def abstract_batch(self) -> dict[str, jax.ShapeDtypeStruct]:
    """Shapes of one step's batch: prompt + response ids and masks, and a
    staged method's `prepare` outputs."""
    c = self.config
    b, p, t = c.batch_size, c.max_prompt_len, c.max_new_tokens
    batch = {
        "tokens": jax.ShapeDtypeStruct((b, p + t), jnp.int32),
        "mask": jax.ShapeDtypeStruct((b, p + t), jnp.bool_),
        "response_mask": jax.ShapeDtypeStruct((b, t), jnp.bool_),
        "sampler_logprobs": jax.ShapeDtypeStruct((b, t), jnp.float32),
    }
    if methods.has_stage(self.method):
      ctx = self_teacher.teacher_context(c)
      batch.update(
          self.method.prepare_shapes(
              b, p, t, ctx.max_prompt_len if ctx else None
          )
      )
    batch.update(self_teacher.abstract_teacher_batch(c))
    return batch

  def abstract_model(self, role: str) -> Transformer:
    """The `role` model of the plan, with ShapeDtypeStruct parameters."""
    config = self.student_config if role == "student" else self.teacher_config
    return builders.abstract_model(config, self.dtype)

  def abstract_state(self, params: Any) -> TrainState:
    """The TrainState (ShapeDtypeStructs) for student `params`."""
    return jax.eval_shape(self.init_state, params)

  def compile_step(
      self,
      state: TrainState,
      teacher: Any,
      batch: Any,
      *,
      student_graphdef: Any,
      teacher_graphdef: Any,
      eos_ids: tuple[int, ...] | None = None,
  ):
    """The plan's train step, jitted with shardings (`step.compile_step`).

    Args:
      state, teacher, batch: the step's arguments, concrete or abstract.
      student_graphdef, teacher_graphdef: the models' graph definitions.
      eos_ids: ids that end a response (default: the student config's).

    Returns:
      (jitted step, state shardings, teacher shardings, batch shardings).
    """
    if eos_ids is None:
      eos_ids = tuple(self.student_config.eos_token_ids)
    return steps.compile_step(
        self.mesh,
        state,
        teacher,
        batch,
        student_graphdef=student_graphdef,
        teacher_graphdef=teacher_graphdef,
        method=self.method,
        optimizer=self.optimizer,
        eos_ids=eos_ids,
        learning_rate_fn=self.schedule,
        compute_dtype=self.compute_dtype,
        teacher_weights=self_teacher.step_weights(self.config),
        divergence_clip=self.config.teacher_context.kl_clip,
        micro_batches=self.config.micro_batches,
    )

  def init_state(self, params: Any) -> TrainState:
    """A fresh TrainState at step 0 for `params` (trace it: under jit or
    `eval_shape`, so that making the key compiles nothing of its own)."""
    return init_state(
        params, self.optimizer, jax.random.PRNGKey(self.config.seed)
    )


def optimizer_from_config(c: ml_collections.ConfigDict):
  """The optax optimizer of `config.optimizer` and its learning-rate schedule."""
  o = c.optimizer
  optimizer = make_optimizer(
      learning_rate=o.learning_rate,
      total_steps=c.total_steps,
      warmup_steps=o.warmup_steps,
      end_lr_fraction=o.end_lr_fraction,
      weight_decay=o.weight_decay,
      b1=o.b1,
      b2=o.b2,
      clip_norm=o.clip_norm,
  )
  schedule = learning_rate_schedule(
      learning_rate=o.learning_rate,
      total_steps=c.total_steps,
      warmup_steps=o.warmup_steps,
      end_lr_fraction=o.end_lr_fraction,
  )
  return optimizer, schedule


def plan_run(
    c: ml_collections.ConfigDict,
    *,
    allow_preset_fallback: bool = False,
    need_teacher: bool = True,
    mesh=None,
) -> RunPlan:
  """Validates `c` and decides the run's models, dtypes, method, optimizer.

  Reads only the models' `config.json` files, never their weights.

  Args:
    c: the trainer config.
    allow_preset_fallback: use `config.<role>_preset` in place of a model
      directory that is not on this machine (dry runs, restoring).
    need_teacher: False plans without the teacher unless the student's
      vocabulary padding needs its size (export and sampling of a run).
    mesh: the mesh to run on; `config.mesh` over the devices if None.

  Returns:
    The RunPlan.
  """
  method = to_run_config(c).method
  scfg, s_from = builders.model_config(
      c, "student", allow_preset_fallback=allow_preset_fallback
  )
  tcfg, t_from = None, ""
  if need_teacher or c.pad_student_vocab:
    tcfg, t_from = builders.model_config(
        c, "teacher", allow_preset_fallback=allow_preset_fallback
    )
    builders.check_vocabularies(scfg, tcfg, pad_student=c.pad_student_vocab)
    if c.pad_student_vocab and scfg.vocab_size < tcfg.vocab_size:
      scfg = scfg.replace(vocab_size=tcfg.vocab_size)
  scfg = scfg.replace(**builders.execution(c, "student"))
  if tcfg is not None:
    tcfg = tcfg.replace(**builders.execution(c, "teacher"))
  mesh = mesh or builders.mesh_from_config(c)
  check_shapes(c, mesh, [("student", scfg), ("teacher", tcfg)], method)
  self_teacher.check_lengths(c, tcfg)
  optimizer, schedule = optimizer_from_config(c)
  optimizer = self_teacher.wrap_optimizer(c, optimizer)
  return RunPlan(
      config=c,
      mesh=mesh,
      student_config=scfg,
      teacher_config=tcfg,
      student_from=s_from,
      teacher_from=t_from,
      dtype=dtype_by_name(c.dtype),
      compute_dtype=(
          dtype_by_name(c.compute_dtype, "compute_dtype")
          if c.compute_dtype
          else None
      ),
      method=method,
      optimizer=optimizer,
      schedule=schedule,
  )


def check_shapes(
    c: ml_collections.ConfigDict,
    mesh,
    models: list[tuple[str, ModelConfig | None]],
    method: methods.Method | None = None,
) -> None:
  """The batch splits over the data-parallel devices; sequences fit
  (a staged method's too)."""
  parallel = mesh.shape["data"] * mesh.shape["fsdp"]
  if c.batch_size % parallel:
    raise ConfigError(
        f"config.batch_size: expected a multiple of the {parallel}"
        f" data-parallel devices (mesh data={mesh.shape['data']} x"
        f" fsdp={mesh.shape['fsdp']}), got {c.batch_size}; otherwise each"
        " device would compute the whole batch"
    )
  rows = c.batch_size // c.micro_batches
  if rows % parallel:
    raise ConfigError(
        "config.micro_batches: expected groups of rows that split over the"
        f" {parallel} data-parallel devices, got {c.micro_batches} groups of"
        f" {c.batch_size} / {c.micro_batches} = {rows} rows; use a divisor"
        f" of {c.batch_size // parallel}"
    )
  length = c.max_prompt_len + c.max_new_tokens
  for role, config in models:
    if config is not None and length > config.max_position_embeddings:
      raise ConfigError(
          "config.max_prompt_len + config.max_new_tokens: expected <= the"
          f" {role}'s max_position_embeddings"
          f" ({config.max_position_embeddings}), got {c.max_prompt_len} +"
          f" {c.max_new_tokens} = {length}"
      )
  if method is None or not methods.has_stage(method):
    return
  try:
    method.prepare_shapes(c.batch_size, c.max_prompt_len, c.max_new_tokens)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  length = method.sequence_length(c.max_prompt_len, c.max_new_tokens)
  for role, config in models:
    if config is not None and length > config.max_position_embeddings:
      raise ConfigError(
          "config.max_prompt_len + config.max_new_tokens + the"
          f" {c.method} stage's branches: expected <= the {role}'s"
          f" max_position_embeddings ({config.max_position_embeddings}),"
          f" got {length}; shorten the stage's sequences in config.{c.method}"
      )


def split_abstract(model: Transformer):
  """(graphdef, pure-dict abstract parameters) of an abstract model."""
  graphdef, state = nnx.split(model)
  return graphdef, state.to_pure_dict()
