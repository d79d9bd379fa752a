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
"""Intervals over seeds and questions, and their differences.

The scores of a grid row are ``[seeds, questions]`` (1/0 greedy
correctness). Two sources of noise: the training seed (a row's runs differ
by their seed) and the sample of test questions. The intervals here count
both, and say no more than either of two estimates does:

- `bootstrap_mean` / `bootstrap_difference`: a two-stage bootstrap: each
  replicate draws S seeds with replacement, then the distinct questions
  with replacement, one draw answered by all the drawn seeds (every seed
  answers the same test questions; `bootstrap_variance` is its exact
  variance);
- `seed_t_mean` / `seed_t_difference`: Student's (Welch's) t-interval over
  the seeds' means; with 3 seeds the bootstrap's seed draw has 10 distinct
  outcomes and understates the seed variance (by (S - 1) / S, and a normal
  tail where t with S - 1 degrees of freedom belongs), which the t-interval
  counts;
- `mean_interval` / `difference_interval`: the hull of the two, what the
  report and the claims use.

A question that appears more than once in the test set is counted once
(`distinct_questions`): its columns are averaged into one before anything
is resampled.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from scipy import stats as sps  # a dependency of jax itself

NUM_RESAMPLES = 4000
LEVEL = 0.95


@dataclasses.dataclass(frozen=True)
class Interval:
  """A point estimate and its two-sided interval.

  Attributes:
    mean: the estimate on the data as measured.
    lo, hi: the interval's (1 - level) / 2 and (1 + level) / 2 ends.
  """

  mean: float
  lo: float
  hi: float

  def excludes_zero(self) -> bool:
    return self.lo > 0 or self.hi < 0

  def hull(self, other: Interval | None) -> Interval:
    """The smallest interval containing both (same estimate)."""
    if other is None:
      return self
    return Interval(self.mean, min(self.lo, other.lo), max(self.hi, other.hi))

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


def distinct_questions(scores, keys: Sequence[str]) -> np.ndarray:
  r"""``[S, Q]`` scores -> ``[S, G]``, each of the G distinct keys once.

  A question asked twice is one question: its columns are averaged,

  .. math:: y_{sg} = \frac{1}{|Q_g|} \sum_{q \in Q_g} x_{sq},

  with :math:`Q_g` the positions of key g, in order of first appearance.
  (Greedy decoding answers a repeated prompt the same way, so without this
  a duplicate counts twice and the question sample looks larger than it
  is.)
  """
  x = _check_scores("scores", scores)
  if len(keys) != x.shape[1]:
    raise ValueError(
        f"keys: expected one per question ({x.shape[1]}), got {len(keys)}"
    )
  index: dict[str, int] = {}
  group = np.array([index.setdefault(k, len(index)) for k in keys])
  sums = np.zeros((x.shape[0], len(index)))
  np.add.at(sums, (slice(None), group), x)
  return sums / np.bincount(group)


def _counts(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
  """[size, n] multiplicities of n items drawn n times with replacement."""
  draws = rng.integers(0, n, (size, n))
  flat = (np.arange(size)[:, None] * n + draws).ravel()
  return np.bincount(flat, minlength=size * n).reshape(size, n).astype(float)


def _resampled_means(
    x: np.ndarray, seed_counts: np.ndarray, question_counts: np.ndarray
) -> np.ndarray:
  r"""The two-stage replicate means, one per replicate r.

  .. math:: \bar x_r = \frac{1}{S G} \sum_{s, g} c^S_{rs}\, x_{sg}\,
      c^Q_{rg}

  (the mean of the grid of drawn seeds by drawn questions).
  """
  s, g = x.shape
  return np.einsum("rs,sg,rg->r", seed_counts, x, question_counts) / (s * g)


def _percentile_interval(
    mean: float, replicates: np.ndarray, level: float
) -> Interval:
  tail = 100.0 * (1.0 - level) / 2.0
  lo, hi = np.percentile(replicates, [tail, 100.0 - tail])
  return Interval(float(mean), float(lo), float(hi))


def bootstrap_variance(scores) -> float:
  r"""The exact variance of `bootstrap_mean`'s replicates (its check).

  With the two-way decomposition :math:`x_{sg} = \mu + a_s + b_g + e_{sg}`
  (seed effects :math:`a`, question effects :math:`b`, residuals
  :math:`e` with zero row and column means), the seed draw moves only the
  :math:`a` and :math:`e` terms and the question draw only the :math:`b`
  and :math:`e` terms, independently, so

  .. math:: \operatorname{Var}(\bar x_r) = \frac{\overline{a^2}}{S}
      + \frac{\overline{b^2}}{G} + \frac{\overline{e^2}}{S G}

  (means over seeds, questions and cells). The question term does not
  shrink with S: the seeds answer the same questions.
  """
  x = _check_scores("scores", scores)
  s, g = x.shape
  mu = x.mean()
  a = x.mean(axis=1) - mu
  b = x.mean(axis=0) - mu
  e = x - mu - a[:, None] - b[None, :]
  return float(np.mean(a**2) / s + np.mean(b**2) / g + np.mean(e**2) / (s * g))


def bootstrap_mean(
    scores,
    *,
    num_resamples: int = NUM_RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
) -> Interval:
  """Mean of per-seed, per-question scores with a two-stage bootstrap CI.

  Each replicate draws S seeds with replacement, then G questions with
  replacement, the one question draw answered by every drawn seed (the
  seeds answer the same test questions: a question draw per seed would
  count the one test set S times and shrink its noise by S), and takes the
  mean of the drawn grid. Its variance is `bootstrap_variance`.

  Args:
    scores: ``[seeds, questions]`` scores (distinct questions: see
      `distinct_questions`).
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
  return _percentile_interval(x.mean(), means, level)


