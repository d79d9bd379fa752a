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

import collections
import dataclasses
import json
import os
import time
from typing import Mapping, Sequence

import numpy as np

from opd_jax.results import claims as claims_lib
from opd_jax.results import collapse as collapse_lib
from opd_jax.results import stats
from opd_jax.results import tuning as tuning_lib
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
  # The CPU it ran on (`runner.UNKNOWN_CPU` for results written before
  # runs recorded it) and the learning rate it trained at.
  cpu: str = runner_lib.UNKNOWN_CPU
  lr: float | None = None

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
    return runner_lib.median_step_time(self.rows)


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
  schedule: tuning_lib.Schedule | None = None
  # The test questions' keys (their text), or None when they could not be
  # rebuilt (then every position counts as its own question).
  question_keys: Sequence[str] | None = None

  def scores(self, which: str = "greedy") -> np.ndarray:
    """[seeds, distinct questions] of the finished runs (a question asked
    twice counted once: `stats.distinct_questions`)."""
    x = np.stack([getattr(r, which) for r in self.runs])
    keys = self.question_keys
    if keys is None or len(keys) != x.shape[1]:
      return x
    return stats.distinct_questions(x, keys)

  def trained_lrs(self) -> list[float]:
    """The distinct rates its test runs trained at (from their results)."""
    out: list[float] = []
    for r in self.runs:
      if r.lr is not None and not any(
          runner_lib.same_rate(r.lr, x) for x in out
      ):
        out.append(r.lr)
    return out

  def unsettled(self) -> str | None:
    """Why the row's tuning does not yet support a verdict, or None.

    Its best rate on an edge of the rates it has run (the optimum may lie
    beyond: `tuning.schedule` adds rates there), or its test runs trained
    at another rate than its best.
    """
    sched = self.schedule
    if sched is None or sched.best is None or not self.runs:
      return None
    done = [lr for lr, score, _ in self.tuning if score is not None]
    if sched.edge:
      limit = ", no rate left past it" if sched.at_limit else ""
      return (
          f"tuned at an edge: best rate {sched.best:g} is the"
          f" {'smallest' if sched.edge == 'low' else 'largest'} of those"
          f" run ({min(done):g}-{max(done):g}{limit})"
      )
    off = [
        x for x in self.trained_lrs() if not runner_lib.same_rate(x, sched.best)
    ]
    if off:
      return (
          f"test runs at {', '.join(f'{x:g}' for x in off)}, not its best"
          f" rate {sched.best:g}"
      )
    return None

  def step_times(self) -> dict[str, float]:
    """Mean over seeds of the median s/step, per CPU the runs ran on."""
    by_cpu: dict[str, list[float]] = collections.defaultdict(list)
    for r in self.runs:
      t = r.median_step_time()
      if t is not None:
        by_cpu[r.cpu].append(t)
    return {cpu: float(np.mean(v)) for cpu, v in by_cpu.items()}

  def select_frac(self) -> float | None:
    if not self.variant.trains:
      return None
    values = [r.mean_metric("select/frac") for r in self.runs]
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
      cpu=result.get("done", {}).get("cpu") or runner_lib.UNKNOWN_CPU,
      lr=result.get("lr"),
  )


def question_keys(grid: Grid, n: int) -> list[str] | None:
  """The text of the first `n` questions every run is graded on (the task
  seed `evaluate_run.EVAL_TASK_SEED`, the base config's evaluation source),
  rebuilt from the grid; None when the source cannot be read here."""
  # pylint: disable-next=g-import-not-at-top
  from opd_jax.results.evaluate_run import EVAL_TASK_SEED
  from opd_jax.trainer import builders  # pylint: disable=g-import-not-at-top
  from opd_jax.trainer import config as trainer_config  # pylint: disable=g-import-not-at-top

  variant = next((v for v in grid.variants if v.trains), grid.variants[0])
  c = grid.config(variant, EVAL_TASK_SEED)
  c.eval_examples = n
  try:
    source = builders.prompt_source(
        trainer_config.to_run_config(c), train=False
    )
    if len(source) != n:
      return None
    return [source[i].question for i in range(n)]
  except (OSError, ValueError, KeyError):
    return None


