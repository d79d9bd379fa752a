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
"""A Qwen3.5 (Gated DeltaNet) student in the jitted step: its gradient
reaches the linear layers, and micro-batches give the whole batch's step
(float64, so that the two agree to float32 rounding of the metrics, as in
test_micro_batches)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from opd_jax import testing
from opd_jax.methods import build_method
from opd_jax.trainer import step as steps
from opd_jax.trainer.state import init_state

B, P, T, V = 4, 6, 5, 61


def _batch():
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


def _step(student, teacher, micro_batches):
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
  new_state, metrics = fn(state, tparams.to_pure_dict(), _batch())
  return (
      jax.device_get(state.params),
      jax.device_get(new_state.params),
      (jax.device_get(metrics)),
  )


def test_qwen3_5_student_steps_and_micro_batches_agree():
  with jax.enable_x64(True):
    config = testing.tiny_qwen3_5_config(vocab=V, chunk=4)
    student = testing.random_model(config, seed=0, dtype=jnp.float64)
    teacher = testing.random_model(
        testing.tiny_config("qwen3", vocab_size=V), seed=1, dtype=jnp.float64
    )
    before, whole_params, whole = _step(student, teacher, 1)
    _, grouped_params, grouped = _step(student, teacher, 2)
  assert np.isfinite(whole["loss/total"]) and whole["loss/total"] > 0
  assert whole["train/skipped"] == 0
  # SGD at rate 1: every linear layer's tensor moved by its gradient.
  linear = before["linear_layers"]["linear_attn"]
  moved = whole_params["linear_layers"]["linear_attn"]
  for name in ("in_proj_qkv", "in_proj_z", "in_proj_a", "in_proj_b"):
    assert np.abs(moved[name]["kernel"] - linear[name]["kernel"]).max() > 0
  for name in ("conv1d", "A_log", "dt_bias"):
    assert np.abs(moved[name] - linear[name]).max() > 0, name
  # Metrics are float32 (train_step casts them): one rounding, 2^-24.
  u = 2.0**-24
  for name in whole:
    np.testing.assert_allclose(
        grouped[name], whole[name], rtol=2 * u, err_msg=name
    )
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12),
      grouped_params,
      whole_params,
  )
