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
"""The papers' qualitative claims and their verdicts on measured results."""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from opd_jax.results import stats

HOLDS = "holds"
FAILS = "fails"
INCONCLUSIVE = "inconclusive"
# A row of the claim was tuned at an edge of its learning-rate grid: its
# best rate may lie beyond, so its accuracy says nothing either way yet.
EDGE = "inconclusive (edge)"
NOT_RUN = "not run"
# A claim's verdict from its parts (accuracy, tokens, memory): the first
# of these among them. A failed part fails the claim (whatever the others);
# a part not measured leaves it not run.
_PRECEDENCE = (FAILS, NOT_RUN, EDGE, INCONCLUSIVE, HOLDS)
VERDICTS = _PRECEDENCE
BEATS, NOT_WORSE, MATCHES = ">", ">=", "~"
RELATIONS = (BEATS, NOT_WORSE, MATCHES)

# The verdict rules (docs/evaluation.md), as RESULTS.md states them.
RULES = (
    "Each claim is judged on the 95% interval [lo, hi] of mean(A) -"
    " mean(B) (greedy accuracy; the hull of a two-stage bootstrap over"
    " seeds, then distinct questions, and Welch's t-interval over seed"
    ' means), and says no more than it: "A beats B by d" (A > B, d = 0'
    " unless the paper states an amount) holds when lo > d and fails when"
    ' hi < d; "A matches B within m" (A ~ B) holds when the interval lies'
    ' inside [-m, +m] and fails when it lies wholly outside; "A is not'
    ' worse than B by more than m" (A >= B) holds when lo > -m and fails'
    " when hi < -m; otherwise the claim is inconclusive. A claim naming a"
    " row whose best learning rate sits on an edge of the rates it has run"
    ' is "inconclusive (edge)" (the runner schedules rates past that edge)'
    " whatever its interval. Extra conditions are parts of the claim: fewer"
    " tokens trained (the mean selected fraction below the paper's bound),"
    " a memory ratio at most the paper's stated bar against the paper's"
    " own baseline (the full-logit step; the same ratio against our"
    " chunked full-token step is shown beside it); a failed part fails the"
    " claim, and a part not measured leaves it not run."
)


@dataclasses.dataclass(frozen=True)
class Claim:
  """One qualitative claim of a paper, in terms of grid variants.

  Attributes:
    paper: who claims it (e.g. "TIP").
    text: the claim as the paper states it.
    a, b: the variant names compared (A relation B).
    relation: ">" (A beats B by `margin`), "~" (A matches B within
      `margin`, > 0) or ">=" (A is not worse than B by more than `margin`).
    margin: the amount (accuracy, 0-1) the relation is judged against: the
      paper's stated gain for ">", the tolerance for "~" and ">=".
    max_select_frac: when set, A must also train on fewer than this
      fraction of tokens (mean `select/frac`), else the claim fails.
    memory_ratio: when set, A's compiled step may need at most this
      fraction of the paper's baseline step's memory (the full-logit
      step; temporaries at the grid's large shape), the paper's stated
      saving (TIP: -47% -> 0.53); the ratio against B's step is shown
      beside it.
    lower_memory: A's step must need less memory than B's (ratio < 1;
      implied by `memory_ratio`).
  """

  paper: str
  text: str
  a: str
  relation: str
  b: str
  margin: float = 0.0
  max_select_frac: float | None = None
  memory_ratio: float | None = None
  lower_memory: bool = False

  def __post_init__(self):
    if self.relation not in RELATIONS:
      raise ValueError(
          f"Claim.relation: expected one of {RELATIONS}, got {self.relation!r}"
      )
    low = 0.0 if self.relation != MATCHES else None
    if self.margin < 0 or (low is None and not self.margin > 0):
      raise ValueError(
          f"Claim {self.text!r}: margin: expected"
          f" {'> 0 (matches)' if low is None else '>= 0'}, got {self.margin}"
      )

  @property
  def statement(self) -> str:
    """The relation in words with its margin: 'a ~ b within 0.05'."""
    if self.relation == MATCHES:
      return f"{self.a} ~ {self.b} within ±{self.margin:g}"
    if self.margin:
      sign = "+" if self.relation == BEATS else "-"
      return f"{self.a} {self.relation} {self.b} {sign} {self.margin:g}"
    return f"{self.a} {self.relation} {self.b}"


