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
"""GKD: generalized JSD(beta) on-policy distillation.

References:
  Agarwal et al., "On-Policy Distillation of Language Models: Learning from
  Self-Generated Mistakes" (GKD), ICLR 2024, arXiv 2306.13649; TRL's
  ``GKDTrainer``.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from opd_jax.methods.base import register
from opd_jax.methods.common import LossPass
from opd_jax.methods.dense import DenseLossPass


@register("gkd")
@dataclasses.dataclass(frozen=True)
class GKD(DenseLossPass):
  r"""Generalized knowledge distillation on every response token.

  .. math::
    L = \frac{\sum_{b,t} m_{bt}\, D(p_T \| p_S)_{bt}}{\sum_{b,t} m_{bt}},
    \qquad p = \mathrm{softmax}(h W / \tau),

  with :math:`D = \mathrm{JSD}_\beta` by default (TRL's convention:
  :math:`\beta = 0` is forward KL, :math:`\beta = 1` reverse KL, exactly).
  The full-vocabulary divergence runs in checkpointed T-chunks, so neither
  pass holds ``[B, T, V]``.

  The on-policy fraction :math:`\lambda` is not part of the loss: it is the
  trainer's ``config.lmbda``. Each step the trainer flips a host-side coin
  with that probability to use fresh student rollouts instead of dataset
  responses (a per-step Bernoulli, as in TRL), then calls this same loss on
  whichever batch it got.

  Attributes:
    loss_pass: the divergence and its head pass (`common.LossPass`):
      ``divergence`` one of 'jsd' (default), 'reverse_kl', 'forward_kl',
      'tvd', 'skew_forward_kl', 'skew_reverse_kl'; ``jsd_beta`` the JSD
      teacher weight in [0, 1] (TRL's ``beta``; 0.5); ``temperature`` the
      softmax temperature of both heads in the loss (0.9: TRL uses its
      ``temperature`` for sampling and loss; the sampler's is set
      separately); ``skew_alpha``; ``reduction`` 'token_mean' (TRL
      batchmean), 'seq_mean' (the paper's per-sequence mean) or 'sum';
      ``chunk_size`` positions per checkpointed chunk, or None for one pass.
  """

  NAME: ClassVar[str] = "gkd"

  loss_pass: LossPass = LossPass(divergence="jsd", temperature=0.9)
