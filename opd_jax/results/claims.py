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

# The verdict rules (docs/evaluation.md), as RESULTS.md states them.
RULES = (
    "A claim \"A >= B\" holds unless A's mean is below B's beyond the"
    " interval (the 95% bootstrap interval of mean(A) - mean(B) lies below"
    ' 0: contradicted); "A > B" holds when that interval excludes 0 on the'
    " positive side, is contradicted when it excludes 0 on the negative"
    ' side, and is "not at this scale" when it contains 0. "A within noise'
    ' of B" is checked as "A >= B" (the selection methods claim to lose'
    " nothing); a claim with extra conditions (fewer tokens, less memory)"
    " takes the worst verdict of its parts."
)
HOLDS = "holds"
NOT_AT_SCALE = "not at this scale"
CONTRADICTED = "contradicted"
NOT_RUN = "not run"
# Worst first: a claim's verdict is the worst of its parts.
_ORDER = (NOT_RUN, CONTRADICTED, NOT_AT_SCALE, HOLDS)
RELATIONS = (">", ">=")


@dataclasses.dataclass(frozen=True)
class Claim:
  """One qualitative claim of a paper, in terms of grid variants.

  Attributes:
    paper: who claims it (e.g. "TIP").
    text: the claim as the paper states it.
    a, b: the variant names compared (A relation B).
    relation: ">" (A better) or ">=" (A not worse).
    max_select_frac: when set, A must also train on fewer than this
      fraction of tokens (mean `select/frac`), else "not at this scale".
    lower_memory: A's compiled step must also need less memory than B's
      (temporaries at the grid's large shape), else "contradicted".
  """

  paper: str
  text: str
  a: str
  relation: str
  b: str
  max_select_frac: float | None = None
  lower_memory: bool = False

  def __post_init__(self):
    if self.relation not in RELATIONS:
      raise ValueError(
          f"Claim.relation: expected one of {RELATIONS}, got {self.relation!r}"
      )


def relation_verdict(relation: str, diff: stats.Interval) -> str:
  """The verdict of "A relation B" from the interval of mean(A) - mean(B)."""
  if relation == ">=":
    return CONTRADICTED if diff.hi < 0 else HOLDS
  if relation == ">":
    if diff.lo > 0:
      return HOLDS
    return CONTRADICTED if diff.hi < 0 else NOT_AT_SCALE
  raise ValueError(f"relation: expected one of {RELATIONS}, got {relation!r}")


def worst(verdicts) -> str:
  """The worst verdict of a claim's parts (not run < contradicted < ...)."""
  return min(verdicts, key=_ORDER.index)


@dataclasses.dataclass(frozen=True)
class Measured:
  """What the claims table needs of one variant.

  Attributes:
    scores: ``[seeds, questions]`` greedy correctness.
    select_frac: mean selected-token fraction over the run's steps.
    temp_bytes: compiled step temporaries at the large shape (None: not
      measured).
    collapsed: seeds whose run collapsed.
  """

  scores: np.ndarray
  select_frac: float
  temp_bytes: int | None = None
  collapsed: int = 0


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


def _frac_part(claim: Claim, a: Measured) -> tuple[str, str]:
  ok = a.select_frac < claim.max_select_frac
  return (
      f"{claim.a} trains on {a.select_frac:.1%} of tokens",
      HOLDS if ok else NOT_AT_SCALE,
  )


def _memory_part(claim: Claim, a: Measured, b: Measured) -> tuple[str, str]:
  if a.temp_bytes is None or b.temp_bytes is None:
    return "step memory not measured", NOT_RUN
  ratio = a.temp_bytes / b.temp_bytes
  delta = (a.temp_bytes - b.temp_bytes) / 2.0**30
  return (
      f"step temporaries {ratio:.3f}x of {claim.b}'s ({delta:+.2f} GiB)",
      HOLDS if ratio < 1.0 else CONTRADICTED,
  )


def check_claim(
    claim: Claim, results: Mapping[str, Measured], *, seed: int = 0
) -> ClaimResult:
  """Measures one claim on `results` (variant name -> Measured)."""
  if claim.a not in results or claim.b not in results:
    missing = [n for n in (claim.a, claim.b) if n not in results]
    return ClaimResult(
        claim, "variant(s) not run: " + ", ".join(missing), "-", NOT_RUN
    )
  a, b = results[claim.a], results[claim.b]
  diff = stats.bootstrap_difference(a.scores, b.scores, seed=seed)
  verdicts = [relation_verdict(claim.relation, diff)]
  measured = [
      f"{claim.a} {a.scores.mean():.3f} vs {claim.b} {b.scores.mean():.3f}"
  ]
  for name, m in ((claim.a, a), (claim.b, b)):
    if m.collapsed:
      measured.append(f"{name}: {m.collapsed} seed(s) collapsed")
  if claim.max_select_frac is not None:
    text, verdict = _frac_part(claim, a)
    measured.append(text)
    verdicts.append(verdict)
  if claim.lower_memory:
    text, verdict = _memory_part(claim, a, b)
    measured.append(text)
    verdicts.append(verdict)
  statistic = f"diff {diff.mean:+.3f}, 95% CI [{diff.lo:+.3f}, {diff.hi:+.3f}]"
  return ClaimResult(
      claim,
      "; ".join(measured),
      statistic,
      worst(verdicts),
      (diff.hi - diff.lo) / 2,
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
    ">",
    "correct",
)
ALIGNMENT_ALPHA = 0.05
ALIGNMENT_RULE = (
    "The Unmasking claim is checked with the diagnostic's own test (nodes"
    " of one question are not independent): within each question with both"
    " outcomes, mean alignment on incorrect minus on correct rollouts,"
    " Wilcoxon signed-rank over the questions; it holds (or is"
    f" contradicted) when p < {ALIGNMENT_ALPHA:g} with a positive (negative)"
    ' mean difference, and is "not at this scale" otherwise.'
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
    verdict = NOT_AT_SCALE
  else:
    verdict = HOLDS if diff > 0 else CONTRADICTED
  return ClaimResult(ALIGNMENT_CLAIM, measured, statistic, verdict)
