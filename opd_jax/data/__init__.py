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
"""Built-in tasks with exact verifiers and their tokenizer."""

from opd_jax.data.arithmetic import ArithmeticTask
from opd_jax.data.arithmetic import Difficulty
from opd_jax.data.arithmetic import Example
from opd_jax.data.arithmetic import extract_answer
from opd_jax.data.arithmetic import is_correct
from opd_jax.data.arithmetic import make_dataset
from opd_jax.data.arithmetic import make_example
from opd_jax.data.arithmetic import SPLITS
from opd_jax.data.arithmetic import verify_rationale
from opd_jax.data.countdown import CountdownTask
from opd_jax.data.sources import TaskSource
from opd_jax.data.tasks import BuiltinTask
from opd_jax.data.tasks import TASKS
from opd_jax.data.iterator import eval_batches
from opd_jax.data.sources import FileSource
from opd_jax.data.templates import format_prompts
from opd_jax.data.dataset import PromptDataset
from opd_jax.data.iterator import PromptIterator
from opd_jax.data.sources import PromptRecord
from opd_jax.data.sources import PromptSource
from opd_jax.data.dataset import PromptStats
from opd_jax.data.tokenizer import build_task_tokenizer
from opd_jax.data.tokenizer import check_same_vocabulary
from opd_jax.data.tokenizer import load_task_tokenizer
from opd_jax.data.tokenizer import load_tokenizer
from opd_jax.data.tokenizer import TokenizerError
from opd_jax.data.tokenizer import TokenizerMismatchError

__all__ = [
    "BuiltinTask",
    "CountdownTask",
    "TASKS",
    "TaskSource",
    "FileSource",
    "PromptDataset",
    "PromptIterator",
    "PromptRecord",
    "PromptSource",
    "PromptStats",
    "eval_batches",
    "format_prompts",
    "ArithmeticTask",
    "Difficulty",
    "Example",
    "SPLITS",
    "TokenizerError",
    "TokenizerMismatchError",
    "build_task_tokenizer",
    "check_same_vocabulary",
    "extract_answer",
    "is_correct",
    "load_task_tokenizer",
    "load_tokenizer",
    "make_dataset",
    "make_example",
    "verify_rationale",
]
