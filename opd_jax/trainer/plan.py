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
import optax
from flax import nnx

from opd_jax import methods
from opd_jax.models import ModelConfig, Transformer, dtype_by_name
from opd_jax.rollouts import Sampling
from opd_jax.trainer import builders
from opd_jax.trainer import self_teacher
from opd_jax.trainer import step as steps
from opd_jax.trainer.run_config import ConfigError, Optimizer, RunConfig
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
    run: the typed, checked config (`RunConfig`): what everything after
      `plan_run` reads, never the ConfigDict.
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

  run: RunConfig
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
    return self.run.rollouts.sampling

  def abstract_batch(self) -> dict[str, jax.ShapeDtypeStruct]:
    """Shapes of one step's batch: prompt + response ids and masks, and a
    staged method's `prepare` outputs."""
    d = self.run.data
    b, p, t = d.batch_size, d.max_prompt_len, d.max_new_tokens
    batch = {
        "tokens": jax.ShapeDtypeStruct((b, p + t), jnp.int32),
        "mask": jax.ShapeDtypeStruct((b, p + t), jnp.bool_),
        "response_mask": jax.ShapeDtypeStruct((b, t), jnp.bool_),
        "sampler_logprobs": jax.ShapeDtypeStruct((b, t), jnp.float32),
    }
    if methods.has_stage(self.method):
      ctx = self.run.teacher_context
      batch.update(
          self.method.prepare_shapes(
              b, p, t, ctx.max_prompt_len if ctx else None
          )
      )
    batch.update(self_teacher.abstract_teacher_batch(self.run))
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
        teacher_weights=self.run.teacher.step_weights,
        divergence_clip=self.run.teacher.kl_clip,
        micro_batches=self.run.models.micro_batches,
    )

  def init_state(self, params: Any) -> TrainState:
    """A fresh TrainState at step 0 for `params` (trace it: under jit or
    `eval_shape`, so that making the key compiles nothing of its own)."""
    return init_state(params, self.optimizer, jax.random.PRNGKey(self.run.seed))


def optimizer_from_config(o: Optimizer):
  """The optax optimizer of `config.optimizer` and its learning-rate schedule."""
  return (
      make_optimizer(**o.optimizer_args()),
      learning_rate_schedule(**o.schedule_args()),
  )


def plan_run(
    run: RunConfig,
    *,
    allow_preset_fallback: bool = False,
    need_teacher: bool = True,
    mesh=None,
) -> RunPlan:
  """Checks `run` and decides its models, dtypes, method, optimizer.

  Reads only the models' `config.json` files, never their weights.

  Args:
    run: the typed run config (`config.start_run` or `to_run_config`
      makes one from a trainer ConfigDict, where a script starts).
    allow_preset_fallback: use `config.<role>_preset` in place of a model
      directory that is not on this machine (dry runs, restoring).
    need_teacher: False plans without the teacher unless the student's
      vocabulary padding needs its size (export and sampling of a run).
    mesh: the mesh to run on; `config.mesh` over the devices if None.

  Returns:
    The RunPlan.
  """
  m = run.models
  scfg, s_from = builders.model_config(
      run, "student", allow_preset_fallback=allow_preset_fallback
  )
  tcfg, t_from = None, ""
  if need_teacher or m.pad_student_vocab:
    tcfg, t_from = builders.model_config(
        run, "teacher", allow_preset_fallback=allow_preset_fallback
    )
    builders.check_vocabularies(scfg, tcfg, pad_student=m.pad_student_vocab)
    if m.pad_student_vocab and scfg.vocab_size < tcfg.vocab_size:
      scfg = scfg.replace(vocab_size=tcfg.vocab_size)
  scfg = scfg.replace(**m.execution("student"))
  if tcfg is not None:
    tcfg = tcfg.replace(**m.execution("teacher"))
  mesh = mesh or builders.mesh_from_config(run.mesh)
  check_shapes(run, mesh, [("student", scfg), ("teacher", tcfg)])
  self_teacher.check_lengths(run, tcfg)
  optimizer, schedule = optimizer_from_config(run.optimizer)
  return RunPlan(
      run=run,
      mesh=mesh,
      student_config=scfg,
      teacher_config=tcfg,
      student_from=s_from,
      teacher_from=t_from,
      dtype=dtype_by_name(m.dtype),
      compute_dtype=(
          dtype_by_name(m.compute_dtype, "compute_dtype")
          if m.compute_dtype
          else None
      ),
      method=run.method,
      optimizer=self_teacher.wrap_optimizer(run.teacher, optimizer),
      schedule=schedule,
  )


def check_shapes(
    run: RunConfig,
    mesh,
    models: list[tuple[str, ModelConfig | None]],
) -> None:
  """The batch splits over the data-parallel devices; sequences fit
  (a staged method's too)."""
  b, p, t = (
      run.data.batch_size,
      run.data.max_prompt_len,
      run.data.max_new_tokens,
  )
  micro_batches = run.models.micro_batches
  parallel = mesh.shape["data"] * mesh.shape["fsdp"]
  if b % parallel:
    raise ConfigError(
        f"config.batch_size: expected a multiple of the {parallel}"
        f" data-parallel devices (mesh data={mesh.shape['data']} x"
        f" fsdp={mesh.shape['fsdp']}), got {b}; otherwise each"
        " device would compute the whole batch"
    )
  rows = b // micro_batches
  if rows % parallel:
    raise ConfigError(
        "config.micro_batches: expected groups of rows that split over the"
        f" {parallel} data-parallel devices, got {micro_batches} groups of"
        f" {b} / {micro_batches} = {rows} rows; use a divisor"
        f" of {b // parallel}"
    )
  for role, config in models:
    if config is not None and p + t > config.max_position_embeddings:
      raise ConfigError(
          "config.max_prompt_len + config.max_new_tokens: expected <= the"
          f" {role}'s max_position_embeddings"
          f" ({config.max_position_embeddings}), got {p} + {t} = {p + t}"
      )
  method = run.method
  if not methods.has_stage(method):
    return
  try:
    method.prepare_shapes(b, p, t)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  length = method.sequence_length(p, t)
  for role, config in models:
    if config is not None and length > config.max_position_embeddings:
      raise ConfigError(
          "config.max_prompt_len + config.max_new_tokens + the"
          f" {run.method_name} stage's branches: expected <= the {role}'s"
          f" max_position_embeddings ({config.max_position_embeddings}),"
          f" got {length}; shorten the stage's sequences in"
          f" config.{run.method_name}"
      )


def split_abstract(model: Transformer):
  """(graphdef, pure-dict abstract parameters) of an abstract model."""
  graphdef, state = nnx.split(model)
  return graphdef, state.to_pure_dict()
