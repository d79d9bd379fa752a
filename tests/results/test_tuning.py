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
"""The learning-rate schedule: rates past an edge, from finished scores."""

import pytest

from opd_jax.results import tuning

BASE = (2e-4, 6e-4, 2e-3, 6e-3)


def _plan(scores, steps=2):
  return tuning.schedule(BASE, scores, factor=3.0, max_steps=steps)


def test_nothing_finished_runs_the_grid():
  s = _plan({})
  assert s.rates == BASE and s.pending == BASE
  assert s.best is None and s.edge is None and not s.complete


def test_an_interior_best_is_bracketed():
  s = _plan({2e-4: (0.5, 0), 6e-4: (0.7, 0), 2e-3: (0.8, 0), 6e-3: (0.1, 0)})
  assert s.complete and s.best == 2e-3 and s.edge is None
  assert s.rates == BASE


def test_an_edge_chosen_rate_schedules_one_past_it():
  # The default grid's TIP entropy row: best at the smallest rate.
  s = _plan({2e-4: (0.8, 0), 6e-4: (0.73, 0), 2e-3: (0.72, 0), 6e-3: (0.1, 0)})
  assert s.edge == "low" and s.best == 2e-4 and not s.at_limit
  assert s.pending == (6.7e-5,) and s.rates == (6.7e-5, *BASE)
  # A best at the top goes up by the factor.
  s = _plan({2e-4: (0.1, 0), 6e-4: (0.2, 0), 2e-3: (0.3, 0), 6e-3: (0.4, 0)})
  assert s.edge == "high" and s.pending == (1.8e-2,)


def test_the_extension_resolves_or_stops_at_the_limit():
  grid = {2e-4: (0.8, 0), 6e-4: (0.7, 0), 2e-3: (0.6, 0), 6e-3: (0.1, 0)}
  # Worse past the edge: bracketed, the edge rate stands.
  s = _plan({**grid, 6.7e-5: (0.5, 0)})
  assert s.complete and s.best == 2e-4 and s.edge is None
  # Better twice: two steps at most, then the row stays at an edge.
  s = _plan({**grid, 6.7e-5: (0.85, 0), 2.2e-5: (0.9, 0)})
  assert s.complete and s.best == 2.2e-5
  assert s.edge == "low" and s.at_limit
  assert _plan(grid, steps=0).at_limit


def test_no_extension_before_the_grid_is_finished():
  # One finished run is its own best, at an edge of what ran, but the
  # grid's own rates come first.
  s = _plan({6e-3: (0.9, 0)})
  assert s.pending == BASE[:3] and s.edge is not None and not s.at_limit
  # The default grid today: 2e-4 pending, best 6e-4 = smallest finished.
  s = _plan({6e-4: (0.73, 0), 2e-3: (0.72, 0), 6e-3: (0.1, 0)})
  assert s.pending == (2e-4,) and s.edge == "low"
  # ... and full-token reverse KL's interior 2e-3 is bracketed already.
  s = _plan({6e-4: (0.59, 0), 2e-3: (0.83, 0), 6e-3: (0.09, 0)})
  assert s.pending == (2e-4,) and s.edge is None


def test_ties_go_to_pass_at_k_then_the_smaller_rate():
  assert tuning.best_rate({1e-3: (0.5, 0.9), 3e-3: (0.5, 0.8)}) == 1e-3
  assert tuning.best_rate({1e-3: (0.5, 0.8), 3e-3: (0.5, 0.9)}) == 3e-3
  assert tuning.best_rate({1e-3: (0.5, 0.9), 3e-3: (0.5, 0.9)}) == 1e-3


@pytest.mark.parametrize(
    "rate, factor, want",
    [(2e-4, 1 / 3, 6.7e-5), (6e-3, 3.0, 1.8e-2), (6.7e-5, 1 / 3, 2.2e-5)],
)
def test_extended_rates_have_short_names(rate, factor, want):
  assert tuning.extend(rate, factor) == want
