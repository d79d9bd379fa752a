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
"""A Qwen3-MoE student: the step adds router_aux_loss_coef * the router's
load-balancing loss of the whole batch, and reports it (float64, so that
micro-batching can be compared at 1e-10, as test_micro_batches)."""

import jax
import jax.numpy as jnp
import numpy as np

import one_step  # tests/trainer/, on the path beside this file
from opd_jax import testing

V = one_step.V


def test_moe_student_adds_and_reports_the_router_loss():
  with jax.enable_x64(True):
    config = testing.tiny_moe_config(
        num_layers=3, mlp_only_layers=(1,), vocab_size=V
    )
    student = lambda coef: testing.random_model(
        config.replace(router_aux_loss_coef=coef), seed=0, dtype=jnp.float64
    )
    teacher = testing.random_model(
        testing.tiny_config("qwen3", vocab_size=V), seed=1, dtype=jnp.float64
    )
    batch = one_step.batch()
    want_aux = student(0.25)(
        batch["tokens"], attention_mask=batch["mask"]
    ).aux_loss
    whole = one_step.step(student(0.25), teacher, 1)[2]
    grouped = one_step.step(student(0.25), teacher, 2)[2]
    plain = one_step.step(student(0.0), teacher, 1)[2]
  # Metrics are float32 (train_step casts them): one rounding, 2^-24.
  u = 2.0**-24
  np.testing.assert_allclose(whole["loss/router_aux"], want_aux, rtol=2 * u)
  # E * sum_e f_e P_e: k = 2 for a uniform router, never 0.
  assert whole["loss/router_aux"] > 1.0
  total, base = float(whole["loss/total"]), float(plain["loss/total"])
  assert abs((total - base) - 0.25 * float(whole["loss/router_aux"])) <= (
      2 * u * (abs(total) + abs(base) + float(whole["loss/router_aux"]))
  )
  # Micro-batches give the whole batch's loss and step (float64 values
  # that agree to ~1e-13, rounded once to float32).
  for name in whole:
    np.testing.assert_allclose(
        grouped[name], whole[name], rtol=2 * u, err_msg=name
    )
