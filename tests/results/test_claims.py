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
"""Claim verdicts (docs/evaluation.md's rules) on hand-made intervals and data."""

import numpy as np
import pytest

from opd_jax.results import claims
from opd_jax.results.stats import Interval

HOLDS, FAILS, INC, EDGE = (
    claims.HOLDS,
    claims.FAILS,
    claims.INCONCLUSIVE,
    claims.EDGE,
)


@pytest.mark.parametrize(
    "relation, margin, diff, verdict",
    [
        # A beats B: the whole interval above 0 (or the stated amount).
        (">", 0.0, Interval(0.10, 0.02, 0.18), HOLDS),
        (">", 0.0, Interval(0.05, -0.01, 0.11), INC),
        (">", 0.0, Interval(0.05, 0.00, 0.10), INC),  # touching 0
        (">", 0.0, Interval(-0.10, -0.18, -0.02), FAILS),
        # DEAR's "+2.5 points": above 0 is not enough.
        (">", 0.025, Interval(0.04, 0.01, 0.07), INC),
        (">", 0.025, Interval(0.06, 0.03, 0.09), HOLDS),
        (">", 0.025, Interval(0.01, -0.01, 0.02), FAILS),
        # A matches B within m: the interval inside [-m, +m].
        ("~", 0.05, Interval(0.0, -0.04, 0.05), HOLDS),
        ("~", 0.05, Interval(0.0, -0.06, 0.04), INC),  # straddles -m
        ("~", 0.05, Interval(0.1, 0.03, 0.17), INC),  # straddles +m
        ("~", 0.05, Interval(-0.2, -0.3, -0.1), FAILS),
        ("~", 0.05, Interval(0.2, 0.1, 0.3), FAILS),
        # The TIP interval RESULTS.md used to call "holds" under ">=".
        ("~", 0.05, Interval(-0.044, -0.171, 0.078), INC),
        # A not worse than B by more than m: lo above -m.
        (">=", 0.0, Interval(-0.044, -0.171, 0.078), INC),
        (">=", 0.0, Interval(0.05, 0.01, 0.09), HOLDS),
        (">=", 0.05, Interval(0.0, -0.04, 0.09), HOLDS),
        (">=", 0.05, Interval(-0.1, -0.2, -0.06), FAILS),
    ],
)
def test_relation_verdicts(relation, margin, diff, verdict):
  assert claims.relation_verdict(relation, diff, margin) == verdict


def test_parts_combine_fails_first_then_not_run_then_edge():
  assert claims.combine([HOLDS, INC]) == INC
  assert claims.combine([INC, FAILS, HOLDS]) == FAILS
  assert claims.combine([HOLDS, claims.NOT_RUN]) == claims.NOT_RUN
  assert claims.combine([EDGE, HOLDS]) == EDGE
  assert claims.combine([EDGE, FAILS]) == FAILS
  assert claims.combine([EDGE, INC]) == EDGE


def _m(rows, frac=1.0, temp=None, collapsed=0, edge=None):
  return claims.Measured(np.asarray(rows, float), frac, temp, collapsed, edge)


def test_check_claim_on_data():
  good = _m([[1, 1, 1, 1]] * 3)
  bad = _m([[0, 0, 0, 0]] * 3)
  claim = claims.Claim("P", "A beats B", "a", ">", "b")
  out = claims.check_claim(claim, {"a": good, "b": bad})
  assert out.verdict == HOLDS
  assert "diff +1.000" in out.statistic
  out = claims.check_claim(claim, {"a": bad, "b": good})
  assert out.verdict == FAILS


def test_an_edge_tuned_row_caps_the_verdict():
  good = _m([[1, 1, 1, 1]] * 3)
  bad = _m([[0, 0, 0, 0]] * 3, edge="tuned at an edge: best rate 0.0006")
  claim = claims.Claim("P", "A beats B", "a", ">", "b")
  out = claims.check_claim(claim, {"a": good, "b": bad})
  # The interval alone holds; B may do better past its edge.
  assert (out.verdict, out.interval_verdict) == (EDGE, HOLDS)
  assert "b tuned at an edge: best rate 0.0006" in out.measured
  assert "(the interval alone: holds)" in out.statistic
  out = claims.check_claim(claim, {"a": bad, "b": good})
  assert (out.verdict, out.interval_verdict) == (EDGE, FAILS)


