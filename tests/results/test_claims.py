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

HOLDS, NAS, CONTRA = (claims.HOLDS, claims.NOT_AT_SCALE, claims.CONTRADICTED)


@pytest.mark.parametrize(
    "relation, diff, verdict",
    [
        # A > B: the interval of mean(A) - mean(B) must exclude 0 above.
        (">", Interval(0.10, 0.02, 0.18), HOLDS),
        (">", Interval(0.05, -0.01, 0.11), NAS),
        (">", Interval(0.00, 0.00, 0.00), NAS),
        (">", Interval(-0.10, -0.18, -0.02), CONTRA),
        # A >= B: only A below B beyond the interval contradicts it.
        (">=", Interval(-0.05, -0.11, 0.01), HOLDS),
        (">=", Interval(0.10, 0.02, 0.18), HOLDS),
        (">=", Interval(-0.10, -0.18, -0.02), CONTRA),
    ],
)
def test_relation_verdicts(relation, diff, verdict):
  assert claims.relation_verdict(relation, diff) == verdict


def test_worst_verdict_wins():
  assert claims.worst([HOLDS, NAS]) == NAS
  assert claims.worst([NAS, CONTRA, HOLDS]) == CONTRA
  assert claims.worst([HOLDS, claims.NOT_RUN]) == claims.NOT_RUN


def _m(rows, frac=1.0, temp=None, collapsed=0):
  return claims.Measured(np.asarray(rows, float), frac, temp, collapsed)


def test_check_claim_on_data():
  good = _m([[1, 1, 1, 1]] * 3)
  bad = _m([[0, 0, 0, 0]] * 3)
  claim = claims.Claim("P", "A beats B", "a", ">", "b")
  out = claims.check_claim(claim, {"a": good, "b": bad})
  assert out.verdict == HOLDS
  assert "diff +1.000" in out.statistic
  out = claims.check_claim(claim, {"a": bad, "b": good})
  assert out.verdict == CONTRA


def test_extra_conditions():
  a = _m([[1, 0, 1, 0]] * 3, frac=0.35, temp=50)
  b = _m([[1, 0, 1, 0]] * 3, frac=1.0, temp=100)
  frac_claim = claims.Claim("TIP", "Q3", "a", ">=", "b", max_select_frac=0.2)
  out = claims.check_claim(frac_claim, {"a": a, "b": b})
  # Accuracy ties (holds) but A trains on 35% > 20% of tokens.
  assert out.verdict == NAS and "35.0% of tokens" in out.measured
  mem_claim = claims.Claim("TIP", "mem", "a", ">=", "b", lower_memory=True)
  assert claims.check_claim(mem_claim, {"a": a, "b": b}).verdict == HOLDS
  out = claims.check_claim(mem_claim, {"a": b, "b": a})
  assert out.verdict == CONTRA and "2.000x" in out.measured


def test_missing_variant_is_not_run_and_collapses_are_named():
  a = _m([[1, 0]], collapsed=1)
  claim = claims.Claim("P", "c", "a", ">=", "b")
  assert claims.check_claim(claim, {"a": a}).verdict == claims.NOT_RUN
  out = claims.check_claim(claim, {"a": a, "b": a})
  assert "a: 1 seed(s) collapsed" in out.measured


def test_bad_relation():
  with pytest.raises(ValueError, match="relation.*'<'"):
    claims.Claim("P", "c", "a", "<", "b")


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
        (-0.25, 0.008, CONTRA),
        (-0.25, 0.16, NAS),  # the pooled test's p = 0.033 does not count
        (None, None, NAS),  # no question with both outcomes
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
