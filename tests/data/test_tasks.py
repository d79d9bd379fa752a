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
"""How many problems a built-in task's splits give: a held-out split without
end (arithmetic's) is capped, one with an end (countdown's) holds so many."""

import pytest

from opd_jax.data import sources
from opd_jax.data import tasks


def test_arithmetic_held_out_draws_are_capped_in_one_line():
  cap = tasks.MAX_DRAWN_PROBLEMS
  for split in ("validation", "test"):
    tasks.check_num_examples(
        "arithmetic", "easy", split, cap, field="--num_questions"
    )
    with pytest.raises(ValueError) as e:
      tasks.check_num_examples(
          "arithmetic", "easy", split, 10**8, field="--num_questions"
      )
    assert str(e.value) == (
        f"--num_questions: expected at most {cap} (arithmetic's {split}"
        " problems are drawn without end; more would take hours and measure"
        " accuracy no better than +-0.3%), got 100000000"
    )
  with pytest.raises(ValueError, match=r"^TaskSource\('arithmetic', 'test'\)"):
    sources.TaskSource("test", cap + 1)
  # Training reads only the steps' batches: its split is not capped.
  tasks.check_num_examples("arithmetic", "easy", "train", 10**8)
  assert len(sources.TaskSource("train", 10**8)) == 10**8


def test_countdown_held_out_splits_hold_what_they_hold():
  with pytest.raises(ValueError, match=r"at most 480 .*got 481$"):
    tasks.check_num_examples("countdown", "easy", "test", 481)
  tasks.check_num_examples("countdown", "easy", "test", 480)
