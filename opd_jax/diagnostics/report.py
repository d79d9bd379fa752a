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
import time
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
  report at `path` is never lost: once the new one is complete it takes
  `path`, and the old one moves into `path/previous_reports/<time>/` (its
  own earlier reports beside it), as `--restart` keeps a run's.
  """
  check_output_dir(path)
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
  try:
    yield tmp
    if os.path.isdir(path) and not os.listdir(path):
      os.rmdir(path)
    if os.path.exists(path):
      old = tempfile.mkdtemp(
          prefix=f".{os.path.basename(path)}.old-", dir=parent
      )
      os.rename(path, os.path.join(old, "report"))
      os.rename(tmp, path)
      kept = _keep_previous(os.path.join(old, "report"), path)
      os.rmdir(old)
      print(f"--out: the previous report in {path} moved to {kept}")
    else:
      os.rename(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


PREVIOUS = "previous_reports"


def _keep_previous(old: str, path: str) -> str:
  """Moves report directory `old` into `path/previous_reports/<time>/`.

  The reports `old` kept itself move beside it. Returns where it went.
  """
  keep = os.path.join(path, PREVIOUS)
  os.makedirs(keep, exist_ok=True)
  earlier = os.path.join(old, PREVIOUS)
  if os.path.isdir(earlier):
    for name in os.listdir(earlier):
      shutil.move(os.path.join(earlier, name), os.path.join(keep, name))
    os.rmdir(earlier)
  stamp = time.strftime("%Y%m%d-%H%M%S")
  dest, n = os.path.join(keep, stamp), 1
  while os.path.exists(dest):
    n += 1
    dest = os.path.join(keep, f"{stamp}-{n}")
  os.rename(old, dest)
  return dest


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


def _title_and_meta(title: str, meta: dict) -> list[str]:
  """A report's heading and its run metadata, one bullet per key."""
  return [f"# {title}", ""] + [f"- {k}: `{v}`" for k, v in meta.items()]


def _counts(summary: dict) -> str:
  """The sentence start naming how much a summary measured."""
  return (
      f"Questions {summary['questions']}, rollouts spent"
      f" {summary['rollouts']}, student rollout accuracy"
      f" {_fmt(summary['rollout_accuracy'])}, nodes {summary['nodes']}"
      f" ({summary['nodes_on_correct']} on correct rollouts)"
  )


