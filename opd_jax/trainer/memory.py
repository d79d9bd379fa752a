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
"""Per-device memory of a run's compiled update step and sampler, ahead of time.

Both programs are compiled as the trainer compiles them, on
ShapeDtypeStructs that carry the run's shardings: no weight is loaded and
nothing runs, so a laptop with fake CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=8`) reports what an
8-device mesh would hold per device. The figures are XLA's
`memory_analysis()` of the compiled program: arguments, temporaries,
outputs and the donated (aliased) bytes; their total (arguments +
temporaries + outputs - aliased) bounds the program's peak.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from opd_jax import sharding
from opd_jax.rollouts import sampler
from opd_jax.trainer.update import compile_ahead

GIB = 2.0**30


@dataclasses.dataclass(frozen=True)
class ProgramMemory:
  """Bytes one device holds for one compiled program (`memory_analysis()`)."""

  argument_bytes: int
  temp_bytes: int
  output_bytes: int
  alias_bytes: int

  @property
  def total_bytes(self) -> int:
    return (
        self.argument_bytes
        + self.temp_bytes
        + self.output_bytes
        - self.alias_bytes
    )

  @classmethod
  def of(cls, analysis) -> ProgramMemory:
    if analysis is None:
      raise RuntimeError(
          f"the {jax.default_backend()} backend gives no memory analysis"
      )
    return cls(
        argument_bytes=int(analysis.argument_size_in_bytes),
        temp_bytes=int(analysis.temp_size_in_bytes),
        output_bytes=int(analysis.output_size_in_bytes),
        alias_bytes=int(analysis.alias_size_in_bytes),
    )

  def line(self, what: str) -> str:
    """`{what} memory per device: arguments A GiB, temporaries T GiB, total
    N GiB` (the dry run's form)."""
    return (
        f"{what} memory per device: arguments"
        f" {self.argument_bytes / GIB:.2f} GiB, temporaries"
        f" {self.temp_bytes / GIB:.2f} GiB, total"
        f" {self.total_bytes / GIB:.2f} GiB"
    )

  def as_dict(self) -> dict[str, int]:
    return {**dataclasses.asdict(self), "total_bytes": self.total_bytes}


def step_memory(plan, sgraph, params, tgraph, teacher) -> ProgramMemory:
  """The update step of `plan` compiled for abstract `params` / `teacher`
  (pure-dict ShapeDtypeStructs, as `plan.split_abstract` gives)."""
  state = plan.abstract_state(params)
  batch = plan.abstract_batch()
  with jax.set_mesh(plan.mesh):
    fn, state_sh, teacher_sh, batch_sh = plan.compile_step(
        state, teacher, batch, student_graphdef=sgraph, teacher_graphdef=tgraph
    )
    abstract = sharding.with_shardings
    _, analysis = compile_ahead(
        fn,
        abstract(state, state_sh),
        abstract(teacher, teacher_sh),
        abstract(batch, {k: batch_sh[k] for k in batch}),
    )
  return ProgramMemory.of(analysis)


def sampler_memory(plan, models: dict) -> ProgramMemory:
  """The rollout sampler of `plan` compiled for its rollout source.

  Args:
    plan: the RunPlan.
    models: {'student': (graphdef, params), 'teacher': (graphdef, params)}
      with pure-dict ShapeDtypeStruct parameters.
  """
  run = plan.run
  roles, weights = {
      "student": (("student",), (1.0,)),
      "teacher": (("teacher",), (1.0,)),
      "mixture": (("student", "teacher"), run.rollouts.mixture_weights),
  }[run.rollouts.rollout_source]
  graphdefs = tuple(models[r][0] for r in roles)
  states = tuple(models[r][1] for r in roles)
  # Under a teacher context the teacher samples after its own prompt.
  ctx, d = run.teacher_context, run.data
  widths = tuple(
      ctx.max_prompt_len if r == "teacher" and ctx else d.max_prompt_len
      for r in roles
  )
  b = d.batch_size
  with jax.set_mesh(plan.mesh):
    fn = sampler.jitted_sampler(
        graphdefs,
        tuple(weights),
        plan.sampling,
        d.max_new_tokens,
        tuple(plan.student_config.eos_token_ids),
        0,
        plan.compute_dtype,
    )
    rows = jax.sharding.NamedSharding(plan.mesh, sharding.batch_spec(2))
    _, analysis = compile_ahead(
        fn,
        tuple(
            sharding.with_shardings(s, sharding.param_shardings(s, plan.mesh))
            for s in states
        ),
        tuple(
            jax.ShapeDtypeStruct((b, p), jnp.int32, sharding=rows)
            for p in widths
        ),
        tuple(
            jax.ShapeDtypeStruct((b, p), jnp.bool_, sharding=rows)
            for p in widths
        ),
        jax.ShapeDtypeStruct((2,), jnp.uint32),
    )
  return ProgramMemory.of(analysis)


def device_memory_bytes() -> int | None:
  """The first local device's memory where the platform reports it."""
  try:
    stats = jax.local_devices()[0].memory_stats()
  except Exception:  # pylint: disable=broad-except  (not every backend has it)
    return None
  return (stats or {}).get("bytes_limit")
