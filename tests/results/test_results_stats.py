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
"""Bootstrap intervals against hand-computed and enumerated distributions."""

import itertools

import numpy as np
import pytest

from opd_jax.results import stats


def _exact_percentiles(x, level=0.95):
  """Percentiles of the exact bootstrap distribution, by enumeration.

  Every (seed draw, question draw) is equally likely; the replicate mean is
  the mean of the drawn grid.
  """
  s, q = x.shape
  means = []
  for seeds in itertools.product(range(s), repeat=s):
    for qs in itertools.product(range(q), repeat=q):
      means.append(x[np.ix_(seeds, qs)].mean())
  means = np.sort(means)
  cdf = np.arange(1, len(means) + 1) / len(means)
  tail = (1 - level) / 2
  return (
      means[np.searchsorted(cdf, tail)],
      means[np.searchsorted(cdf, 1 - tail)],
  )


def test_one_seed_two_questions_by_hand():
  # Draws of {0, 1}: means 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4, so
  # the 2.5% and 97.5% percentiles are 0 and 1.
  ci = stats.bootstrap_mean([[0.0, 1.0]])
  assert ci.mean == 0.5
  assert (ci.lo, ci.hi) == (0.0, 1.0)


def test_constant_scores_have_a_point_interval():
  ci = stats.bootstrap_mean(np.ones((3, 5)))
  assert (ci.mean, ci.lo, ci.hi) == (1.0, 1.0, 1.0)
  assert ci.excludes_zero()


def test_matches_the_enumerated_bootstrap_distribution():
  x = np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
  lo, hi = _exact_percentiles(x)
  ci = stats.bootstrap_mean(x, num_resamples=20000)
  assert ci.mean == pytest.approx(0.5)
  # Exact lower and upper percentiles (1/6 and 5/6 here) are atoms of the
  # distribution, so enough replicates land on them exactly.
  assert (ci.lo, ci.hi) == (lo, hi)


def test_seed_variation_alone_by_hand():
  # Seeds 0 and 2 answer everything, seed 1 nothing: resampling questions
  # changes nothing, resampling seeds gives 0 with probability (1/3)^3 =
  # 3.7% > 2.5% and 1 with (2/3)^3, so the interval is [0, 1].
  x = np.array([[1.0] * 6, [0.0] * 6, [1.0] * 6])
  ci = stats.bootstrap_mean(x)
  assert ci.mean == pytest.approx(2 / 3)
  assert (ci.lo, ci.hi) == (0.0, 1.0)


def test_difference_of_identical_methods_contains_zero():
  rng = np.random.default_rng(1)
  x = (rng.random((3, 64)) < 0.4).astype(float)
  diff = stats.bootstrap_difference(x, x.copy())
  assert diff.mean == 0.0
  assert diff.lo < 0.0 < diff.hi


def test_difference_by_hand():
  # A always right, B always wrong on the same questions: diff is exactly 1.
  diff = stats.bootstrap_difference(np.ones((2, 4)), np.zeros((3, 4)))
  assert (diff.mean, diff.lo, diff.hi) == (1.0, 1.0, 1.0)
  # One question where A is right and B wrong, one where both are right:
  # replicate diffs 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4.
  diff = stats.bootstrap_difference([[1.0, 1.0]], [[0.0, 1.0]])
  assert (diff.mean, diff.lo, diff.hi) == (0.5, 0.0, 1.0)


def test_deterministic_given_seed():
  x = np.random.default_rng(2).random((3, 20))
  assert stats.bootstrap_mean(x, seed=3) == stats.bootstrap_mean(x, seed=3)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros(4), r"\[seeds, questions\].*\(4,\)"),
        (np.zeros((0, 3)), "non-empty"),
        (np.full((1, 2), np.nan), "finite"),
    ],
)
def test_bad_scores(bad, match):
  with pytest.raises(ValueError, match=match):
    stats.bootstrap_mean(bad)


def test_difference_needs_the_same_questions():
  with pytest.raises(ValueError, match="same questions.*3 and 4"):
    stats.bootstrap_difference(np.zeros((1, 3)), np.zeros((1, 4)))