def relation_verdict(
    relation: str, diff: stats.Interval, margin: float = 0.0
) -> str:
  """The verdict of "A relation B" from the interval of mean(A) - mean(B).

  Holds when the whole interval is on the claim's side of its bound(s),
  fails when it is wholly on the other side, inconclusive when it touches
  or straddles a bound:

  - ">" by d: holds iff lo > d, fails iff hi < d;
  - "~" within m: holds iff -m <= lo and hi <= m, fails iff hi < -m or
    lo > m;
  - ">=" by m: holds iff lo > -m, fails iff hi < -m.
  """
  lo, hi = diff.lo, diff.hi
  if relation == BEATS:
    return HOLDS if lo > margin else FAILS if hi < margin else INCONCLUSIVE
  if relation == NOT_WORSE:
    return HOLDS if lo > -margin else FAILS if hi < -margin else INCONCLUSIVE
  if relation == MATCHES:
    if -margin <= lo and hi <= margin:
      return HOLDS
    return FAILS if hi < -margin or lo > margin else INCONCLUSIVE
  raise ValueError(f"relation: expected one of {RELATIONS}, got {relation!r}")


def combine(verdicts) -> str:
  """A claim's verdict from its parts' (`_PRECEDENCE`: fails, not run,
  edge, inconclusive, holds; the first present wins)."""
  return min(verdicts, key=_PRECEDENCE.index)


worst = combine


@dataclasses.dataclass(frozen=True)
class Measured:
  """What the claims table needs of one variant.

  Attributes:
    scores: ``[seeds, questions]`` greedy correctness (distinct questions).
    select_frac: mean selected-token fraction over the run's steps.
    temp_bytes: compiled step temporaries at the large shape (None: not
      measured).
    collapsed: seeds whose run collapsed.
    edge: why the row's tuning is unsettled, e.g. "tuned at the low edge
      of its rates (0.0006 of 0.0006-0.006)" (its best rate sits on an edge
      of the rates it has run, or its test runs are not at its best rate),
      or None (bracketed, or not tuned).
  """

  scores: np.ndarray
  select_frac: float
  temp_bytes: int | None = None
  collapsed: int = 0
  edge: str | None = None


@dataclasses.dataclass(frozen=True)
class ClaimResult:
  """One row of the claims table."""

  claim: Claim
  measured: str
  statistic: str
  verdict: str
  # The half-width of the difference's 95% interval: what a difference must
  # exceed to be detected (None: not run).
  half_width: float | None = None
  # The verdict of the accuracy interval alone, before the edge rule and
  # the other parts (None: not run).
  interval_verdict: str | None = None


def _frac_part(claim: Claim, a: Measured) -> tuple[str, str]:
  ok = a.select_frac < claim.max_select_frac
  return (
      (
          f"{claim.a} trains on {a.select_frac:.1%} of tokens"
          f" (bound {claim.max_select_frac:.0%})"
      ),
      HOLDS if ok else FAILS,
  )


def _memory_part(
    claim: Claim, a: Measured, b: Measured, baseline: int | None
) -> tuple[str, str]:
  """The memory condition: against the paper's baseline step when the
  claim states a ratio (ours beside it), else A below B."""
  if a.temp_bytes is None or b.temp_bytes is None:
    return "step memory not measured", NOT_RUN
  ours = a.temp_bytes / b.temp_bytes
  delta = (a.temp_bytes - b.temp_bytes) / 2.0**30
  ours_text = f"step temporaries {ours:.3f}x of {claim.b}'s ({delta:+.2f} GiB)"
  if claim.memory_ratio is None:
    return ours_text, HOLDS if ours < 1.0 else FAILS
  bar = claim.memory_ratio
  ours_text += f": {'within' if ours <= bar else 'above'} the bar"
  if baseline is None:
    return (
        f"full-logit step not measured (bar {bar:.2f}x); {ours_text}",
        NOT_RUN,
    )
  ratio = a.temp_bytes / baseline
  verdict = HOLDS if ratio <= bar else FAILS
  return (
      (
          f"step temporaries {ratio:.3f}x of the full-logit step's (the"
          f" paper's baseline; bar {bar:.2f}x: {verdict}); {ours_text}"
      ),
      verdict,
  )


