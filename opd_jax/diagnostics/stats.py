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
"""Aggregates of node alignments: means, correct vs incorrect tests, correlations."""

from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np
from scipy import stats as sps  # a dependency of jax itself

from opd_jax.diagnostics.directions import OBJECTIVES

NODE_STATS = ("kl", "l2", "cos", "depth")


def _finite(x) -> float | None:
  x = float(x)
  return x if math.isfinite(x) else None


def align_values(nodes: Sequence[dict], objective: str) -> np.ndarray:
  """Alignment of each node under `objective` [N] (NaN where undefined)."""
  return np.asarray(
      [
          np.nan if n["align"][objective] is None else n["align"][objective]
          for n in nodes
      ],
      np.float64,
  )


def weighted_mean(values: np.ndarray, weights: np.ndarray) -> float | None:
  """Σ w x / Σ w over finite values; None when no weight."""
  ok = np.isfinite(values) & np.isfinite(weights)
  total = weights[ok].sum()
  if total <= 0:
    return None
  return _finite(np.sum(weights[ok] * values[ok]) / total)


def compare_groups(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
  """Means of two samples and two-sided tests of a difference.

  Mann-Whitney U (no normality assumption; alignments are bounded and
  often bimodal) and Welch's t-test; p-values are None with fewer than two
  finite values in a group.
  """
  a, b = a[np.isfinite(a)], b[np.isfinite(b)]
  out = {
      "n": [len(a), len(b)],
      "mean": [
          _finite(a.mean()) if len(a) else None,
          _finite(b.mean()) if len(b) else None,
      ],
      "mannwhitney_p": None,
      "welch_p": None,
  }
  if len(a) >= 2 and len(b) >= 2:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      out["mannwhitney_p"] = _finite(
          sps.mannwhitneyu(a, b, alternative="two-sided").pvalue
      )
      out["welch_p"] = _finite(sps.ttest_ind(a, b, equal_var=False).pvalue)
  return out


def within_question(
    values: np.ndarray, correct: np.ndarray, question: np.ndarray
) -> dict[str, Any]:
  """Incorrect minus correct mean alignment within each question.

  Nodes of one question share its prompt and its rollouts, so they are not
  independent; pairing the two outcomes inside each question (questions
  with both) and testing the differences with the Wilcoxon signed-rank
  test does not count one question's many nodes as independent evidence.
  """
  diffs = []
  for q in np.unique(question):
    sel = (question == q) & np.isfinite(values)
    inc, cor = values[sel & ~correct], values[sel & correct]
    if len(inc) and len(cor):
      diffs.append(inc.mean() - cor.mean())
  diffs = np.asarray(diffs)
  out = {
      "questions": len(diffs),
      "mean_difference": _finite(diffs.mean()) if len(diffs) else None,
      "wilcoxon_p": None,
  }
  if len(diffs) >= 2 and np.any(diffs != 0):
    out["wilcoxon_p"] = _finite(sps.wilcoxon(diffs).pvalue)
  return out


def correlation(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
  """Pearson r and Spearman rho (with p-values) over finite pairs."""
  ok = np.isfinite(x) & np.isfinite(y)
  x, y = x[ok], y[ok]
  out = {
      "n": int(ok.sum()),
      "pearson": None,
      "pearson_p": None,
      "spearman": None,
      "spearman_p": None,
  }
  if len(x) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
    r = sps.pearsonr(x, y)
    rho = sps.spearmanr(x, y)
    out.update(
        pearson=_finite(r.statistic),
        pearson_p=_finite(r.pvalue),
        spearman=_finite(rho.statistic),
        spearman_p=_finite(rho.pvalue),
    )
  return out


def summarise(nodes: Sequence[dict], questions: Sequence[dict]) -> dict:
  """The report's numbers.

  Args:
    nodes: every node's record (see `alignment._records`).
    questions: per question {'accuracy', 'rollouts', 'nodes'}.

  Returns:
    A JSON-ready dict: totals; per objective the mean and weighted mean
    alignment (weights ‖g_ideal‖, so that nodes where the choice of token
    changes the success probability count more), the fraction positive,
    the correct-vs-incorrect comparison (by the rollout the node lies on),
    pooled and paired within questions,
    and the correlations with KL, L2, distribution cosine and depth; the
    mean alignment per depth window.
  """
  weights = np.asarray([n["ideal_norm"] or 0.0 for n in nodes], np.float64)
  correct = np.asarray([n["rollout_correct"] for n in nodes], bool)
  question = np.asarray([n["question"] for n in nodes])
  out = {
      "questions": len(questions),
      "rollouts": int(sum(q["rollouts"] for q in questions)),
      "rollout_accuracy": (
          _finite(np.mean([q["accuracy"] for q in questions]))
          if questions
          else None
      ),
      "nodes": len(nodes),
      "nodes_on_correct": int(correct.sum()),
      "teacher_advantage_mean": (
          _finite(
              np.nanmean([
                  np.nan
                  if n["teacher_advantage"] is None
                  else n["teacher_advantage"]
                  for n in nodes
              ])
          )
          if nodes
          else None
      ),
      "objectives": {},
  }
  windows = sorted({n["window"] for n in nodes})
  window_of = np.asarray([n["window"] for n in nodes])
  for obj in OBJECTIVES:
    a = align_values(nodes, obj)
    ok = np.isfinite(a)
    out["objectives"][obj] = {
        "defined": int(ok.sum()),
        "mean": _finite(a[ok].mean()) if ok.any() else None,
        "weighted_mean": weighted_mean(a, weights),
        "positive_fraction": _finite((a[ok] > 0).mean()) if ok.any() else None,
        "incorrect_vs_correct": compare_groups(a[~correct], a[correct]),
        "within_question": within_question(a, correct, question),
        "weighted_incorrect_vs_correct": [
            weighted_mean(a[~correct], weights[~correct]),
            weighted_mean(a[correct], weights[correct]),
        ],
        "correlations": {
            s: correlation(
                a,
                np.asarray(
                    [np.nan if n[s] is None else n[s] for n in nodes],
                    np.float64,
                ),
            )
            for s in NODE_STATS
        },
        "by_window": {
            int(w): (
                _finite(np.nanmean(a[window_of == w]))
                if np.isfinite(a[window_of == w]).any()
                else None
            )
            for w in windows
        },
    }
  return out


def paired_nodes(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
  """b minus a at the same nodes (both defined), Wilcoxon signed-rank.

  Two teacher configurations measured on one tree share their nodes, so
  their alignments pair node by node; the signed-rank test asks whether
  one is systematically higher.
  """
  ok = np.isfinite(a) & np.isfinite(b)
  d = b[ok] - a[ok]
  out = {
      "nodes": int(ok.sum()),
      "mean_difference": _finite(d.mean()) if len(d) else None,
      "higher_fraction": _finite((d > 0).mean()) if len(d) else None,
      "wilcoxon_p": None,
  }
  if len(d) >= 2 and np.any(d != 0):
    out["wilcoxon_p"] = _finite(sps.wilcoxon(d).pvalue)
  return out


def compare_teachers(by_teacher: dict[str, Sequence[dict]]) -> dict:
  """Each configuration against the first, per objective, paired by node.

  Args:
    by_teacher: {name: node records}, the same nodes in the same order
      under each configuration (`alignment.QuestionResult.by_teacher`).

  Returns:
    {name: {objective: `paired_nodes`(first, name)}} for every name but
    the first.
  """
  names = list(by_teacher)
  base = by_teacher[names[0]]
  for name in names[1:]:
    if len(by_teacher[name]) != len(base):
      raise ValueError(
          f"compare_teachers: {name!r} has {len(by_teacher[name])} nodes,"
          f" {names[0]!r} {len(base)}; expected the same nodes"
      )
  return {
      name: {
          obj: paired_nodes(
              align_values(base, obj), align_values(by_teacher[name], obj)
          )
          for obj in OBJECTIVES
      }
      for name in names[1:]
  }
