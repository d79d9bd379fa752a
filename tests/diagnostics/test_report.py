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
"""Alignment summaries, the headline sentence and the atomic report directory."""

import json
import os

import numpy as np
import pytest

from opd_jax.diagnostics import report, stats
from opd_jax.diagnostics.directions import OBJECTIVES


def _nodes(n=40, shift=0.5, seed=0):
  """Synthetic node records: incorrect rollouts align `shift` higher."""
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    correct = i % 2 == 0
    a = float(np.clip(rng.normal(0.0 if correct else shift, 0.2), -1, 1))
    kl = float(rng.uniform(0, 2))
    out.append({
        "question": i // 10,
        "rollout": i % 4,
        "position": i % 7,
        "depth": (i % 7) / 8,
        "window": (i % 7).bit_length() // 2,
        "rollout_correct": correct,
        "ideal_norm": float(1 + (i % 3)),
        "teacher_advantage": 0.1,
        "kl": kl,
        "l2": kl / 3,
        "cos": 1 - kl / 2,
        "align": {o: None if i == 5 else a for o in OBJECTIVES},
    })
  return out


def test_summary_numbers():
  nodes = _nodes()
  s = stats.summarise(nodes, [{"accuracy": 0.5, "rollouts": 100}] * 4)
  assert s["nodes"] == 40 and s["rollouts"] == 400
  o = s["objectives"]["rkl"]
  a = np.asarray(
      [np.nan if i == 5 else n["align"]["rkl"] for i, n in enumerate(nodes)]
  )
  w = np.asarray([n["ideal_norm"] for n in nodes])
  ok = np.isfinite(a)
  assert o["defined"] == 39
  np.testing.assert_allclose(o["mean"], a[ok].mean())
  np.testing.assert_allclose(
      o["weighted_mean"], (w[ok] * a[ok]).sum() / w[ok].sum()
  )
  cmp = o["incorrect_vs_correct"]
  assert cmp["n"] == [19, 20]
  assert cmp["mean"][0] > cmp["mean"][1] and cmp["mannwhitney_p"] < 1e-4
  # Paired within questions: every question (10 nodes, both outcomes) has
  # its own incorrect-minus-correct difference.
  wq = o["within_question"]
  assert wq["questions"] == 4 and wq["mean_difference"] > 0.3
  q = np.asarray([n["question"] for n in nodes])
  c = np.asarray([n["rollout_correct"] for n in nodes])
  diffs = [
      np.nanmean(a[(q == k) & ~c]) - np.nanmean(a[(q == k) & c])
      for k in range(4)
  ]
  np.testing.assert_allclose(wq["mean_difference"], np.mean(diffs))
  # With no difference the test does not reject.
  same = stats.summarise(_nodes(shift=0.0, seed=1), [])
  assert (
      same["objectives"]["rkl"]["incorrect_vs_correct"]["mannwhitney_p"] > 0.01
  )
  # Perfectly rank-correlated statistics.
  c = stats.correlation(np.arange(10.0), np.arange(10.0) ** 2)
  assert c["spearman"] == pytest.approx(1.0) and c["pearson"] > 0.9
  assert stats.correlation(np.ones(5), np.arange(5.0))["pearson"] is None


def test_headline_follows_the_data():
  higher = stats.summarise(_nodes(shift=0.5), [])
  assert "higher on incorrect rollouts, as the paper" in report.headline(higher)
  lower = stats.summarise(_nodes(shift=-0.5), [])
  assert "lower on incorrect rollouts, unlike" in report.headline(lower)
  none = stats.summarise(_nodes(shift=0.0, seed=1), [])
  assert "no significant difference" in report.headline(none)
  only_incorrect = [n for n in _nodes() if not n["rollout_correct"]]
  assert "not testable" in report.headline(stats.summarise(only_incorrect, []))


def test_write_report(tmp_path):
  out = str(tmp_path / "rep")
  nodes = _nodes()
  summary = report.write_report(
      out, nodes, [{"accuracy": 0.5, "rollouts": 10}], {"seed": 0}
  )
  files = sorted(os.listdir(out))
  assert files == sorted(
      ["report.md", "summary.json", "nodes.json", *report.PLOTS]
  )
  for p in report.PLOTS:
    with open(os.path.join(out, p), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  with open(os.path.join(out, "nodes.json")) as f:
    assert len(json.load(f)["nodes"]) == 40
  md = open(os.path.join(out, "report.md")).read()
  assert report.headline(summary) in md and "| rkl | 39 |" in md
  assert os.listdir(tmp_path) == ["rep"]  # no temporary directory left


def test_report_directory_is_atomic(tmp_path):
  out = str(tmp_path / "rep")
  with pytest.raises(RuntimeError):
    with report.atomic_directory(out) as tmp:
      open(os.path.join(tmp, "report.md"), "w").close()
      raise RuntimeError("interrupted")
  assert os.listdir(tmp_path) == []  # nothing half-written
  report.write_report(out, _nodes(), [], {"run": 1})
  # A failure while replacing keeps the previous report.
  with pytest.raises(RuntimeError):
    with report.atomic_directory(out):
      raise RuntimeError("interrupted")
  assert "run: `1`" in open(os.path.join(out, "report.md")).read()
  report.write_report(out, _nodes(), [], {"run": 2})
  assert "run: `2`" in open(os.path.join(out, "report.md")).read()
  assert os.listdir(tmp_path) == ["rep"]
  # The one it replaced is kept (issue 38: diagnose.py twice into one
  # --out), and so are the ones that one kept.
  report.write_report(out, _nodes(), [], {"run": 3})
  previous = os.path.join(out, report.PREVIOUS)
  kept = sorted(os.listdir(previous))
  assert len(kept) == 2, kept
  runs = [open(os.path.join(previous, k, "report.md")).read() for k in kept]
  assert "run: `1`" in runs[0] and "run: `2`" in runs[1]
  assert not os.path.exists(os.path.join(previous, kept[1], report.PREVIOUS))
  assert "run: `3`" in open(os.path.join(out, "report.md")).read()
  assert os.listdir(tmp_path) == ["rep"]
  # A directory that is not a report is never replaced.
  other = tmp_path / "other"
  other.mkdir()
  (other / "precious.txt").write_text("x")
  with pytest.raises(ValueError, match="refusing to replace"):
    report.write_report(str(other), _nodes(), [], {})
