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
"""Diagnostics: per-token maps of rollouts in the browser."""

from opd_jax.diagnostics.token_map import compute_token_map
from opd_jax.diagnostics.token_map import label_token_map
from opd_jax.diagnostics.token_map import token_pieces
from opd_jax.diagnostics.token_map import TokenMap
from opd_jax.diagnostics.token_map import TokenMapSettings
from opd_jax.diagnostics.token_map import write_token_map
from opd_jax.diagnostics.token_map_html import render_html

__all__ = [
    "compute_token_map",
    "label_token_map",
    "render_html",
    "token_pieces",
    "TokenMap",
    "TokenMapSettings",
    "write_token_map",
]
