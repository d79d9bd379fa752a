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
"""Collects a grid's finished runs and writes RESULTS.md, curves, claims."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time

import numpy as np

from opd_jax.results import claims as claims_lib
from opd_jax.results import collapse as collapse_lib
from opd_jax.results import stats
from opd_jax.results.grid import Grid, Variant
from opd_jax.results import runner as runner_lib
from opd_jax.results.runner import grid_runs, memory_path, Run
from opd_jax.trainer import plots

GIB = 2.0**30
# The training-time rollouts of `dynamics_table`: means over this many
# logged steps at the start and at the end of each run.
DYNAMICS_WINDOW = 10
# A hand-written reading of the results, kept beside them and shown in
# RESULTS.md under "Findings" when present.
FINDINGS_FILE = "FINDINGS.md"


@dataclasses.dataclass
class RunResult:
  """One finished run: its evaluation and what its metrics say."""

  run: Run
  greedy: np.ndarray  # [Q] 0/1
  pass_at_k: np.ndarray  # [Q] 0/1: a correct sample among k
  eval_info: dict
  rows: list[dict]
  collapse: collapse_lib.Collapse | None

  def mean_metric(self, key: str) -> float | None:
    values = [r[key] for r in self.rows if r.get(key) is not None]
    return float(np.mean(values)) if values else None

  def window_mean(self, key: str, first: bool) -> float | None:
    """Mean of `key` over the first (or last) `DYNAMICS_WINDOW` steps that
    logged it."""
    logged = sorted(
        (r for r in self.rows if r.get(key) is not None),
        key=lambda r: r["step"],
    )
    part = logged[:DYNAMICS_WINDOW] if first else logged[-DYNAMICS_WINDOW:]
    return float(np.mean([r[key] for r in part])) if part else None

  def median_step_time(self) -> float | None:
    # Step 1 includes the sampler's compile: left out.
    values = [
        r["train/step_time"]
        for r in self.rows
        if r.get("train/step_time") is not None and r["step"] > 1
    ]
    return float(np.median(values)) if values else None


@dataclasses.dataclass
class VariantResult:
  """A grid row: its finished runs, its step memory and its tuning.

  Attributes:
    tuning: (learning rate, validation greedy accuracy or None when not
      finished, collapsed) per rate of the grid; empty when not tuned.
    lr: the chosen rate (None: not tuned yet, or the config's).
  """

  variant: Variant
  runs: list[RunResult]
  expected_seeds: int
  memory: dict | None
  tuning: list[tuple[float, float | None, bool]] = dataclasses.field(
      default_factory=list
  )
  lr: float | None = None

  def scores(self, which: str = "greedy") -> np.ndarray:
    """[seeds, questions] of the finished runs."""
    return np.stack([getattr(r, which) for r in self.runs])

  def select_frac(self) -> float | None:
    if not self.variant.trains:
      return None
    values = [r.mean_metric("select/frac") for r in self.runs]
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None

  def step_time(self) -> float | None:
    values = [r.median_step_time() for r in self.runs]
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None

  def collapses(self) -> list[tuple[int, collapse_lib.Collapse]]:
    return [(r.run.seed, r.collapse) for r in self.runs if r.collapse]

  def dynamics(self, key: str, first: bool) -> float | None:
    """`RunResult.window_mean` averaged over the finished seeds."""
    values = [r.window_mean(key, first) for r in self.runs]
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None

  def loss_terms(self) -> list[str]:
    """The `loss/<term>` keys the runs logged, but the total."""
    keys = {k for r in self.runs for row in r.rows for k in row}
    return sorted(
        k for k in keys if k.startswith("loss/") and k != "loss/total"
    )


def _load_run(run: Run, max_new_tokens: int) -> RunResult:
  result = run.result()
  info, rows = result["eval"], result.get("curve", [])
  samples = np.asarray(info["samples"], np.float64)
  return RunResult(
      run=run,
      greedy=np.asarray(info["greedy"], np.float64),
      pass_at_k=(
          samples.max(axis=1) if samples.size else np.zeros(len(info["greedy"]))
      ),
      eval_info=info,
      rows=rows,
      collapse=collapse_lib.detect_collapse(rows, max_new_tokens),
  )


def collect(grid: Grid, out: str) -> list[VariantResult]:
  """Every variant of the grid with its finished runs (pending ones left
  out; `expected_seeds` says how many there should be)."""
  results = []
  runs = grid_runs(grid, out)
  for v in grid.variants:
    cap = grid.config(v, grid.seeds[0]).max_new_tokens
    done = [
        _load_run(r, cap)
        for r in runs
        if r.variant.name == v.name and r.is_done()
    ]
    memory = None
    if os.path.isfile(memory_path(out, v)):
      with open(memory_path(out, v), encoding="utf-8") as f:
        memory = json.load(f)
    tuning = []
    for r in runner_lib.tuning_runs(grid, out, v):
      if r.is_done():
        loaded = _load_run(r, cap)
        score = runner_lib.validation_score(r)[0]
        tuning.append((r.lr, score, loaded.collapse is not None))
      else:
        tuning.append((r.lr, None, False))
    results.append(
        VariantResult(
            v,
            done,
            len(grid.seeds),
            memory,
            tuning,
            runner_lib.chosen_lr(grid, out, v),
        )
    )
  return results


def measured_for_claims(
    results: list[VariantResult],
) -> dict[str, claims_lib.Measured]:
  return {
      r.variant.name: claims_lib.Measured(
          scores=r.scores(),
          select_frac=r.select_frac() or 1.0,
          temp_bytes=r.memory["temp_bytes"] if r.memory else None,
          collapsed=len(r.collapses()),
      )
      for r in results
      if r.runs
  }


def write_curves(results: list[VariantResult], path: str) -> str | None:
  """Held-out accuracy (eval/accuracy, mean over seeds) of every trained
  variant against steps, in one PNG, with the untrained rows (SFT init,
  teacher) as levels; None when no run evaluated during training."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  lines, levels = [], []
  for r in results:
    if not r.variant.trains and r.runs:  # a reference level, not a curve
      levels.append((r.variant.label, float(r.scores().mean())))
      continue
    by_step: dict[int, list[float]] = {}
    for run in r.runs:
      for step, value in zip(*plots.series(run.rows, "eval/accuracy")):
        by_step.setdefault(step, []).append(value)
    if by_step:
      steps = sorted(by_step)
      lines.append(
          (r.variant.label, steps, [float(np.mean(by_step[s])) for s in steps])
      )
  if not lines:
    return None
  fig, ax = plt.subplots(figsize=(9, 5.5))
  cmap = plt.get_cmap("tab10")
  styles = ("-", "--", ":", "-.")
  for i, (label, steps, values) in enumerate(lines):
    ax.plot(
        steps,
        values,
        marker="o",
        markersize=3,
        color=cmap(i % 10),
        linestyle=styles[(i // 10) % len(styles)],
        label=label,
    )
  for i, (label, level) in enumerate(levels):
    ax.axhline(
        level,
        color="gray",
        linestyle=styles[1 + i % 3],
        linewidth=1,
        label=f"{label} (final evaluation)",
    )
  ax.set_xlabel("step")
  ax.set_ylabel("held-out accuracy (greedy, mean over seeds)")
  ax.set_ylim(0.0, 1.02)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
  fig.tight_layout()
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown CPU"


def _fmt(value, spec: str, missing: str = "-") -> str:
  return missing if value is None else format(value, spec)


def _lr_cell(r: VariantResult) -> str:
  """The chosen rate in bold and each rate's validation accuracy."""
  if not r.tuning:
    return "-"
  parts = []
  for lr, score, collapsed in r.tuning:
    text = f"{lr:g}: " + ("pending" if score is None else f"{score:.3f}")
    text += " (collapsed)" if collapsed else ""
    parts.append(f"**{text}**" if lr == r.lr else text)
  return "; ".join(parts)


def _table_row(r: VariantResult, k: int) -> str:
  if not r.runs:
    return (
        f"| {r.variant.label} | {r.variant.method or '-'} | {_lr_cell(r)} |"
        " not run | | | | | |"
    )
  acc = stats.bootstrap_mean(r.scores("greedy"))
  pak = stats.bootstrap_mean(r.scores("pass_at_k"))
  mem = r.memory["temp_bytes"] / GIB if r.memory else None
  collapsed = "; ".join(f"seed {s}: {c}" for s, c in r.collapses()) or "-"
  seeds = len(r.runs)
  seeds_note = "" if seeds == r.expected_seeds else f" ({seeds} seeds)"
  return (
      f"| {r.variant.label}{seeds_note} | {r.variant.method or '-'} |"
      f" {_lr_cell(r)} | {acc} | {pak} | {_fmt(r.select_frac(), '.3f')} |"
      f" {_fmt(r.step_time(), '.3f')} | {_fmt(mem, '.2f')} |"
      f" {collapsed} |"
  )


def results_table(results: list[VariantResult], k: int) -> list[str]:
  head = (
      "| row | method | learning rate: validation accuracy (chosen in"
      " bold) | greedy accuracy [95% CI] |"
      f" pass@{k} [95% CI] | tokens trained (select/frac) | s/step |"
      " step temporaries (GiB) | collapsed |"
  )
  return [head, "|" + "---|" * 9] + [_table_row(r, k) for r in results]


def detectable_difference(results: list[VariantResult]) -> str | None:
  """A line on the half-width of the 95% interval of a row-vs-row
  difference (greedy accuracy) over every pair of trained rows with all
  their seeds: differences below it are within noise. None without two
  such rows."""
  rows = [
      r
      for r in results
      if r.variant.trains and r.runs and len(r.runs) == r.expected_seeds
  ]
  widths = []
  for i, a in enumerate(rows):
    for b in rows[i + 1 :]:
      d = stats.bootstrap_difference(a.scores(), b.scores())
      widths.append((d.hi - d.lo) / 2)
  if not widths:
    return None
  return (
      "Detectable difference: the 95% interval of a row-vs-row difference"
      f" of greedy accuracy has half-width {np.median(widths):.3f} (median;"
      f" {min(widths):.3f}-{max(widths):.3f} over the {len(widths)} pairs of"
      " trained rows): rows closer than that are within noise of each"
      " other."
  )


def dynamics_table(results: list[VariantResult]) -> list[str]:
  """How each trained row's rollouts changed while it trained: response
  length, EOS rate and student entropy over its first and its last
  `DYNAMICS_WINDOW` logged steps, and each loss term over the last ones
  (means over seeds). The evidence of how a row collapsed: EOS rate to 0 at
  the length cap, or entropy to 0 with short confident answers."""

  def change(r, key, spec=".3f"):
    start, end = r.dynamics(key, True), r.dynamics(key, False)
    if start is None or end is None:
      return "-"
    return f"{start:{spec}} -> {end:{spec}}"

  lines = [
      (
          "| row | response length (tokens) | EOS rate | student entropy (nats)"
          " | loss terms over the last steps |"
      ),
      "|" + "---|" * 5,
  ]
  for r in results:
    if not (r.variant.trains and r.runs):
      continue
    terms = ", ".join(
        f"{k.removeprefix('loss/')} {r.dynamics(k, False):.4g}"
        for k in r.loss_terms()
        if r.dynamics(k, False) is not None
    )
    lines.append(
        f"| {r.variant.label} | {change(r, 'rollout/len_mean', '.1f')} |"
        f" {change(r, 'rollout/eos_rate', '.2f')} |"
        f" {change(r, 'entropy/student')} | {terms or '-'} |"
    )
  return lines


def claims_table(checked: list[claims_lib.ClaimResult]) -> list[str]:
  lines = [
      "| paper | claim | measured | statistic | verdict | detectable (±) |",
      "|---|---|---|---|---|---|",
  ]
  for c in checked:
    half = "-" if c.half_width is None else f"{c.half_width:.3f}"
    lines.append(
        f"| {c.claim.paper} | {c.claim.text} ({c.claim.a}"
        f" {c.claim.relation} {c.claim.b}) | {c.measured} |"
        f" {c.statistic} | **{c.verdict}** | {half} |"
    )
  return lines


def _machine(grid: Grid, out: str) -> str:
  """Where the timings come from: CPU, cores, load while the runs ended."""
  loads = [r.seconds("load_avg") for r in grid_runs(grid, out)]
  loads = [x for x in loads if x is not None]
  text = f"{_cpu_model()}, {os.cpu_count()} cores"
  if loads:
    text += (
        f", 1-min load average {min(loads):.1f}-{max(loads):.1f} as runs ended"
    )
  return text


def _shown(path: str) -> str:
  """A path as the report shows it: relative to the working directory when
  inside it (a committed RESULTS.md names no machine's directories)."""
  if not path or not os.path.isabs(path):
    return path
  rel = os.path.relpath(path)
  return path if rel.startswith("..") else rel


def _lr_text(grid: Grid, c) -> str:
  t = grid.tuning
  if not t.enabled:
    return (
        f"learning rate {c.optimizer.learning_rate:g} (the same for all"
        " methods, not tuned)"
    )
  rates = ", ".join(f"{x:g}" for x in t.learning_rates)
  return (
      f"learning rate tuned per row over [{rates}] (the same grid for all):"
      f" one run per rate with seed {t.seed}, scored on the first"
      f" {grid.evaluation.num_questions} questions of the task's"
      f" '{t.split}' split (disjoint from train and test), the best greedy"
      " accuracy chosen (then pass@k, then the smaller rate) and run with"
      " the seeds below on the test split"
  )


def _setup(grid: Grid, results: list[VariantResult]) -> list[str]:
  trained = next(
      (r.variant for r in results if r.variant.trains), grid.variants[0]
  )
  c = grid.config(trained, grid.seeds[0])
  e, m = grid.evaluation, grid.memory
  task = (
      f"built-in arithmetic, difficulty '{c.data.difficulty}'"
      if c.data.source == "arithmetic"
      else c.data.path
  )
  return [
      (
          f"- Grid `{_shown(grid.path)}`; data: {task}; student init"
          f" `{_shown(c.student)}`, teacher `{_shown(c.teacher)}`."
      ),
      (
          f"- Every trained row: {c.total_steps} steps, batch {c.batch_size},"
          f" {c.max_new_tokens} new tokens, {_lr_text(grid, c)}, sampling"
          f" temperature {c.sampling.temperature:g}; seeds"
          f" {list(grid.seeds)}."
      ),
      (
          f"- Evaluation: the first {e.num_questions} questions of the test"
          " split (task seed 0, the same for every run): greedy accuracy, and"
          f" pass@{e.k} of {e.k} samples at temperature {e.temperature:g}."
          " Intervals: 95% bootstrap over seeds and questions"
          f" ({stats.NUM_RESAMPLES} replicates)."
      ),
      (
          "- Learning curves: the trainer's periodic greedy evaluation"
          f" (`eval/accuracy` on {c.eval_examples} test questions of each run's"
          " task seed), averaged over seeds."
      ),
      (
          "- Tokens trained: the mean `select/frac` over steps (1 for"
          " all-token methods); s/step: median `train/step_time` (rollout +"
          " update)."
      ),
      (
          "- Step temporaries: the compiled training step of each row's"
          " method at one large shape (student and teacher"
          f" `{m.preset or 'as trained'}`, batch {m.batch_size}, prompt"
          f" {m.prompt_len} + response {m.response_len} tokens, no weights),"
          " `memory_analysis().temp_size_in_bytes`."
      ),
      (
          f"- Collapse: {collapse_lib.WINDOW} consecutive steps with EOS rate"
          f" <= {collapse_lib.EOS_FLOOR} or mean length >="
          f" {collapse_lib.CAP_FRACTION:.0%} of the cap; collapsed runs stay in"
          " the means and are named in the last column."
      ),
  ] + (
      [
          "- Gradient alignment (the Unmasking claim): `scripts/diagnose.py"
          f" {_diagnose_command(grid)}` on the untrained pair (reverse KL),"
          f" its report in `{runner_lib.DIAGNOSE_DIR}/`."
      ]
      if grid.diagnose.enabled
      else []
  )


def _diagnose_command(grid: Grid) -> str:
  """The grid's diagnose.py flags with repository-relative paths."""
  shown = []
  for flag in grid.diagnose_flags(runner_lib.DIAGNOSE_DIR):
    name, _, value = flag.partition("=")
    shown.append(f"{name}={_shown(value) if os.path.isabs(value) else value}")
  return " ".join(shown)


def _diagnose_summary(out: str) -> dict | None:
  path = runner_lib.diagnose_summary_path(out)
  if not os.path.isfile(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def write_results(grid: Grid, out: str, command: str) -> str:
  """Writes OUT/RESULTS.md, OUT/curves.png and OUT/summary.json.

  OUT/FINDINGS.md, when there, is shown as the "Findings" section.

  Args:
    grid: the grid that was run.
    out: its output directory.
    command: the command line that produced it (named in the header).

  Returns:
    The path of RESULTS.md.
  """
  results = collect(grid, out)
  curves = write_curves(results, os.path.join(out, "curves.png"))
  checked = [
      claims_lib.check_claim(c, measured_for_claims(results))
      for c in grid.claims
  ]
  if grid.diagnose.enabled:
    checked.append(claims_lib.check_alignment(_diagnose_summary(out)))
  every = runner_lib.all_runs(grid, out)
  total, done = len(every), sum(r.is_done() for r in every)
  lines = [
      "<!-- Generated by scripts/reproduce.py; do not edit by hand. -->",
      "# Results",
      "",
      (
          f"Generated by `{command}` on {time.strftime('%Y-%m-%d %H:%M')}"
          f" ({_machine(grid, out)}); every number here comes from that"
          " command."
      ),
      "",
  ]
  if grid.quick:
    lines += ["**--quick: a smoke test of the pipeline, not results.**", ""]
  if done < total:
    lines += [f"**Incomplete: {done} of {total} runs finished.**", ""]
  lines += ["## Setup", ""] + _setup(grid, results) + [""]
  lines += ["## Table", ""] + results_table(results, grid.evaluation.k)
  detectable = detectable_difference(results)
  if detectable:
    lines += ["", detectable]
  lines += ["", "## Learning curves", ""]
  lines += (
      [f"![held-out accuracy of every row]({os.path.basename(curves)})"]
      if curves
      else ["(no run evaluated during training)"]
  )
  rules = claims_lib.RULES
  if grid.diagnose.enabled:
    rules += " " + claims_lib.ALIGNMENT_RULE
  lines += ["", "## Claims", "", rules, ""]
  lines += claims_table(checked)
  lines += [
      "",
      "## Rollouts during training",
      "",
      (
          f"Means over the first and the last {DYNAMICS_WINDOW} logged steps"
          " of each row's test runs (its chosen rate; training rollouts, not"
          " the evaluation); a dash where the method does not log it."
      ),
      "",
  ]
  lines += dynamics_table(results)
  findings = os.path.join(out, FINDINGS_FILE)
  if os.path.isfile(findings):
    with open(findings, encoding="utf-8") as f:
      text = f.read().strip()
    lines += [
        "",
        "## Findings",
        "",
        (
            f"(Written by hand from the tables above, in `{FINDINGS_FILE}`;"
            " the rest of this file is generated.)"
        ),
        "",
        text,
    ]
  failed = [(r.name, r.failure()) for r in every if r.failure()]
  if failed:
    lines += ["", "## Failed runs (not in the table)", ""]
    lines += [f"- `{name}`: {error}" for name, error in failed]
  path = os.path.join(out, "RESULTS.md")
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  _write_summary(results, checked, os.path.join(out, "summary.json"))
  return path


def _write_summary(results, checked, path: str) -> None:
  """The table's numbers as JSON, for tools."""
  rows = []
  for r in results:
    row = {
        "name": r.variant.name,
        "label": r.variant.label,
        "method": r.variant.method,
        "seeds": [x.run.seed for x in r.runs],
        "lr": r.lr,
        "tuning": [
            {"lr": lr, "validation_accuracy": score, "collapsed": collapsed}
            for lr, score, collapsed in r.tuning
        ],
    }
    if r.runs:
      acc = stats.bootstrap_mean(r.scores("greedy"))
      pak = stats.bootstrap_mean(r.scores("pass_at_k"))
      row.update(
          accuracy=dataclasses.asdict(acc),
          pass_at_k=dataclasses.asdict(pak),
          select_frac=r.select_frac(),
          step_time=r.step_time(),
          memory=r.memory,
          collapsed={str(s): str(c) for s, c in r.collapses()},
      )
    rows.append(row)
  claims = [
      {
          "paper": c.claim.paper,
          "claim": c.claim.text,
          "measured": c.measured,
          "statistic": c.statistic,
          "verdict": c.verdict,
      }
      for c in checked
  ]
  with open(path, "w", encoding="utf-8") as f:
    json.dump({"rows": rows, "claims": claims}, f, indent=1)