def collect(grid: Grid, out: str) -> list[VariantResult]:
  """Every variant of the grid with its finished runs (pending ones left
  out; `expected_seeds` says how many there should be)."""
  results = []
  runs = grid_runs(grid, out)
  keys: dict[int, list[str] | None] = {}
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
    n = len(done[0].greedy) if done else 0
    if n and n not in keys:
      keys[n] = question_keys(grid, n)
    results.append(
        VariantResult(
            v,
            done,
            len(grid.seeds),
            memory,
            tuning,
            runner_lib.chosen_lr(grid, out, v),
            runner_lib.row_schedule(grid, out, v),
            keys.get(n),
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
          edge=r.unsettled(),
      )
      for r in results
      if r.runs
  }


def baseline_temp_bytes(out: str) -> int | None:
  """The full-logit step's temporaries (`runner.execute_baseline_memory`),
  None when not measured."""
  path = runner_lib.baseline_memory_path(out)
  if not os.path.isfile(path):
    return None
  with open(path, encoding="utf-8") as f:
    return int(json.load(f)["temp_bytes"])


def check_claims(
    grid: Grid, out: str, results: list[VariantResult] | None = None
) -> list[claims_lib.ClaimResult]:
  """Every claim of the grid (and the Unmasking measurement's, when the
  grid has one) on its finished runs."""
  results = collect(grid, out) if results is None else results
  measured = measured_for_claims(results)
  baseline = baseline_temp_bytes(out)
  checked = [
      claims_lib.check_claim(c, measured, baseline_temp_bytes=baseline)
      for c in grid.claims
  ]
  if grid.diagnose.enabled:
    checked.append(claims_lib.check_alignment(_diagnose_summary(out)))
  return checked


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


def _fmt(value, spec: str, missing: str = "-") -> str:
  return missing if value is None else format(value, spec)


def _lr_cell(r: VariantResult) -> str:
  """Each rate's validation accuracy, the rate its test runs trained at in
  bold, and the row's tuning state when it is unsettled."""
  if not r.tuning:
    return "-"
  trained = r.trained_lrs() or ([r.lr] if r.lr is not None else [])
  parts = []
  for lr, score, collapsed in r.tuning:
    text = f"{lr:g}: " + ("pending" if score is None else f"{score:.3f}")
    text += " (collapsed)" if collapsed else ""
    bold = any(runner_lib.same_rate(lr, x) for x in trained)
    parts.append(f"**{text}**" if bold else text)
  cell = "; ".join(parts)
  why = r.unsettled()
  return cell + (f" (*{why}*)" if why else "")


def cpu_tags(results: list[VariantResult]) -> dict[str, str]:
  """A short tag per CPU the test runs ran on ('A', 'B', ...; '?' for
  results that did not record theirs), for the s/step column."""
  cpus = sorted(
      {r.cpu for v in results for r in v.runs} - {runner_lib.UNKNOWN_CPU}
  )
  tags = {cpu: chr(ord("A") + i) for i, cpu in enumerate(cpus)}
  tags[runner_lib.UNKNOWN_CPU] = "?"
  return tags


def _time_cell(r: VariantResult, tags: Mapping[str, str]) -> str:
  times = r.step_times()
  if not times:
    return "-"
  return "; ".join(f"{t:.3f} ({tags[cpu]})" for cpu, t in sorted(times.items()))


def cpu_note(results: list[VariantResult]) -> str | None:
  """What the s/step column's CPU tags mean, and which times compare."""
  count = collections.Counter(r.cpu for v in results for r in v.runs)
  if not count:
    return None
  tags = cpu_tags(results)
  parts = [
      f"{tags[cpu]} = {cpu} ({n} runs)"
      for cpu, n in sorted(
          count.items(), key=lambda x: (tags[x[0]] == "?", tags[x[0]])
      )
  ]
  text = (
      "s/step by CPU: "
      + "; ".join(parts)
      + ". Times compare only within one tag (a row run on two CPUs shows"
      " one time per CPU)."
  )
  if runner_lib.UNKNOWN_CPU in count:
    text += (
        " '?': results written before runs recorded their CPU; those runs"
        " may come from different machines (this grid's ran on at least"
        " two, see the grid file), so their times are not comparable with"
        " each other beyond a rough factor."
    )
  return text


