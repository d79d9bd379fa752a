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
"""The loss of the methods that train on every response token (GKD, rkl)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax

from opd_jax.methods import checks
from opd_jax.methods import common
from opd_jax.methods.base import Metrics, StepInputs, TokenSet

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class DenseLossPass:
  r"""A method whose loss is its loss pass's divergence on every token.

  .. math::
    L = \frac{\sum_{b,t} m_{bt}\, D(p_T \| p_S)_{bt}}{\sum_{b,t} m_{bt}}

  (with the pass's `reduction`). Not a method itself: GKD and rkl are
  registered subclasses, differing in `loss_pass`'s defaults only, so that
  neither method imports the other.
  """

  NAME: ClassVar[str] = ""
  # Saved runs' fields (`base.renamed_fields`): TRL's names for two, and the
  # loss pass's fields from before the pass nested.
  RENAMED: ClassVar[dict[str, str]] = {
      "beta": "loss_pass.jsd_beta",
      "loss_temperature": "loss_pass.temperature",
      **common.nested_loss_pass_fields(
          "divergence", "skew_alpha", "reduction", "chunk_size"
      ),
  }

  loss_pass: common.LossPass = common.LossPass()

  def __post_init__(self):
    object.__setattr__(self, "loss_pass", checks.check_loss_pass(self))

  def loss(self, inputs: StepInputs) -> tuple[Array, Metrics]:
    """Returns the token-weighted full-vocabulary divergence and metrics."""
    return self.loss_pass.dense_loss(inputs)

  def token_sets(self, inputs: StepInputs) -> dict[str, TokenSet]:
    """Every valid token is trained on; the channel is its loss term."""
    p = self.loss_pass
    return {
        "divergence": TokenSet(
            p.token_divergence(inputs),
            f"{self.NAME}: per-token {p.divergence} at temperature"
            f" {p.temperature:g} (its loss term)",
        )
    }
