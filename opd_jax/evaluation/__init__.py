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
"""Answer extraction, graders chosen by data source, math grading pool."""

from opd_jax.evaluation.answers import extract_answer
from opd_jax.evaluation.answers import extract_boxed
from opd_jax.evaluation.answers import extract_final_line
from opd_jax.evaluation.answers import normalize_answer
from opd_jax.evaluation.answers import remove_thousands_separators
from opd_jax.evaluation.graders import check_gradable
from opd_jax.evaluation.graders import drop_ungradable
from opd_jax.evaluation.graders import Grader
from opd_jax.evaluation.graders import grader_for
from opd_jax.evaluation.graders import IntegerGrader
from opd_jax.evaluation.graders import integer_prediction
from opd_jax.evaluation.graders import MathGrader
from opd_jax.evaluation.graders import reference_integer
from opd_jax.evaluation.graders import TaskGrader
from opd_jax.evaluation.graders import UngradableAnswerError
from opd_jax.evaluation.grading import Grade
from opd_jax.evaluation.grading import GradingPool
from opd_jax.evaluation.grading import math_verify_grade

__all__ = [
    "Grade",
    "Grader",
    "GradingPool",
    "IntegerGrader",
    "MathGrader",
    "TaskGrader",
    "UngradableAnswerError",
    "check_gradable",
    "drop_ungradable",
    "grader_for",
    "integer_prediction",
    "reference_integer",
    "remove_thousands_separators",
    "extract_answer",
    "extract_boxed",
    "extract_final_line",
    "math_verify_grade",
    "normalize_answer",
]
