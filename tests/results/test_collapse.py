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
"""Collapse detection from metrics rows."""

from opd_jax.results import collapse


def _rows(eos, length, entropy=None):
  rows = []
  for i, (e, n) in enumerate(zip(eos, length)):
    row = {"step": i + 1, "rollout/eos_rate": e, "rollout/len_mean": n}
    if entropy is not None:
      row["entropy/student"] = entropy[i]
    rows.append(row)
  return rows


def test_healthy_run():
  rows = _rows([1.0] * 30, [20.0] * 30, [0.001] * 30)  # confident, fine
  assert collapse.detect_collapse(rows, 24) is None


def test_eos_collapse_with_the_first_step_of_the_window():
  eos = [1.0] * 12 + [0.0] * 10
  rows = _rows(eos, [20.0] * 12 + [24.0] * 10, [0.2] * 12 + [0.005] * 10)
  got = collapse.detect_collapse(rows, 24)
  assert got.step == 13
  assert got.signals == ("eos_rate->0", "length at cap", "entropy->0")
  assert str(got) == "step 13 (eos_rate->0, length at cap, entropy->0)"


def test_a_short_dip_is_not_a_collapse():
  eos = [1.0] * 5 + [0.0] * 9 + [1.0] * 20
  rows = _rows(eos, [20.0] * len(eos))
  assert collapse.detect_collapse(rows, 24) is None
  assert collapse.detect_collapse(rows, 24, window=9).step == 6


def test_evaluation_rows_are_ignored():
  rows = _rows([0.0] * 10, [24.0] * 10)
  rows.insert(3, {"step": 4, "eval/accuracy": 0.1})
  assert collapse.detect_collapse(rows, 24).step == 1
