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
"""Distillation methods: each composes losses and selectors into an objective.

Importing this package registers every method in `REGISTRY`; build one from
its config block with `build_method(name, args)`.
"""

from opd_jax.methods.base import build_method
from opd_jax.methods.base import DEFAULT_METHOD
from opd_jax.methods.base import has_loss_pass
from opd_jax.methods.base import has_stage
from opd_jax.methods.base import has_token_sets
from opd_jax.methods.base import LossPassMethod
from opd_jax.methods.base import Method
from opd_jax.methods.base import method_name
from opd_jax.methods.base import Metrics
from opd_jax.methods.base import register
from opd_jax.methods.base import REGISTRY
from opd_jax.methods.base import renamed_fields
from opd_jax.methods.base import Segment
from opd_jax.methods.base import StagedMethod
from opd_jax.methods.base import StepInputs
from opd_jax.methods.base import TokenSet
from opd_jax.methods.base import TokenSetMethod
from opd_jax.methods.common import LossPass
from opd_jax.methods.dear import DEAR
from opd_jax.methods.gkd import GKD
from opd_jax.methods.minillm import MiniLLM
from opd_jax.methods.rkl import ReverseKL
from opd_jax.methods.sampled_rkl import SampledRKL
from opd_jax.methods.tip import TIP
from opd_jax.methods.topd import TOPD
from opd_jax.methods.tsd_kd import TSDKD

__all__ = [
    "build_method",
    "DEFAULT_METHOD",
    "DEAR",
    "GKD",
    "has_loss_pass",
    "has_stage",
    "has_token_sets",
    "LossPass",
    "LossPassMethod",
    "Method",
    "method_name",
    "Metrics",
    "MiniLLM",
    "register",
    "REGISTRY",
    "renamed_fields",
    "ReverseKL",
    "SampledRKL",
    "Segment",
    "StagedMethod",
    "StepInputs",
    "TokenSet",
    "TokenSetMethod",
    "TIP",
    "TOPD",
    "TSDKD",
]
