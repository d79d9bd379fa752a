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
"""Vocabulary-head computations: every [., V] tensor, chunked, in one pass.

`chunked.head_pass` forms the student's and teacher's logits chunk by chunk
and reduces them at once; the per-token statistics (`token_stats`) are
built on it. The divergence losses on selected or all positions go through
`chunked.weighted_head_pass`, the same chunks with the loss's gradient
formed in the forward pass (no recomputation of the logits).
"""

from opd_jax.heads.chunked import check_heads
from opd_jax.heads.chunked import DEFAULT_CHUNK_SIZE
from opd_jax.heads.chunked import head_logits
from opd_jax.heads.chunked import head_pass
from opd_jax.heads.chunked import map_chunks
from opd_jax.heads.chunked import weighted_head_pass
from opd_jax.heads.divergence import dense_divergence_loss
from opd_jax.heads.divergence import Divergence
from opd_jax.heads.divergence import divergence_record
from opd_jax.heads.divergence import DIVERGENCES
from opd_jax.heads.divergence import head_divergence
from opd_jax.heads.divergence import selective_divergence_loss
from opd_jax.heads.stats import token_stats
from opd_jax.heads.stats import TokenStats

__all__ = [
    "check_heads",
    "DEFAULT_CHUNK_SIZE",
    "dense_divergence_loss",
    "Divergence",
    "divergence_record",
    "DIVERGENCES",
    "head_divergence",
    "head_logits",
    "head_pass",
    "map_chunks",
    "selective_divergence_loss",
    "token_stats",
    "TokenStats",
    "weighted_head_pass",
]