def check_claim(
    claim: Claim,
    results: Mapping[str, Measured],
    *,
    seed: int = 0,
    baseline_temp_bytes: int | None = None,
) -> ClaimResult:
  """Measures one claim on `results` (variant name -> Measured).

  Args:
    claim: the claim.
    results: the grid's measured rows.
    seed: the bootstrap's RNG seed.
    baseline_temp_bytes: the full-logit step's temporaries at the grid's
      large shape (the paper's memory baseline; None: not measured).
  """
  if claim.a not in results or claim.b not in results:
    missing = [n for n in (claim.a, claim.b) if n not in results]
    return ClaimResult(
        claim, "variant(s) not run: " + ", ".join(missing), "-", NOT_RUN
    )
  a, b = results[claim.a], results[claim.b]
  diff = stats.difference_interval(a.scores, b.scores, seed=seed)
  interval = relation_verdict(claim.relation, diff, claim.margin)
  edges = [n for n, m in ((claim.a, a), (claim.b, b)) if m.edge]
  verdicts = [EDGE if edges else interval]
  measured = [
      f"{claim.a} {a.scores.mean():.3f} vs {claim.b} {b.scores.mean():.3f}"
  ]
  for name, m in ((claim.a, a), (claim.b, b)):
    if m.edge:
      measured.append(f"{name} {m.edge}")
    if m.collapsed:
      measured.append(f"{name}: {m.collapsed} seed(s) collapsed")
  if claim.max_select_frac is not None:
    text, verdict = _frac_part(claim, a)
    measured.append(text)
    verdicts.append(verdict)
  if claim.lower_memory or claim.memory_ratio is not None:
    text, verdict = _memory_part(claim, a, b, baseline_temp_bytes)
    measured.append(text)
    verdicts.append(verdict)
  statistic = f"diff {diff.mean:+.3f}, 95% CI [{diff.lo:+.3f}, {diff.hi:+.3f}]"
  if edges:
    statistic += f" (the interval alone: {interval})"
  return ClaimResult(
      claim,
      "; ".join(measured),
      statistic,
      combine(verdicts),
      (diff.hi - diff.lo) / 2,
      interval,
  )


# "Unmasking On-Policy Distillation": the teacher's (reverse-KL) direction
# is more aligned with the ideal, success-weighted direction on incorrect
# rollouts than on correct ones. Measured by scripts/diagnose.py on the
# grid's pair (results.grid.DiagnoseSpec), not by a row of the table.
ALIGNMENT_CLAIM = Claim(
    "Unmasking",
    "the reverse-KL direction is more aligned with success on incorrect"
    " rollouts",
    "incorrect",
    BEATS,
    "correct",
)
ALIGNMENT_ALPHA = 0.05
ALIGNMENT_RULE = (
    "The Unmasking claim is checked with the diagnostic's own test (nodes"
    " of one question are not independent): within each question with both"
    " outcomes, mean alignment on incorrect minus on correct rollouts,"
    " Wilcoxon signed-rank over the questions; it holds (fails) when"
    f" p < {ALIGNMENT_ALPHA:g} with a positive (negative) mean difference,"
    " and is inconclusive otherwise."
)


def _num(x, spec: str = ".3f") -> str:
  return "-" if x is None else format(x, spec)


def check_alignment(
    summary: Mapping | None, objective: str = "rkl"
) -> ClaimResult:
  """The Unmasking claim from a scripts/diagnose.py summary.json (one
  teacher configuration), or "not run" without one."""
  if summary is None:
    return ClaimResult(
        ALIGNMENT_CLAIM, "scripts/diagnose.py not run", "-", NOT_RUN
    )
  obj = summary["objectives"][objective]
  pooled, within = obj["incorrect_vs_correct"], obj["within_question"]
  (n_inc, n_cor), (m_inc, m_cor) = pooled["n"], pooled["mean"]
  measured = (
      f"alignment {_num(m_inc)} on incorrect (n = {n_inc} nodes) vs"
      f" {_num(m_cor)} on correct rollouts (n = {n_cor}), pooled"
      f" Mann-Whitney p {_num(pooled['mannwhitney_p'], '.3g')};"
      f" {summary['questions']} questions, {summary['rollouts']} rollouts"
  )
  diff, p = within["mean_difference"], within["wilcoxon_p"]
  statistic = (
      f"within-question incorrect - correct {_num(diff, '+.3f')} over"
      f" {within['questions']} question(s), Wilcoxon p {_num(p, '.3g')}"
  )
  if diff is None or p is None or p >= ALIGNMENT_ALPHA:
    verdict = INCONCLUSIVE
  else:
    verdict = HOLDS if diff > 0 else FAILS
  return ClaimResult(ALIGNMENT_CLAIM, measured, statistic, verdict)
