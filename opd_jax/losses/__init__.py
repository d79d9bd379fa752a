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
"""Standalone distillation losses: divergences, rankings, masked reductions.

This package imports nothing else from opd_jax (hence the relative imports):
copy the folder into any JAX project.
"""

from .divergences import entropy
from .divergences import forward_kl
from .divergences import generalized_jsd
from .divergences import reverse_kl
from .divergences import sampled_kl
from .divergences import skew_forward_kl
from .divergences import skew_reverse_kl
from .divergences import token_logprobs
from .divergences import total_variation
from .ranking import plackett_luce_nll
from .reductions import REDUCTIONS
from .reductions import reduce
from .reductions import seq_mean
from .reductions import sum_reduction
from .reductions import token_mean
from .reductions import WeightedMean

__all__ = (
    "REDUCTIONS",
    "WeightedMean",
    "entropy",
    "forward_kl",
    "generalized_jsd",
    "plackett_luce_nll",
    "reduce",
    "reverse_kl",
    "sampled_kl",
    "seq_mean",
    "skew_forward_kl",
    "skew_reverse_kl",
    "sum_reduction",
    "token_logprobs",
    "token_mean",
    "total_variation",
)
