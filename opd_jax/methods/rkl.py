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
"""Full-vocabulary reverse-KL OPD: GKD's reverse-KL member, as its own method.

It shares GKD's loss through `dense.DenseLossPass`, not by importing GKD:
no method imports another.

References:
  Thinking Machines, "On-Policy Distillation" (2025): the per-token reverse
  KL against the teacher on the student's own rollouts; see docs/methods.md
  §1.3.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from opd_jax.methods.base import register
from opd_jax.methods.common import LossPass
from opd_jax.methods.dense import DenseLossPass


@register("rkl")
@dataclasses.dataclass(frozen=True)
class ReverseKL(DenseLossPass):
  r"""Full-vocabulary reverse-KL OPD: :math:`\mathrm{KL}(p_S \| p_T)` per token.

  GKD with ``loss_pass.divergence='reverse_kl'`` and the loss at
  temperature 1 (the `LossPass` defaults): the exact-expectation form of the
  Thinking-Machines per-token reverse KL (see ``sampled_rkl`` for the
  sampled-token estimator), and the loss TIP and DEAR restrict to selected
  tokens. ``loss_pass.jsd_beta`` only matters if the divergence is switched
  to 'jsd'.
  """

  NAME: ClassVar[str] = "rkl"

  loss_pass: LossPass = LossPass()
