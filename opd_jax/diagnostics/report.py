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
"""The alignment report directory: report.md, PNG plots, nodes.json, written atomically."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from typing import Any, Iterator, Sequence

import numpy as np

from opd_jax.diagnostics import stats
from opd_jax.diagnostics.directions import OBJECTIVES

REPORT = "report.md"
PLOTS = (
    "alignment_by_outcome.png",
    "alignment_vs_node_stats.png",
    "alignment_by_depth.png",
)
_ALPHA = 0.05


def check_output_dir(path: str) -> None:
  """Raises unless `path` is absent, empty, or a previous report."""
  if os.path.exists(path) and not os.path.isdir(path):
    raise ValueError(f"--out {path}: exists and is not a directory")
  if (
      os.path.isdir(path)
      and os.listdir(path)
      and not os.path.isfile(os.path.join(path, REPORT))
  ):
    raise ValueError(
        f"--out {path}: a non-empty directory without {REPORT}; refusing to"
        " replace it"
    )


@contextlib.contextmanager
def atomic_directory(path: str) -> Iterator[str]:
  """Yields a temporary sibling of `path`, renamed to `path` on success.

  A failure leaves `path` as it was (nothing half-written). A previous
  report at `path` is replaced only once the new one is complete.
  """
  check_output_dir(path)
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
  try:
    yield tmp
    if os.path.exists(path):
      old = tempfile.mkdtemp(
          prefix=f".{os.path.basename(path)}.old-", dir=parent
      )
      os.rename(path, os.path.join(old, "report"))
      os.rename(tmp, path)
      shutil.rmtree(old)
    else:
      os.rename(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def _fmt(x: Any, digits: int = 3) -> str:
  if x is None:
    return "-"
  if isinstance(x, float):
    return f"{x:.{digits}g}" if abs(x) < 1e-3 and x != 0 else f"{x:.{digits}f}"
  return str(x)


def headline(summary: dict, objective: str = "rkl") -> str:
  """One sentence on alignment of incorrect vs correct rollouts."""
  cmp = summary["objectives"][objective]["incorrect_vs_correct"]
  (n_inc, n_cor), (m_inc, m_cor) = cmp["n"], cmp["mean"]
  p = cmp["mannwhitney_p"]
  if m_inc is None or m_cor is None or p is None:
    return (
        f"Correct vs incorrect ({objective}): not testable, nodes on"
        " incorrect / correct rollouts with defined alignment ="
        f" {n_inc} / {n_cor}."
    )
  if p >= _ALPHA:
    verdict = (
        f"no significant difference at {_ALPHA} (the paper reports"
        " higher alignment on incorrect rollouts)"
    )
  elif m_inc > m_cor:
    verdict = "higher on incorrect rollouts, as the paper reports"
  else:
    verdict = "lower on incorrect rollouts, unlike the paper"
  wq = summary["objectives"][objective]["within_question"]
  paired = ""
  if wq["mean_difference"] is not None:
    paired = (
        f" Within the {wq['questions']} question(s) with both outcomes,"
        f" incorrect minus correct = {wq['mean_difference']:.3f}"
        f" (Wilcoxon p = {_fmt(wq['wilcoxon_p'])})."
    )
  return (
      f"Alignment ({objective}) is {m_inc:.3f} on incorrect rollouts"
      f" (n={n_inc}) and {m_cor:.3f} on correct ones (n={n_cor});"
      f" Mann-Whitney p = {_fmt(p)}: {verdict}.{paired}"
  )


def render_markdown(summary: dict, meta: dict) -> str:
  """report.md from `stats.summarise` output and run metadata."""
  lines = ["# Gradient alignment (Unmasking OPD)", ""]
  lines += [f"- {k}: `{v}`" for k, v in meta.items()]
  lines += [
      "",
      (
          f"Questions {summary['questions']}, rollouts spent"
          f" {summary['rollouts']}, student rollout accuracy"
          f" {_fmt(summary['rollout_accuracy'])}, nodes {summary['nodes']}"
          f" ({summary['nodes_on_correct']} on correct rollouts), mean teacher"
          f" advantage A_te {_fmt(summary['teacher_advantage_mean'])}."
      ),
      "",
      "**" + headline(summary) + "**",
      "",
      "## Alignment cos(g_ideal, u_D)",
      "",
      (
          "| objective | nodes | mean | weighted | > 0 | incorrect (n) |"
          " correct (n) | weighted inc. / cor. | Mann-Whitney p | Welch p |"
          " within-question inc. - cor. (questions) | Wilcoxon p |"
      ),
      "|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for obj in OBJECTIVES:
    o = summary["objectives"][obj]
    c = o["incorrect_vs_correct"]
    w = o["weighted_incorrect_vs_correct"]
    wq = o["within_question"]
    lines.append(
        f"| {obj} | {o['defined']} | {_fmt(o['mean'])} |"
        f" {_fmt(o['weighted_mean'])} | {_fmt(o['positive_fraction'])} |"
        f" {_fmt(c['mean'][0])} ({c['n'][0]}) | {_fmt(c['mean'][1])}"
        f" ({c['n'][1]}) | {_fmt(w[0])} / {_fmt(w[1])} |"
        f" {_fmt(c['mannwhitney_p'])} | {_fmt(c['welch_p'])} |"
        f" {_fmt(wq['mean_difference'])} ({wq['questions']}) |"
        f" {_fmt(wq['wilcoxon_p'])} |"
    )
  lines += [
      "",
      "## Correlation of alignment with node statistics",
      "",
      (
          "Pearson r (p) / Spearman rho; KL = KL(student ‖ teacher), L2 and"
          " cos between the two next-token distributions, depth = position"
          " / rollout length."
      ),
      "",
      "| objective | " + " | ".join(stats.NODE_STATS) + " |",
      "|---|" + "---|" * len(stats.NODE_STATS),
  ]
  for obj in OBJECTIVES:
    cells = []
    for s in stats.NODE_STATS:
      c = summary["objectives"][obj]["correlations"][s]
      cells.append(
          f"{_fmt(c['pearson'])} ({_fmt(c['pearson_p'], 2)}) /"
          f" {_fmt(c['spearman'])}"
      )
    lines.append(f"| {obj} | " + " | ".join(cells) + " |")
  windows = sorted(
      {w for o in summary["objectives"].values() for w in o["by_window"]}
  )
  lines += [
      "",
      "## Mean alignment by depth window",
      "",
      "Window i holds positions c with c + 1 in [2^i, 2^(i+1)).",
      "",
      "| objective | " + " | ".join(f"w{w}" for w in windows) + " |",
      "|---|" + "---|" * len(windows),
  ]
  for obj in OBJECTIVES:
    bw = summary["objectives"][obj]["by_window"]
    lines.append(
        f"| {obj} | " + " | ".join(_fmt(bw.get(w)) for w in windows) + " |"
    )
  lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in PLOTS]
  lines += [
      "",
      (
          "Every node's numbers are in `nodes.json`; these tables in"
          " `summary.json`. Definitions: docs/diagnostics.md."
      ),
      "",
  ]
  return "\n".join(lines)


def _legend(ax) -> None:
  if ax.get_legend_handles_labels()[0]:  # empty when there was no data
    ax.legend(fontsize=7)


def _plots(nodes: Sequence[dict], out: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  correct = np.asarray([n["rollout_correct"] for n in nodes], bool)
  fig, axes = plt.subplots(1, len(OBJECTIVES), figsize=(14, 3.2))
  bins = np.linspace(-1, 1, 21)
  for ax, obj in zip(axes, OBJECTIVES):
    a = stats.align_values(nodes, obj)
    for mask, label in ((~correct, "incorrect"), (correct, "correct")):
      v = a[mask & np.isfinite(a)]
      if len(v):
        ax.hist(
            v, bins=bins, alpha=0.6, density=True, label=f"{label} ({len(v)})"
        )
    ax.set_title(obj)
    ax.set_xlabel("cos(g_ideal, u_D)")
    _legend(ax)
  fig.tight_layout()
  fig.savefig(os.path.join(out, PLOTS[0]), dpi=90)
  plt.close(fig)

  a = stats.align_values(nodes, "rkl")
  fig, axes = plt.subplots(1, len(stats.NODE_STATS), figsize=(14, 3.2))
  for ax, s in zip(axes, stats.NODE_STATS):
    x = np.asarray([np.nan if n[s] is None else n[s] for n in nodes])
    ax.scatter(x[~correct], a[~correct], s=8, alpha=0.6, label="incorrect")
    ax.scatter(x[correct], a[correct], s=8, alpha=0.6, label="correct")
    ax.set_xlabel(s)
    ax.set_ylabel("align (rkl)")
    _legend(ax)
  fig.tight_layout()
  fig.savefig(os.path.join(out, PLOTS[1]), dpi=90)
  plt.close(fig)

  windows = sorted({n["window"] for n in nodes})
  wins = np.asarray([n["window"] for n in nodes])
  fig, ax = plt.subplots(figsize=(6, 3.5))
  for obj in OBJECTIVES:
    a = stats.align_values(nodes, obj)
    means = [
        np.nanmean(a[wins == w]) if np.isfinite(a[wins == w]).any() else np.nan
        for w in windows
    ]
    ax.plot(windows, means, marker="o", label=obj)
  ax.axhline(0, color="gray", lw=0.5)
  ax.set_xlabel("depth window i (c + 1 in [2^i, 2^(i+1)))")
  ax.set_ylabel("mean alignment")
  _legend(ax)
  fig.tight_layout()
  fig.savefig(os.path.join(out, PLOTS[2]), dpi=90)
  plt.close(fig)


def write_report(
    path: str, nodes: Sequence[dict], questions: Sequence[dict], meta: dict
) -> dict:
  """Writes report.md, summary.json, nodes.json and the plots to `path`.

  Written into a temporary sibling directory and renamed at the end, so an
  error leaves nothing half-written.

  Returns:
    The summary (`stats.summarise`).
  """
  summary = stats.summarise(nodes, questions)
  with atomic_directory(path) as tmp:
    with open(os.path.join(tmp, "nodes.json"), "w") as f:
      json.dump(
          {"questions": list(questions), "nodes": list(nodes)}, f, indent=1
      )
    with open(os.path.join(tmp, "summary.json"), "w") as f:
      json.dump({"meta": meta, **summary}, f, indent=1)
    _plots(nodes, tmp)
    with open(os.path.join(tmp, REPORT), "w") as f:
      f.write(render_markdown(summary, meta))
  return summary
