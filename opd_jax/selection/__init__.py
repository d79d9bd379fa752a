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
"""Token selection for on-policy distillation: selectors over [B, T] scores."""

from opd_jax.selection.dear import anchor_relevance
from opd_jax.selection.dear import dear_select
from opd_jax.selection.dear import dear_tokens
from opd_jax.selection.dear import DearTokens
from opd_jax.selection.dear import union_selection
from opd_jax.selection.selectors import all_tokens
from opd_jax.selection.selectors import ceil_fraction
from opd_jax.selection.selectors import floor_fraction
from opd_jax.selection.selectors import gather_positions
from opd_jax.selection.selectors import global_top_fraction
from opd_jax.selection.selectors import mask_to_index
from opd_jax.selection.selectors import gumbel_top_fraction
from opd_jax.selection.selectors import masked_min_max
from opd_jax.selection.selectors import masked_quantile
from opd_jax.selection.selectors import min_max_normalize
from opd_jax.selection.selectors import rollout_budget
from opd_jax.selection.selectors import select_top_counts
from opd_jax.selection.selectors import Selection
from opd_jax.selection.selectors import sequence_order
from opd_jax.selection.selectors import static_budget
from opd_jax.selection.selectors import top_fraction_per_sequence
from opd_jax.selection.selectors import uniform_random
from opd_jax.selection.tip import divergence_top
from opd_jax.selection.tip import entropy_top
from opd_jax.selection.tip import normalized_entropy
from opd_jax.selection.tip import quadrant_select
from opd_jax.selection.tip import quadrants
from opd_jax.selection.tip import soft_or
from opd_jax.selection.tip import soft_or_scores
from opd_jax.selection.tsd_kd import confidence_gate
from opd_jax.selection.tsd_kd import EM_RULES
from opd_jax.selection.tsd_kd import entropy_min_set
from opd_jax.selection.tsd_kd import opener_mask

__all__ = [
    "all_tokens",
    "anchor_relevance",
    "ceil_fraction",
    "confidence_gate",
    "dear_select",
    "dear_tokens",
    "DearTokens",
    "divergence_top",
    "EM_RULES",
    "entropy_min_set",
    "entropy_top",
    "floor_fraction",
    "gather_positions",
    "global_top_fraction",
    "gumbel_top_fraction",
    "mask_to_index",
    "masked_min_max",
    "masked_quantile",
    "min_max_normalize",
    "normalized_entropy",
    "opener_mask",
    "quadrant_select",
    "quadrants",
    "rollout_budget",
    "select_top_counts",
    "Selection",
    "sequence_order",
    "soft_or",
    "soft_or_scores",
    "static_budget",
    "top_fraction_per_sequence",
    "uniform_random",
    "union_selection",
]
