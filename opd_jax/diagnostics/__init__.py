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
"""Diagnostics: gradient alignment (Unmasking OPD) and per-token maps of rollouts."""

from opd_jax.diagnostics import directions
from opd_jax.diagnostics.alignment import QuestionResult
from opd_jax.diagnostics.alignment import TeacherSetup
from opd_jax.diagnostics.alignment import analyse_nodes
from opd_jax.diagnostics.alignment import diagnose
from opd_jax.diagnostics.alignment import diagnose_question
from opd_jax.diagnostics.alignment import node_arrays
from opd_jax.diagnostics.report import write_report
from opd_jax.diagnostics.report import write_teacher_report
from opd_jax.diagnostics.scoring import PositionStats
from opd_jax.diagnostics.scoring import score_positions
from opd_jax.diagnostics.stats import compare_teachers
from opd_jax.diagnostics.stats import summarise
from opd_jax.diagnostics.token_map import comparison_methods
from opd_jax.diagnostics.token_map import StageSettings
from opd_jax.diagnostics.token_map import TokenMap
from opd_jax.diagnostics.token_map import compute_token_map
from opd_jax.diagnostics.token_map import label_token_map
from opd_jax.diagnostics.token_map import token_pieces
from opd_jax.diagnostics.token_map import write_token_map
from opd_jax.diagnostics.token_map_html import render_html
from opd_jax.diagnostics.tree import Grader
from opd_jax.diagnostics.tree import Node
from opd_jax.diagnostics.tree import TreeConfig
from opd_jax.diagnostics.tree import choose_nodes
from opd_jax.diagnostics.tree import depth_window
from opd_jax.diagnostics.tree import grow

__all__ = [
    "analyse_nodes",
    "choose_nodes",
    "compare_teachers",
    "comparison_methods",
    "compute_token_map",
    "depth_window",
    "diagnose",
    "diagnose_question",
    "directions",
    "Grader",
    "grow",
    "label_token_map",
    "Node",
    "node_arrays",
    "PositionStats",
    "QuestionResult",
    "render_html",
    "score_positions",
    "StageSettings",
    "summarise",
    "TeacherSetup",
    "token_pieces",
    "TokenMap",
    "TreeConfig",
    "write_report",
    "write_teacher_report",
    "write_token_map",
]
