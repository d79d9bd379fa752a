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
"""Bootstrap intervals over seeds and questions, and their differences."""

from __future__ import annotations

import dataclasses

import numpy as np

NUM_RESAMPLES = 4000
LEVEL = 0.95


@dataclasses.dataclass(frozen=True)
class Interval:
  """A point estimate and its two-sided bootstrap interval.

  Attributes:
    mean: the estimate on the data as measured.
    lo, hi: the (1 - level) / 2 and (1 + level) / 2 bootstrap percentiles.
  """

  mean: float
  lo: float
  hi: float

  def excludes_zero(self) -> bool:
    return self.lo > 0 or self.hi < 0

  def __str__(self) -> str:
    return f"{self.mean:.3f} [{self.lo:.3f}, {self.hi:.3f}]"


def _check_scores(name: str, scores) -> np.ndarray:
  x = np.asarray(scores, np.float64)
  if x.ndim != 2 or 0 in x.shape:
    raise ValueError(
        f"{name}: expected a non-empty [seeds, questions] array,"
        f" got shape {x.shape}"
    )
  if not np.all(np.isfinite(x)):
    raise ValueError(f"{name}: scores must be finite")
  return x


def _counts(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
  """[size, n] multiplicities of n items drawn n times with replacement."""
  draws = rng.integers(0, n, (size, n))
  out = np.zeros((size, n))
  np.add.at(out, (np.arange(size)[:, None], draws), 1.0)
  return out


def _resampled_means(
    x: np.ndarray, seed_counts: np.ndarray, question_counts: np.ndarray
) -> np.ndarray:
  r"""Means of x over resampled seeds and questions, one per replicate.

  .. math:: \bar x_r = \frac{1}{SQ} \sum_{s, q} c^S_{rs}\, x_{sq}\, c^Q_{rq}

  (the mean of the S x Q grid of drawn seeds and drawn questions).
  """
  s, q = x.shape
  return np.einsum("rs,sq,rq->r", seed_counts, x, question_counts) / (s * q)


def _interval(mean: float, replicates: np.ndarray, level: float) -> Interval:
  tail = 100.0 * (1.0 - level) / 2.0
  lo, hi = np.percentile(replicates, [tail, 100.0 - tail])
  return Interval(float(mean), float(lo), float(hi))


def bootstrap_mean(
    scores,
    *,
    num_resamples: int = NUM_RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
) -> Interval:
  """Mean of per-seed, per-question scores with a two-level bootstrap CI.

  Each replicate draws S seeds and Q questions with replacement (the same
  question draw for every drawn seed, so a hard question stays hard across
  seeds) and takes the mean of the drawn grid.

  Args:
    scores: ``[seeds, questions]`` scores (1/0 correctness, or pass@k).
    num_resamples: bootstrap replicates.
    level: the interval's coverage (0.95).
    seed: the resampling RNG seed (the result is deterministic).

  Returns:
    The mean and its percentile interval.
  """
  x = _check_scores("scores", scores)
  rng = np.random.default_rng(seed)
  means = _resampled_means(
      x,
      _counts(rng, x.shape[0], num_resamples),
      _counts(rng, x.shape[1], num_resamples),
  )
  return _interval(x.mean(), means, level)


def bootstrap_difference(
    a,
    b,
    *,
    num_resamples: int = NUM_RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
) -> Interval:
  """Mean(a) - mean(b) on the same questions, with a bootstrap CI.

  The questions are paired (one question draw per replicate, shared by a
  and b); the seeds of a and b are drawn independently (seed s of two
  methods shares nothing but its number).

  Args:
    a: ``[seeds_a, questions]`` scores of A.
    b: ``[seeds_b, questions]`` scores of B, the same questions in order.
    num_resamples: bootstrap replicates.
    level: the interval's coverage.
    seed: the resampling RNG seed.

  Returns:
    The difference of means and its percentile interval.
  """
  xa, xb = _check_scores("a", a), _check_scores("b", b)
  if xa.shape[1] != xb.shape[1]:
    raise ValueError(
        "a, b: expected the same questions, got"
        f" {xa.shape[1]} and {xb.shape[1]} columns"
    )
  rng = np.random.default_rng(seed)
  questions = _counts(rng, xa.shape[1], num_resamples)
  diff = _resampled_means(
      xa, _counts(rng, xa.shape[0], num_resamples), questions
  ) - _resampled_means(xb, _counts(rng, xb.shape[0], num_resamples), questions)
  return _interval(xa.mean() - xb.mean(), diff, level)
