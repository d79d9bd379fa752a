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
"""Decoder models (Llama, Qwen2, Qwen3, Qwen3-MoE) and their Hugging Face checkpoint I/O."""

from opd_jax.models.attention import KVCache, init_cache
from opd_jax.models.config import (
    FAMILIES,
    PRESETS,
    Llama3RopeScaling,
    ModelConfig,
    UnsupportedConfigError,
    check_hf_config,
    from_hf_config,
    preset,
    to_hf_config,
)
from opd_jax.models.transformer import ModelOutput, Transformer
from opd_jax.models.decode import SplitTransformer, split_layers
from opd_jax.models.hf_io import CheckpointError, load_hf, mapping_table, save_hf
from opd_jax.models.moe import (
    MoeMlp,
    RouterStats,
    balance_loss,
    load_balancing_loss,
)
from opd_jax.models.precision import DTYPES, cast_floating, dtype_by_name
from opd_jax.models.response import map_row_groups
from opd_jax.models.response import response_hidden
from opd_jax.models.response import map_row_groups_with_sums
from opd_jax.models.response import response_hidden_and_router
from opd_jax.models.resize import resize_vocab
