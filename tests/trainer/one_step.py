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
"""One jitted reverse-KL `train_step` (SGD at rate 1) on a fixed batch with
left padding: the tests of a new student family's step share it."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from opd_jax.methods import build_method
from opd_jax.trainer import step as steps
from opd_jax.trainer.state import init_state

B, P, T, V = 4, 6, 5, 61


def batch():
  """[B, P + T] random tokens, rows left-padded by 0, 2, 1 and 4."""
  rng = np.random.default_rng(0)
  tokens = rng.integers(3, V, size=(B, P + T)).astype(np.int32)
  mask = np.ones((B, P + T), bool)
  for row, pad in enumerate([0, 2, 1, 4]):
    mask[row, :pad] = False
  return dict(
      tokens=jnp.asarray(tokens),
      mask=jnp.asarray(mask),
      response_mask=jnp.ones((B, T), bool),
      sampler_logprobs=jnp.asarray(rng.normal(size=(B, T)) - 3.0),
  )


def step(student, teacher, micro_batches):
  """(params before, params after, metrics) of one step, on the host."""
  sgraph, sparams = nnx.split(student)
  tgraph, tparams = nnx.split(teacher)
  optimizer = optax.sgd(1.0)
  state = init_state(sparams.to_pure_dict(), optimizer, jax.random.key(0))
  fn = jax.jit(
      functools.partial(
          steps.train_step,
          student_graphdef=sgraph,
          teacher_graphdef=tgraph,
          method=build_method("rkl", {}),
          optimizer=optimizer,
          micro_batches=micro_batches,
      )
  )
  new_state, metrics = fn(state, tparams.to_pure_dict(), batch())
  before = jax.device_get(state.params)
  return before, jax.device_get(new_state.params), jax.device_get(metrics)
