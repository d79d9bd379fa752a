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


def test_duplicate_questions_count_once():
  # Question "x" is asked twice: its two columns become one, averaged.
  x = [[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0]]
  y = stats.distinct_questions(x, ["x", "y", "x", "z"])
  np.testing.assert_array_equal(y, [[1.0, 0.0, 1.0], [0.5, 0.0, 0.0]])
  # The mean over distinct questions differs from the mean over positions.
  assert y.mean() == pytest.approx(2.5 / 6) and np.mean(x) == 0.5
  with pytest.raises(ValueError, match=r"keys: expected one per question"):
    stats.distinct_questions(x, ["x", "y"])


def test_duplicates_do_not_narrow_the_interval():
  # Ten questions asked twice each are ten questions, not twenty: the
  # interval over the 20 positions would be narrower than the evidence.
  rng = np.random.default_rng(4)
  x = (rng.random((3, 10)) < 0.5).astype(float)
  doubled = np.concatenate([x, x], axis=1)
  keys = [f"q{i}" for i in range(10)] * 2
  once = stats.bootstrap_mean(stats.distinct_questions(doubled, keys))
  assert once == stats.bootstrap_mean(x)
  assert (once.hi - once.lo) > (
      stats.bootstrap_mean(doubled).hi - stats.bootstrap_mean(doubled).lo
  )


def test_replicate_variance_matches_the_closed_form():
  # bootstrap_variance is exact; the replicates' variance is a Monte Carlo
  # estimate of it, with standard error var * sqrt((kurtosis - 1) / R)
  # (kurtosis of the replicates, measured). Five standard errors.
  rng = np.random.default_rng(5)
  rates = np.array([[0.3], [0.5], [0.6]])
  x = (rng.random((3, 40)) < rates).astype(float)
  r = 20000
  g = np.random.default_rng(6)
  reps = stats._resampled_means(
      x, stats._counts(g, 3, r), stats._counts(g, 40, r)
  )
  exact = stats.bootstrap_variance(x)
  z = reps - reps.mean()
  kurtosis = np.mean(z**4) / np.mean(z**2) ** 2
  se = exact * np.sqrt((kurtosis - 1) / r)
  assert abs(reps.var() - exact) < 5 * se
  # The question term does not shrink with the seeds: a table whose seeds
  # agree has the variance of one seed's question draw.
  same = np.tile(x[:1], (3, 1))
  assert stats.bootstrap_variance(same) == pytest.approx(
      np.var(x[0]) / 40, rel=1e-12
  )


def test_seed_t_interval_by_hand():
  # Seed means 0.5, 0.7, 0.6: mean 0.6, sd 0.1; with 2 degrees of freedom
  # the t quantile has a closed form, (2p - 1) / sqrt(2 p (1 - p)).
  x = np.repeat([[0.5], [0.7], [0.6]], 4, axis=1)
  ci = stats.seed_t_mean(x)
  p = 0.975
  half = (2 * p - 1) / np.sqrt(2 * p * (1 - p)) * 0.1 / np.sqrt(3)
  assert ci.mean == pytest.approx(0.6, abs=1e-15)
  assert (ci.lo, ci.hi) == pytest.approx((0.6 - half, 0.6 + half), abs=1e-12)
  assert stats.seed_t_mean(x[:1]) is None


def test_welch_interval_matches_scipy():
  from scipy import stats as sps  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(7)
  a = (rng.random((3, 30)) < np.array([[0.5], [0.7], [0.6]])).astype(float)
  b = (rng.random((4, 30)) < 0.4).astype(float)
  ci = stats.seed_t_difference(a, b)
  ref = sps.ttest_ind(
      a.mean(1), b.mean(1), equal_var=False
  ).confidence_interval(0.95)
  assert (ci.lo, ci.hi) == pytest.approx((ref.low, ref.high), abs=1e-12)
  # Constant seed means: nothing for t to widen; one seed: unknown.
  assert stats.seed_t_difference(np.ones((3, 4)), np.zeros((2, 4))) == (
      stats.Interval(1.0, 1.0, 1.0)
  )
  assert stats.seed_t_difference(a[:1], b) is None


def test_the_claims_interval_is_the_hull_within_the_range():
  rng = np.random.default_rng(8)
  a = (rng.random((3, 40)) < np.array([[0.3], [0.8], [0.5]])).astype(float)
  b = (rng.random((3, 40)) < 0.5).astype(float)
  boot = stats.bootstrap_difference(a, b)
  t = stats.seed_t_difference(a, b)
  ci = stats.difference_interval(a, b)
  assert ci.lo == max(min(boot.lo, t.lo), -1.0)
  assert ci.hi == min(max(boot.hi, t.hi), 1.0)
  # Three seeds far apart: the t-interval is the wider here.
  assert t.hi - t.lo > boot.hi - boot.lo
  # A mean of 0/1 scores stays in [0, 1] (the t-interval alone would not).
  low = np.array([[0.0] * 9 + [1.0], [0.0] * 10, [0.0] * 8 + [1.0] * 2])
  assert stats.seed_t_mean(low).lo < 0 and stats.mean_interval(low).lo == 0.0