def render_markdown(summary: dict, meta: dict) -> str:
  """report.md from `stats.summarise` output and run metadata."""
  lines = _title_and_meta("Gradient alignment (Unmasking OPD)", meta)
  lines += [
      "",
      _counts(summary)
      + ", mean teacher advantage A_te"
      + f" {_fmt(summary['teacher_advantage_mean'])}.",
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
  with atomic_directory(path) as tmp:
    return _write_files(tmp, nodes, questions, meta)


def _write_files(out, nodes, questions, meta) -> dict:
  """One configuration's files in the existing directory `out`."""
  summary = stats.summarise(nodes, questions)
  with open(os.path.join(out, "nodes.json"), "w") as f:
    json.dump({"questions": list(questions), "nodes": list(nodes)}, f, indent=1)
  with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump({"meta": meta, **summary}, f, indent=1)
  _plots(nodes, out)
  with open(os.path.join(out, REPORT), "w") as f:
    f.write(render_markdown(summary, meta))
  return summary


def teacher_dir(index: int, name: str) -> str:
  """The sub-directory of configuration `index` ('teachers/1-self_solution')."""
  slug = "".join(ch if ch.isalnum() else "_" for ch in name).strip("_")
  return os.path.join("teachers", f"{index}-{slug or 'teacher'}")


def render_comparison(
    summaries: dict[str, dict], paired: dict, meta: dict
) -> str:
  """report.md of several teacher configurations on the same trees."""
  names = list(summaries)
  first = summaries[names[0]]
  lines = _title_and_meta(
      "Gradient alignment (Unmasking OPD) by teacher configuration", meta
  )
  lines += [
      "",
      _counts(first)
      + ". Every configuration is measured on the same rollouts, nodes,"
      + " children and success estimates (nodes chosen with"
      + f" {names[0]!r}).",
      "",
  ]
  lines += [f"- **{n}**: {headline(summaries[n])}" for n in names]
  lines += [
      "",
      "## Alignment cos(g_ideal, u_D), rkl, per configuration",
      "",
      (
          "| configuration | nodes | mean | weighted | > 0 | incorrect (n) |"
          " correct (n) | Mann-Whitney p | within-question inc. - cor."
          " (questions) | Wilcoxon p | mean A_te |"
      ),
      "|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for n in names:
    o = summaries[n]["objectives"]["rkl"]
    c, wq = o["incorrect_vs_correct"], o["within_question"]
    lines.append(
        f"| {n} | {o['defined']} | {_fmt(o['mean'])} |"
        f" {_fmt(o['weighted_mean'])} | {_fmt(o['positive_fraction'])} |"
        f" {_fmt(c['mean'][0])} ({c['n'][0]}) | {_fmt(c['mean'][1])}"
        f" ({c['n'][1]}) | {_fmt(c['mannwhitney_p'])} |"
        f" {_fmt(wq['mean_difference'])} ({wq['questions']}) |"
        f" {_fmt(wq['wilcoxon_p'])} |"
        f" {_fmt(summaries[n]['teacher_advantage_mean'])} |"
    )
  lines += [
      "",
      "## Incorrect / correct mean alignment (Mann-Whitney p), every objective",
      "",
      "| configuration | " + " | ".join(OBJECTIVES) + " |",
      "|---|" + "---|" * len(OBJECTIVES),
  ]
  for n in names:
    cells = []
    for obj in OBJECTIVES:
      c = summaries[n]["objectives"][obj]["incorrect_vs_correct"]
      cells.append(
          f"{_fmt(c['mean'][0])} / {_fmt(c['mean'][1])}"
          f" ({_fmt(c['mannwhitney_p'])})"
      )
    lines.append(f"| {n} | " + " | ".join(cells) + " |")
  if paired:
    lines += [
        "",
        f"## Paired by node against {names[0]!r}",
        "",
        (
            "Mean of (this configuration's alignment - the first's) over the"
            " nodes where both are defined, the fraction of nodes where it"
            " is higher, and the Wilcoxon signed-rank p of the differences."
        ),
        "",
        (
            "| configuration | objective | nodes | mean difference | higher |"
            " Wilcoxon p |"
        ),
        "|---|---|---|---|---|---|",
    ]
    for n, per in paired.items():
      for obj in OBJECTIVES:
        d = per[obj]
        lines.append(
            f"| {n} | {obj} | {d['nodes']} | {_fmt(d['mean_difference'])} |"
            f" {_fmt(d['higher_fraction'])} | {_fmt(d['wilcoxon_p'])} |"
        )
  lines += ["", "## Each configuration's full report", ""]
  lines += [
      f"- {n}: [{teacher_dir(i, n)}/{REPORT}]({teacher_dir(i, n)}/{REPORT})"
      for i, n in enumerate(names)
  ]
  lines += ["", "Definitions: docs/diagnostics.md.", ""]
  return "\n".join(lines)


def write_teacher_report(
    path: str,
    by_teacher: dict[str, Sequence[dict]],
    questions: Sequence[dict],
    meta: dict,
) -> dict:
  """The report of several teacher configurations measured on one tree.

  One configuration writes `write_report`'s layout. Several write
  report.md (the configurations side by side and paired by node against
  the first), summary.json ({'meta', 'teachers': {name: summary},
  'paired': ...}) and one full report per configuration under
  `teacher_dir(i, name)`; atomically, as `write_report`.

  Returns:
    {name: summary}.
  """
  names = list(by_teacher)
  if len(names) == 1:
    return {names[0]: write_report(path, by_teacher[names[0]], questions, meta)}
  paired = stats.compare_teachers(by_teacher)
  with atomic_directory(path) as tmp:
    summaries = {}
    for i, name in enumerate(names):
      sub = os.path.join(tmp, teacher_dir(i, name))
      os.makedirs(sub)
      summaries[name] = _write_files(
          sub, by_teacher[name], questions, {**meta, "teacher": name}
      )
    with open(os.path.join(tmp, "summary.json"), "w") as f:
      json.dump(
          {"meta": meta, "teachers": summaries, "paired": paired}, f, indent=1
      )
    with open(os.path.join(tmp, REPORT), "w") as f:
      f.write(render_comparison(summaries, paired, meta))
  return summaries
