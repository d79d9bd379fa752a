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
"""Rollouts: sample responses from the student (or a teacher mixture) with a KV cache."""

from opd_jax.rollouts.branching import branch_prefixes
from opd_jax.rollouts.branching import continue_from
from opd_jax.rollouts.branching import valid_cuts
from opd_jax.rollouts.sampler import default_eos_ids
from opd_jax.rollouts.sampler import Rollout, sample
from opd_jax.rollouts.sampling import Sampling
