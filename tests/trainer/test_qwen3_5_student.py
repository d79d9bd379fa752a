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

import jax
import jax.numpy as jnp
import numpy as np

import one_step  # tests/trainer/, on the path beside this file
from opd_jax import testing

V = one_step.V


def test_qwen3_5_student_steps_and_micro_batches_agree():
  with jax.enable_x64(True):
    config = testing.tiny_qwen3_5_config(vocab=V, chunk=4)
    student = testing.random_model(config, seed=0, dtype=jnp.float64)
    teacher = testing.random_model(
        testing.tiny_config("qwen3", vocab_size=V), seed=1, dtype=jnp.float64
    )
    before, whole_params, whole = one_step.step(student, teacher, 1)
    _, grouped_params, grouped = one_step.step(student, teacher, 2)
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