def _table_row(r: VariantResult, k: int, tags: Mapping[str, str]) -> str:
  if not r.runs:
    return (
        f"| {r.variant.label} | {r.variant.method or '-'} | {_lr_cell(r)} |"
        " not run | | | | | |"
    )
  acc = stats.mean_interval(r.scores("greedy"))
  pak = stats.mean_interval(r.scores("pass_at_k"))
  mem = r.memory["temp_bytes"] / GIB if r.memory else None
  collapsed = "; ".join(f"seed {s}: {c}" for s, c in r.collapses()) or "-"
  seeds = len(r.runs)
  seeds_note = "" if seeds == r.expected_seeds else f" ({seeds} seeds)"
  return (
      f"| {r.variant.label}{seeds_note} | {r.variant.method or '-'} |"
      f" {_lr_cell(r)} | {acc} | {pak} | {_fmt(r.select_frac(), '.3f')} |"
      f" {_time_cell(r, tags)} | {_fmt(mem, '.2f')} |"
      f" {collapsed} |"
  )


def results_table(results: list[VariantResult], k: int) -> list[str]:
  head = (
      "| row | method | learning rate: validation accuracy (chosen in"
      " bold) | greedy accuracy [95% CI] |"
      f" pass@{k} [95% CI] | tokens trained (select/frac) | s/step (CPU) |"
      " step temporaries (GiB) | collapsed |"
  )
  tags = cpu_tags(results)
  return [head, "|" + "---|" * 9] + [_table_row(r, k, tags) for r in results]


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
      d = stats.difference_interval(a.scores(), b.scores())
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
        f"| {c.claim.paper} | {c.claim.text} ({c.claim.statement}) |"
        f" {c.measured} | {c.statistic} | **{c.verdict}** | {half} |"
    )
  return lines


def regimes_table(
    regimes: Mapping[str, Sequence[claims_lib.ClaimResult]],
) -> list[str]:
  """One row per claim, one column per regime (a grid's results): each
  claim's verdict in each, with its difference and interval.

  Claims are matched across regimes by (paper, text); one a regime does
  not check shows '-' there. Rows in order of first appearance.
  """
  names = list(regimes)
  order: list[tuple[str, str]] = []
  cells: dict[tuple[str, str], dict[str, str]] = {}
  for name in names:
    for c in regimes[name]:
      key = (c.claim.paper, c.claim.text)
      if key not in cells:
        order.append(key)
        cells[key] = {}
      stat = "" if c.statistic == "-" else f" ({c.statistic})"
      cells[key][name] = f"**{c.verdict}**{stat}"
  lines = [
      "| paper | claim | " + " | ".join(names) + " |",
      "|---|---|" + "---|" * len(names),
  ]
  for paper, text in order:
    row = " | ".join(cells[(paper, text)].get(n, "-") for n in names)
    lines.append(f"| {paper} | {text} | {row} |")
  return lines


def write_regimes(regimes: Sequence[tuple[str, Grid, str]], path: str) -> str:
  """Writes the claims of several grids side by side (`regimes_table`).

  Args:
    regimes: (name, grid, its output directory) per regime, in column
      order.
    path: the markdown file to write.

  Returns:
    `path`.
  """
  checked = {name: check_claims(grid, out) for name, grid, out in regimes}
  lines = [
      "<!-- Generated by opd_jax.results.report.write_regimes. -->",
      "# Claims by regime",
      "",
      "Each column is one grid's RESULTS.md verdicts ("
      + ", ".join(f"{n}: `{_shown(out)}`" for n, _, out in regimes)
      + ").",
      "",
      claims_lib.RULES,
      "",
  ]
  lines += regimes_table(checked)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  return path


def _machine(grid: Grid, out: str) -> str:
  """Where the timings come from: the runs' CPUs and load as they ended."""
  runs = [r for r in grid_runs(grid, out) if r.is_done()]
  loads = [r.seconds("load_avg") for r in runs]
  loads = [x for x in loads if x is not None]
  cpus = collections.Counter(
      r.result()["done"].get("cpu") or runner_lib.UNKNOWN_CPU for r in runs
  )
  text = "runs on " + (
      ", ".join(f"{cpu} ({n})" for cpu, n in sorted(cpus.items())) or "-"
  )
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
  span = max(t.learning_rates) / min(t.learning_rates)
  return (
      f"learning rate tuned per row over [{rates}] ({span:.0f}x, the same"
      f" grid for all): one run per rate with seed {t.seed}, scored on the"
      f" first {grid.evaluation.num_questions} questions of the task's"
      f" '{t.split}' split (disjoint from train and test), the best greedy"
      " accuracy chosen (then pass@k, then the smaller rate) and run with"
      " the seeds below on the test split; a row whose best rate is the"
      " smallest or largest it has run gets up to"
      f" {t.edge_steps} more past that edge ({t.edge_factor:g}x apart)"
  )


