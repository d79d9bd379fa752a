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
"""Plots of a run's metrics.jsonl: loss, held-out accuracy, selected fraction."""

from __future__ import annotations

import json
import os


def read_metrics(path: str) -> list[dict]:
  """The scalar lines of a metrics.jsonl, in file order."""
  rows = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      row = json.loads(line)
      if "step" in row:
        rows.append(row)
  return rows


def series(rows: list[dict], name: str) -> tuple[list[int], list[float]]:
  """(steps, values) of scalar `name`, the last value written per step."""
  by_step = {r["step"]: r[name] for r in rows if r.get(name) is not None}
  steps = sorted(by_step)
  return steps, [by_step[s] for s in steps]


def write_plots(
    rows: list[dict], out_dir: str, teacher_accuracy: float | None = None
) -> list[str]:
  """Loss, held-out accuracy and selected fraction over steps, as PNGs.

  Args:
    rows: the scalar lines of a metrics.jsonl (`read_metrics`).
    out_dir: where the PNGs go (created).
    teacher_accuracy: drawn as a reference line on the accuracy plot.

  Returns:
    The paths written; a plot whose series is absent (no evaluation in the
    run) is skipped.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")  # no display on a CI machine or over ssh
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  os.makedirs(out_dir, exist_ok=True)
  specs = [
      (
          "loss.png",
          "training loss (the method's objective)",
          [("loss/total", "loss")],
          None,
      ),
      (
          "accuracy.png",
          "held-out accuracy (greedy)",
          [("eval/accuracy", "student")],
          teacher_accuracy,
      ),
      (
          "selected_fraction.png",
          "fraction of response tokens selected",
          [("select/frac", "selected")],
          None,
      ),
  ]
  paths = []
  for name, title, lines, reference in specs:
    if not any(series(rows, key)[0] for key, _ in lines):
      continue
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in lines:
      x, y = series(rows, key)
      ax.plot(
          x, y, marker="o" if key.startswith("eval/") else None, label=label
      )
    if reference is not None:
      ax.axhline(reference, linestyle="--", color="gray", label="teacher")
      ax.set_ylim(0.0, 1.02)  # accuracies: the whole range, to scale
    ax.set_xlabel("step")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = os.path.join(out_dir, name)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    paths.append(path)
  return paths


def write_run_plots(
    workdir: str, teacher_accuracy: float | None = None
) -> list[str]:
  """`write_plots` of `WORKDIR/metrics.jsonl` into `WORKDIR/plots`."""
  from opd_jax.trainer.reporting import JSONL_NAME  # pylint: disable=g-import-not-at-top

  path = os.path.join(workdir, JSONL_NAME)
  if not os.path.isfile(path):
    return []
  return write_plots(
      read_metrics(path), os.path.join(workdir, "plots"), teacher_accuracy
  )
