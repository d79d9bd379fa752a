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
"""The compiled training step's memory of a run's method at a large shape."""

from __future__ import annotations

import time

import ml_collections

from opd_jax.results.grid import MemorySpec
from opd_jax.trainer import memory
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


def step_memory(c: ml_collections.ConfigDict, spec: MemorySpec) -> dict:
  """Compiles the real step of `c` at the spec's shape; reads its memory.

  The step is built as the trainer builds it (`plan_run`,
  `step.compile_step`) on ShapeDtypeStructs: nothing is loaded or run.

  Returns:
    A JSON-able dict: temporaries, arguments, outputs and aliased bytes
    (`compiled.memory_analysis()`), their total (an upper bound of the
    peak), the shape, and the compile seconds.
  """
  c = large_shape_config(c, spec)
  start = time.time()
  plan = plan_run(c, allow_preset_fallback=True)
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