def _setup(grid: Grid, results: list[VariantResult], out: str) -> list[str]:
  trained = next(
      (r.variant for r in results if r.variant.trains), grid.variants[0]
  )
  c = grid.config(trained, grid.seeds[0])
  e, m = grid.evaluation, grid.memory
  task = (
      f"built-in {c.data.source}, difficulty '{c.data.difficulty}'"
      if c.data.source != "file"
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
          f" pass@{e.k} of {e.k} samples at temperature {e.temperature:g},"
          f" {_distinct_text(results)}. Intervals (95%): the hull of a"
          " two-stage bootstrap (seeds, then distinct questions within each"
          f" drawn seed; {stats.NUM_RESAMPLES} replicates) and Student's"
          " (Welch's for a difference) t-interval over the seeds' means."
      ),
      (
          "- Learning curves: the trainer's periodic greedy evaluation"
          f" (`eval/accuracy` on {c.eval_examples} test questions of each run's"
          " task seed), averaged over seeds."
      ),
      (
          "- Tokens trained: the mean `select/frac` over steps (1 for"
          " all-token methods); s/step: median `train/step_time` (rollout +"
          " update), per CPU the runs recorded (tag below the table)."
      ),
      (
          "- Step temporaries: the compiled training step of each row's"
          " method at one large shape (student and teacher"
          f" `{m.preset or 'as trained'}`, batch {m.batch_size}, prompt"
          f" {m.prompt_len} + response {m.response_len} tokens, no weights),"
          " `memory_analysis().temp_size_in_bytes`; the papers' baseline,"
          " the same step over full [B, T, V] logits by autodiff"
          f" (`{runner_lib.FULL_LOGIT}`):"
          f" {_baseline_text(out)}."
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


def _baseline_text(out: str) -> str:
  temp = baseline_temp_bytes(out)
  if temp is None:
    return "not measured"
  return f"{temp / GIB:.2f} GiB"


def _distinct_text(results: list[VariantResult]) -> str:
  r = next((r for r in results if r.runs), None)
  if r is None:
    return "each question once"
  n, keys = len(r.runs[0].greedy), r.question_keys
  if keys is None or len(keys) != n:
    return (
        f"over {n} questions (their text could not be rebuilt: duplicates,"
        " if any, count more than once)"
    )
  return (
      f"over the {len(set(keys))} distinct questions of the {n} (a question"
      " asked twice counts once)"
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
  checked = check_claims(grid, out, results)
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
  lines += ["## Setup", ""] + _setup(grid, results, out) + [""]
  lines += ["## Table", ""] + results_table(results, grid.evaluation.k)
  for note in (cpu_note(results), detectable_difference(results)):
    if note:
      lines += ["", note]
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
        "trained_lr": r.trained_lrs(),
        "tuning": [
            {"lr": lr, "validation_accuracy": score, "collapsed": collapsed}
            for lr, score, collapsed in r.tuning
        ],
        "unsettled": r.unsettled(),
    }
    if r.runs:
      acc = stats.mean_interval(r.scores("greedy"))
      pak = stats.mean_interval(r.scores("pass_at_k"))
      row.update(
          accuracy=dataclasses.asdict(acc),
          pass_at_k=dataclasses.asdict(pak),
          distinct_questions=int(r.scores().shape[1]),
          select_frac=r.select_frac(),
          step_time=r.step_times(),
          memory=r.memory,
          collapsed={str(s): str(c) for s, c in r.collapses()},
      )
    rows.append(row)
  claims = [
      {
          "paper": c.claim.paper,
          "claim": c.claim.text,
          "measured": c.measured,
          "relation": c.claim.relation,
          "margin": c.claim.margin,
          "statistic": c.statistic,
          "interval_verdict": c.interval_verdict,
          "verdict": c.verdict,
      }
      for c in checked
  ]
  with open(path, "w", encoding="utf-8") as f:
    json.dump({"rows": rows, "claims": claims}, f, indent=1)
