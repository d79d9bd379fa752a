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
"""Detects runs whose rollouts degenerated, from their metrics.jsonl rows."""

from __future__ import annotations

import dataclasses
from typing import Sequence

# A rollout batch is degenerate when almost no response ends (EOS rate at
# most EOS_FLOOR) or the mean length sits at the cap (CAP_FRACTION of
# max_new_tokens); a run has collapsed when WINDOW consecutive logged steps
# are degenerate. Low entropy alone is not a collapse (a student that has
# learnt the task is confident); it is reported beside the others.
EOS_FLOOR = 0.05
CAP_FRACTION = 0.95
ENTROPY_FLOOR = 0.01
WINDOW = 10


@dataclasses.dataclass(frozen=True)
class Collapse:
  """Where and how a run collapsed.

  Attributes:
    step: the first step of the first window of degenerate steps.
    signals: which signals fired at that step ('eos_rate->0',
      'length at cap', 'entropy->0').
  """

  step: int
  signals: tuple[str, ...]

  def __str__(self) -> str:
    return f"step {self.step} ({', '.join(self.signals)})"


def _signals(row: dict, max_new_tokens: int) -> tuple[str, ...]:
  out = []
  eos = row.get("rollout/eos_rate")
  if eos is not None and eos <= EOS_FLOOR:
    out.append("eos_rate->0")
  length = row.get("rollout/len_mean")
  if length is not None and length >= CAP_FRACTION * max_new_tokens:
    out.append("length at cap")
  if not out:
    return ()
  entropy = row.get("entropy/student")
  if entropy is not None and entropy <= ENTROPY_FLOOR:
    out.append("entropy->0")
  return tuple(out)


def detect_collapse(
    rows: Sequence[dict], max_new_tokens: int, *, window: int = WINDOW
) -> Collapse | None:
  """The run's collapse, or None.

  Args:
    rows: metrics.jsonl scalar rows (`trainer.plots.read_metrics`); rows
      without rollout metrics (evaluation lines) are ignored.
    max_new_tokens: the run's response cap.
    window: consecutive degenerate logged steps that make a collapse.

  Returns:
    A `Collapse` at the first step of the first degenerate window.
  """
  if window < 1:
    raise ValueError(f"window: expected >= 1, got {window}")
  steps = [r for r in rows if "rollout/eos_rate" in r]
  steps.sort(key=lambda r: r["step"])
  run_start, first = None, ()
  for i, row in enumerate(steps):
    signals = _signals(row, max_new_tokens)
    if not signals:
      run_start = None
      continue
    if run_start is None:
      run_start, first = i, signals
    if i - run_start + 1 >= window:
      return Collapse(int(steps[run_start]["step"]), first)
  return None