def bootstrap_difference(
    a,
    b,
    *,
    num_resamples: int = NUM_RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
) -> Interval:
  """Mean(a) - mean(b) on the same questions, with a two-stage bootstrap CI.

  The seeds of a and b are drawn independently (seed s of two methods
  shares nothing but its number), then one question draw is shared by
  both (the questions are paired: a hard question is hard for both).

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
  seeds_a = _counts(rng, xa.shape[0], num_resamples)
  seeds_b = _counts(rng, xb.shape[0], num_resamples)
  questions = _counts(rng, xa.shape[1], num_resamples)
  diff = _resampled_means(xa, seeds_a, questions) - _resampled_means(
      xb, seeds_b, questions
  )
  return _percentile_interval(xa.mean() - xb.mean(), diff, level)


def seed_t_mean(scores, *, level: float = LEVEL) -> Interval | None:
  r"""Student's t-interval over the seeds' means (None with one seed).

  .. math:: \bar m \pm t_{S-1,\,(1+\ell)/2}\; \mathrm{sd}(m) / \sqrt{S}

  with :math:`m_s` seed s's mean over questions.
  """
  x = _check_scores("scores", scores)
  m = x.mean(axis=1)
  if len(m) < 2:
    return None
  half = sps.t.ppf((1 + level) / 2, len(m) - 1) * m.std(ddof=1)
  half /= np.sqrt(len(m))
  return Interval(
      float(x.mean()), float(m.mean() - half), float(m.mean() + half)
  )


def seed_t_difference(a, b, *, level: float = LEVEL) -> Interval | None:
  r"""Welch's t-interval of mean(a) - mean(b) over the seeds' means.

  .. math:: \Delta \pm t_{\nu,\,(1+\ell)/2}\,
      \sqrt{v_a / S_a + v_b / S_b},\qquad
      \nu = \frac{(v_a/S_a + v_b/S_b)^2}{\frac{(v_a/S_a)^2}{S_a - 1}
      + \frac{(v_b/S_b)^2}{S_b - 1}}

  (:math:`v`: the sample variance of a row's seed means). None when a row
  has one seed (its seed variance is unknown); a point when both rows'
  seed means are constant (nothing to widen: the bootstrap decides).
  """
  xa, xb = _check_scores("a", a), _check_scores("b", b)
  ma, mb = xa.mean(axis=1), xb.mean(axis=1)
  if len(ma) < 2 or len(mb) < 2:
    return None
  diff = float(xa.mean() - xb.mean())
  ua, ub = ma.var(ddof=1) / len(ma), mb.var(ddof=1) / len(mb)
  if ua + ub == 0:
    return Interval(diff, diff, diff)
  dof = (ua + ub) ** 2 / (ua**2 / (len(ma) - 1) + ub**2 / (len(mb) - 1))
  half = float(sps.t.ppf((1 + level) / 2, dof) * np.sqrt(ua + ub))
  return Interval(diff, diff - half, diff + half)


def _clip(x: Interval, lo: float, hi: float) -> Interval:
  return Interval(x.mean, max(x.lo, lo), min(x.hi, hi))


def mean_interval(scores, *, seed: int = 0) -> Interval:
  """The report's interval of a row's mean: the hull of the two-stage
  bootstrap and the t-interval over seed means (module docstring), within
  the scores' range (a t-interval knows no bounds; a mean of scores in
  [0, 1] is in [0, 1])."""
  x = _check_scores("scores", scores)
  hull = bootstrap_mean(x, seed=seed).hull(seed_t_mean(x))
  return _clip(hull, min(0.0, x.min()), max(1.0, x.max()))


def difference_interval(a, b, *, seed: int = 0) -> Interval:
  """The claims' interval of mean(a) - mean(b): the hull of the two-stage
  bootstrap and Welch's t-interval over seed means, within the range a
  difference of [0, 1] scores can take."""
  xa, xb = _check_scores("a", a), _check_scores("b", b)
  hull = bootstrap_difference(xa, xb, seed=seed).hull(seed_t_difference(xa, xb))
  lo = min(0.0, xa.min()) - max(1.0, xb.max())
  return _clip(hull, lo, max(1.0, xa.max()) - min(0.0, xb.min()))