def test_token_fraction_part():
  a = _m([[1, 0, 1, 0]] * 3, frac=0.35)
  b = _m([[1, 0, 1, 0]] * 3)
  claim = claims.Claim("TIP", "Q3", "a", "~", "b", 0.05, max_select_frac=0.2)
  out = claims.check_claim(claim, {"a": a, "b": b})
  # Identical accuracy (holds) but A trains on 35% > 20% of tokens.
  assert out.interval_verdict == HOLDS
  assert out.verdict == FAILS and "35.0% of tokens" in out.measured


def test_memory_against_the_papers_baseline_and_ours():
  # TIP's -47%: A at most 0.53 of the full-logit step's temporaries.
  a = _m([[1, 0, 1, 0]] * 3, temp=99)
  b = _m([[1, 0, 1, 0]] * 3, temp=100)
  claim = claims.Claim("TIP", "m", "a", "~", "b", 0.05, memory_ratio=0.53)
  out = claims.check_claim(claim, {"a": a, "b": b}, baseline_temp_bytes=200)
  # 0.495x of the baseline: within the bar; 0.99x of ours: above it.
  assert out.verdict == HOLDS
  assert "0.495x of the full-logit step's" in out.measured
  assert "bar 0.53x: holds" in out.measured
  assert "0.990x of b's" in out.measured and "above the bar" in out.measured
  out = claims.check_claim(claim, {"a": a, "b": b}, baseline_temp_bytes=150)
  assert out.verdict == FAILS  # 0.66x > 0.53
  out = claims.check_claim(claim, {"a": a, "b": b})
  assert out.verdict == claims.NOT_RUN
  assert "full-logit step not measured" in out.measured
  # lower_memory alone: A below B.
  lower = claims.Claim("TIP", "m", "a", "~", "b", 0.05, lower_memory=True)
  assert claims.check_claim(lower, {"a": a, "b": b}).verdict == HOLDS
  out = claims.check_claim(lower, {"a": b, "b": a})
  assert out.verdict == FAILS and "1.010x" in out.measured


def test_missing_variant_is_not_run_and_collapses_are_named():
  a = _m([[1, 0]], collapsed=1)
  claim = claims.Claim("P", "c", "a", ">", "b")
  assert claims.check_claim(claim, {"a": a}).verdict == claims.NOT_RUN
  out = claims.check_claim(claim, {"a": a, "b": a})
  assert "a: 1 seed(s) collapsed" in out.measured


def test_bad_relation_and_margin():
  with pytest.raises(ValueError, match="relation.*'<'"):
    claims.Claim("P", "c", "a", "<", "b")
  with pytest.raises(ValueError, match=r"margin: expected > 0 \(matches\)"):
    claims.Claim("P", "c", "a", "~", "b")
  with pytest.raises(ValueError, match="margin: expected >= 0, got -0.1"):
    claims.Claim("P", "c", "a", ">", "b", margin=-0.1)


def test_statement_names_the_margin():
  assert claims.Claim("P", "c", "a", "~", "b", 0.05).statement == (
      "a ~ b within ±0.05"
  )
  assert claims.Claim("P", "c", "a", ">", "b", 0.025).statement == (
      "a > b + 0.025"
  )
  assert claims.Claim("P", "c", "a", ">", "b").statement == "a > b"


def _alignment_summary(diff, p, means=(0.15, 0.40)):
  return {
      "questions": 32,
      "rollouts": 15064,
      "objectives": {
          "rkl": {
              "incorrect_vs_correct": {
                  "n": [428, 31],
                  "mean": list(means),
                  "mannwhitney_p": 0.033,
              },
              "within_question": {
                  "questions": 10,
                  "mean_difference": diff,
                  "wilcoxon_p": p,
              },
          }
      },
  }


@pytest.mark.parametrize(
    "diff, p, verdict",
    [
        # The diagnostic's own within-question test decides, by its sign.
        (0.2, 0.01, HOLDS),
        (-0.25, 0.008, FAILS),
        (-0.25, 0.16, INC),  # the pooled test's p = 0.033 does not count
        (None, None, INC),  # no question with both outcomes
    ],
)
def test_alignment_claim(diff, p, verdict):
  result = claims.check_alignment(_alignment_summary(diff, p))
  assert result.verdict == verdict
  assert result.claim.paper == "Unmasking"
  assert result.measured.startswith(
      "alignment 0.150 on incorrect (n = 428 nodes) vs 0.400 on correct"
      " rollouts (n = 31), pooled Mann-Whitney p 0.033; 32 questions"
  )
  if diff is not None:
    assert result.statistic == (
        f"within-question incorrect - correct {diff:+.3f} over 10"
        f" question(s), Wilcoxon p {p:.3g}"
    )
  assert claims.check_alignment(None).verdict == claims.NOT_RUN
