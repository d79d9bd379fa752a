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
"""Which learning rates a row still needs, from the ones it has finished.

A row is tuned over the grid's rates (`TuningSpec.learning_rates`, one run
each, scored on the validation split). When its best rate sits on an edge
of the rates it has run, the optimum may lie beyond it: the schedule then
adds one more rate past that edge (`factor` further), and again while the
best stays on the new edge, at most `max_steps` times per side. The rule
assumes validation accuracy is unimodal in the log of the rate, which is
also why a row whose best rate has a worse rate on each side counts as
tuned (bracketed) before a base rate beyond those is finished.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

# A finished tuning run's score: (greedy accuracy, pass@k) on validation.
Score = Sequence[float]


def extend(rate: float, factor: float) -> float:
  """`rate * factor` to two significant digits (a run directory's name,
  lr_<rate>, stays short: 2e-4 / 3 -> 6.7e-05)."""
  return float(f"{rate * factor:.2g}")


def best_rate(scores: Mapping[float, Score]) -> float:
  """The argmax: greedy accuracy, then pass@k, then the smaller rate."""
  return max(scores, key=lambda lr: (*scores[lr], -lr))


@dataclasses.dataclass(frozen=True)
class Schedule:
  """A row's tuning: what it runs, what is left, where its best rate is.

  Attributes:
    rates: every rate the row runs (the grid's and the extensions so far),
      ascending.
    pending: those without a finished run.
    best: the best finished rate (None: none finished).
    edge: "low" / "high" when `best` is the smallest / largest finished
      rate (no finished rate beyond it on that side); None when a finished,
      no better rate lies on each side (bracketed).
    at_limit: the edge cannot be extended any more (`max_steps` taken).
  """

  rates: tuple[float, ...]
  pending: tuple[float, ...]
  best: float | None
  edge: str | None
  at_limit: bool = False

  @property
  def complete(self) -> bool:
    return not self.pending


def schedule(
    base: Sequence[float],
    scores: Mapping[float, Score],
    *,
    factor: float,
    max_steps: int,
) -> Schedule:
  """The rates a row runs, given the scores of those it has finished.

  Pure: the grid's rates `base` and the finished runs' `scores` (rate ->
  (greedy, pass@k); rates outside the schedule are ignored) determine it.
  An extension is added only once every scheduled rate is finished, so it
  is decided on the whole grid (a first finished run is not an edge).

  Args:
    base: the grid's rates (any order, distinct, > 0).
    scores: finished tuning runs.
    factor: the step past an edge (> 1): the next rate below the smallest
      is smallest / factor, above the largest largest * factor.
    max_steps: extensions allowed on each side.

  Returns:
    The schedule (`Schedule`).
  """
  rates = sorted(base)
  steps = {"low": 0, "high": 0}
  while rates and all(r in scores for r in rates):
    best = best_rate({r: scores[r] for r in rates})
    if best == rates[0] and steps["low"] < max_steps:
      rates.insert(0, extend(rates[0], 1 / factor))
      steps["low"] += 1
    elif best == rates[-1] and steps["high"] < max_steps:
      rates.append(extend(rates[-1], factor))
      steps["high"] += 1
    else:
      break
  done = {r: scores[r] for r in rates if r in scores}
  pending = tuple(r for r in rates if r not in scores)
  if not done:
    return Schedule(tuple(rates), pending, None, None)
  best = best_rate(done)
  edge = "low" if best == min(done) else "high" if best == max(done) else None
  at_limit = edge is not None and not pending
  return Schedule(tuple(rates), pending, best, edge, at_limit)
