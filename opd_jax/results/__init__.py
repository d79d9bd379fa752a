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
"""Results grids: run every method side by side, evaluate, check claims."""

from opd_jax.results.claims import Claim
from opd_jax.results.claims import check_claim
from opd_jax.results.claims import relation_verdict
from opd_jax.results.collapse import Collapse
from opd_jax.results.collapse import detect_collapse
from opd_jax.results.grid import EvalSpec
from opd_jax.results.grid import Grid
from opd_jax.results.grid import load_grid
from opd_jax.results.grid import MemorySpec
from opd_jax.results.grid import TuningSpec
from opd_jax.results.grid import Variant
from opd_jax.results.stats import bootstrap_difference
from opd_jax.results.stats import bootstrap_mean
from opd_jax.results.stats import difference_interval
from opd_jax.results.stats import Interval
from opd_jax.results.stats import mean_interval

__all__ = [
    "Claim",
    "Collapse",
    "EvalSpec",
    "Grid",
    "Interval",
    "MemorySpec",
    "TuningSpec",
    "Variant",
    "bootstrap_difference",
    "bootstrap_mean",
    "check_claim",
    "difference_interval",
    "detect_collapse",
    "load_grid",
    "mean_interval",
    "relation_verdict",
]
