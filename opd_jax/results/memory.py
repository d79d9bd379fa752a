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
"""The compiled training step's memory of a run's method at a large shape,
and of the papers' baseline step (full logits) at the same shape."""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import ml_collections

from opd_jax import losses

from opd_jax.results.grid import MemorySpec
from opd_jax.trainer import memory
from opd_jax.trainer.config import to_run_config
from opd_jax.trainer.plan import plan_run, split_abstract


def large_shape_config(
    c: ml_collections.ConfigDict, spec: MemorySpec
) -> ml_collections.ConfigDict:
  """`c` (its method and loss) at the spec's batch and sequence shape.

  With a preset, both models are that preset, built abstractly (no
  weights); an empty preset keeps the run's own models.
  """
  c = ml_collections.ConfigDict(c.to_dict())
  if spec.preset:
    c.student, c.teacher, c.tokenizer = "", "", ""
    c.student_preset = c.teacher_preset = spec.preset
  c.batch_size = spec.batch_size
  c.max_prompt_len = spec.prompt_len
  c.max_new_tokens = spec.response_len
  c.mesh.num_devices = 1
  return c


def step_memory(
    c: ml_collections.ConfigDict, spec: MemorySpec, *, method=None
) -> dict:
  """Compiles the real step of `c` at the spec's shape; reads its memory.

  The step is built as the trainer builds it (`plan_run`,
  `step.compile_step`) on ShapeDtypeStructs: nothing is loaded or run.
  `method`, when given, replaces the config's (the full-logit baseline).

  Returns:
    A JSON-able dict: temporaries, arguments, outputs and aliased bytes
    (`compiled.memory_analysis()`), their total (an upper bound of the
    peak), the shape, and the compile seconds.
  """
  c = large_shape_config(c, spec)
  start = time.time()
  plan = plan_run(to_run_config(c), allow_preset_fallback=True)
  if method is not None:
    plan = dataclasses.replace(plan, method=method)
  scfg = plan.student_config
  sgraph, params = split_abstract(plan.abstract_model("student"))
  tgraph, teacher = split_abstract(plan.abstract_model("teacher"))
  out = memory.step_memory(plan, sgraph, params, tgraph, teacher).as_dict()
  out.update(
      model=spec.preset or c.student,
      vocab=scfg.vocab_size,
      batch_size=spec.batch_size,
      prompt_len=spec.prompt_len,
      response_len=spec.response_len,
      compile_seconds=round(time.time() - start, 1),
  )
  return out


@dataclasses.dataclass(frozen=True)
class FullLogitReverseKL:
  """The papers' memory baseline: full-token reverse KL over full logits.

  Forms the ``[B, T, V]`` student and teacher logits at once and
  differentiates through them with plain autodiff, as a step built on a
  model's logits output does (the baseline TIP's -47% is measured
  against); our methods' chunked head passes never hold them. A `Method`
  for `plan.compile_step` only: never trained.
  """

  def loss(self, inputs):
    f32 = jnp.float32
    zs = jnp.einsum(
        "BTD,DV->BTV",
        inputs.student_hidden,
        inputs.student_head,
        preferred_element_type=f32,
    )
    zt = jnp.einsum(
        "BTD,DV->BTV",
        jax.lax.stop_gradient(inputs.teacher_hidden),
        jax.lax.stop_gradient(inputs.teacher_head),
        preferred_element_type=f32,
    )
    values = losses.reverse_kl(zs, zt, where=inputs.mask)
    return losses.token_mean(values, inputs.mask).value(), {}


def full_logit_step_memory(
    c: ml_collections.ConfigDict, spec: MemorySpec
) -> dict:
  """`step_memory` of the full-logit baseline (`FullLogitReverseKL`): the
  real step of `c` (its models, optimizer, shape) with that loss in place
  of its method's."""
  c = ml_collections.ConfigDict(c.to_dict())
  c.method = "rkl"
  return step_memory(c, spec, method=FullLogitReverseKL())
