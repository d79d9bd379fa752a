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
"""A results grid: its config file, (method, variant) rows, seeds and runs.

A grid file (configs/grids/NAME.py) is a trainer config file whose
`get_config()` every run starts from, plus:

  variants() -> list[Variant]     the rows, as `--config.*` overrides
  claims() -> list[Claim]         the papers' claims checked on the rows
  SEEDS                           seeds of every trained row
  EVALUATION                      dict of `EvalSpec` fields
  MEMORY                          dict of `MemorySpec` fields
  TUNING                          dict of `TuningSpec` fields (optional)
  DIAGNOSE                        dict of `DiagnoseSpec` fields (optional)
  QUICK                           dict: variants, seeds, overrides,
                                  evaluation, memory, tuning, diagnose
                                  for --quick
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
from typing import Any, Mapping, Sequence

import ml_collections

from opd_jax import methods
from opd_jax.data import tasks
from opd_jax.results.claims import Claim

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_]*$")
# The smallest max / min ratio of a tuning grid's learning rates.
MIN_SPAN = 30.0


@dataclasses.dataclass(frozen=True)
class Variant:
  """One row of the grid: a method and its config overrides.

  Attributes:
    name: a short directory-safe id ("tip_soft_or_50").
    label: what the results table shows.
    method: the trainer's `config.method`, or None for a row that trains
      nothing and evaluates `config.student` as it is (the SFT init).
    overrides: config field path -> value (e.g. {"tip.rho": 0.2}).
  """

  name: str
  label: str
  method: str | None
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if not _NAME_RE.match(self.name):
      raise ValueError(f"Variant.name: expected [a-z0-9_]+, got {self.name!r}")

  @property
  def trains(self) -> bool:
    return self.method is not None

  def flags(self) -> list[str]:
    """The `--config.*` flags realising this variant on the command line."""
    items = dict(self.overrides)
    if self.method is not None:
      items = {"method": self.method, **items}
    return [f"--config.{k}={_flag_value(v)}" for k, v in items.items()]

  def apply(self, c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of `c` with this variant's method and overrides set."""
    c = ml_collections.ConfigDict(c.to_dict())
    if self.method is not None:
      c.method = self.method
    for path, value in self.overrides.items():
      *parents, leaf = path.split(".")
      node = c
      for p in parents:
        node = node[p]
      if leaf not in node:
        raise KeyError(f"variant {self.name}: config.{path} does not exist")
      node[leaf] = value
    return c


def _flag_value(v: Any) -> str:
  if isinstance(v, bool):
    return "true" if v else "false"
  return str(v)


@dataclasses.dataclass(frozen=True)
class EvalSpec:
  """The final evaluation of every run (the same questions for all).

  Attributes:
    num_questions: test questions (the task's seed-0 test split).
    k: samples per question for pass@k.
    temperature: sampling temperature of the k samples.
    batch_size: questions per generation call.
  """

  num_questions: int = 256
  k: int = 4
  temperature: float = 1.0
  batch_size: int = 128


@dataclasses.dataclass(frozen=True)
class MemorySpec:
  """The one large shape at which every variant's step is compiled.

  Attributes:
    preset: the student's (and teacher's) ModelConfig preset.
    batch_size, prompt_len, response_len: the step's batch shape.
  """

  preset: str = "qwen3_0p6b"
  batch_size: int = 8
  prompt_len: int = 64
  response_len: int = 2048


@dataclasses.dataclass(frozen=True)
class TuningSpec:
  """The learning-rate grid every trained row is tuned over.

  Each trained row runs once per learning rate with `seed`, evaluated on
  the task's `split` (never the test split); its best (greedy accuracy,
  then pass@k, then the smaller rate) is the rate of its seeds' runs on the
  test split. The rates span at least `MIN_SPAN`x, and a row whose best
  rate sits on an edge gets rates past it (`results.tuning.schedule`).
  Fewer than two rates: no tuning, every row keeps the config's.

  Attributes:
    learning_rates: the rates, the same for every row.
    seed: the seed of the tuning runs (not one of the grid's SEEDS, so the
      test runs share nothing with the choice).
    split: the evaluation split of the tuning runs.
    edge_factor: the step past an edge (the next rate is the edge's / or *
      this).
    edge_steps: how many rates past each edge at most; a row still best at
      its last one stays "tuned at an edge" in the report.
  """

  learning_rates: tuple[float, ...] = ()
  seed: int = 100
  split: str = "validation"
  edge_factor: float = 3.0
  edge_steps: int = 2

  def __post_init__(self):
    rates = tuple(float(x) for x in self.learning_rates)
    object.__setattr__(self, "learning_rates", rates)
    if any(not x > 0 for x in rates) or len(set(rates)) != len(rates):
      raise ValueError(
          "TUNING.learning_rates: expected distinct rates > 0, got"
          f" {list(rates)}"
      )
    if self.split == "test":
      raise ValueError("TUNING.split: tuning never evaluates on 'test'")
    if len(rates) > 1 and max(rates) < MIN_SPAN * min(rates) * (1 - 1e-9):
      # A 10x grid left 17 of 23 rows of results/default at its lowest
      # rate (issue 36): too narrow to bracket an optimum.
      raise ValueError(
          f"TUNING.learning_rates: expected a span >= {MIN_SPAN:g}x, got"
          f" {max(rates) / min(rates):.3g}x ({list(rates)})"
      )
    if not self.edge_factor > 1 or self.edge_steps < 0:
      raise ValueError(
          "TUNING.edge_factor, edge_steps: expected > 1 and >= 0, got"
          f" {self.edge_factor}, {self.edge_steps}"
      )

  @property
  def enabled(self) -> bool:
    return len(self.learning_rates) > 1


@dataclasses.dataclass(frozen=True)
class DiagnoseSpec:
  """The gradient-alignment measurement behind the "Unmasking" claim.

  `scripts/diagnose.py` on the grid's pair (its base config's student and
  teacher, task level and response length), once per results directory
  (OUT/diagnose/); RESULTS.md checks the paper's "alignment is higher on
  incorrect rollouts" with the diagnostic's own within-question statistic.

  Attributes:
    num_questions: held-out questions of the task (0: not measured).
    budget: rollouts per question.
    seed: its PRNG seed.
    teachers: teacher configurations measured on the same trees
      (`scripts/diagnose.py --teachers`: 'teacher', 'self:solution', ...).
  """

  num_questions: int = 0
  budget: int = 512
  seed: int = 0
  teachers: tuple[str, ...] = ("teacher",)

  def __post_init__(self):
    for name, low in (("num_questions", 0), ("budget", 1), ("seed", 0)):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(
            f"DIAGNOSE.{name}: expected an integer >= {low}, got {value!r}"
        )

  @property
  def enabled(self) -> bool:
    return self.num_questions > 0


@dataclasses.dataclass(frozen=True)
class Grid:
  """A loaded grid file, possibly narrowed to some variants or --quick.

  Attributes:
    path: the grid file (passed to scripts/train.py as --config).
    variants: the rows.
    seeds: seeds of each row.
    evaluation: the final evaluation.
    memory: the large shape of the memory column.
    claims: the claims checked.
    tuning: the learning-rate grid of the trained rows.
    overrides: extra config overrides for every run (--quick's).
    quick: whether this is the --quick grid.
    diagnose: the gradient-alignment measurement of the pair.
  """

  path: str
  variants: tuple[Variant, ...]
  seeds: tuple[int, ...]
  evaluation: EvalSpec
  memory: MemorySpec
  claims: tuple[Claim, ...]
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  quick: bool = False
  tuning: TuningSpec = TuningSpec()
  diagnose: DiagnoseSpec = DiagnoseSpec()

  def diagnose_flags(self, out: str) -> list[str]:
    """`scripts/diagnose.py` flags of the grid's alignment measurement,
    writing to `out`: the base config's pair, task level and length."""
    c = _module(self.path).get_config()
    if c.data.source not in tasks.NAMES:
      raise ValueError(
          f"DIAGNOSE: {self.path} trains on data.source={c.data.source!r};"
          f" the measurement runs on a built-in task {tasks.NAMES} only"
      )
    d = self.diagnose
    return [
        f"--student={c.student}",
        f"--teacher={c.teacher}",
        f"--task={c.data.source}",
        f"--teachers={','.join(d.teachers)}",
        f"--difficulty={c.data.difficulty}",
        f"--max_new_tokens={c.max_new_tokens}",
        f"--num_questions={d.num_questions}",
        f"--budget={d.budget}",
        f"--seed={d.seed}",
        f"--out={out}",
    ]

  def _run_overrides(self, lr: float | None, split: str | None) -> dict:
    extra = dict(self.overrides)
    if lr is not None:
      extra["optimizer.learning_rate"] = lr
    if split is not None:
      extra["data.eval_split"] = split
    return extra

  def config(
      self,
      variant: Variant,
      seed: int,
      *,
      lr: float | None = None,
      split: str | None = None,
  ) -> ml_collections.ConfigDict:
    """The trainer config of one run, as scripts/train.py would build it
    (`lr`, `split`: a tuned or tuning run's rate and evaluation split)."""
    c = variant.apply(_module(self.path).get_config())
    extra = self._run_overrides(lr, split)
    c = Variant("all_runs", "", None, extra).apply(c)
    c.seed = seed
    return c

  def run_flags(
      self,
      variant: Variant,
      seed: int,
      *,
      lr: float | None = None,
      split: str | None = None,
  ) -> list[str]:
    """`--config.*` flags of one run (after `--config=self.path`)."""
    extra = Variant("all_runs", "", None, self._run_overrides(lr, split))
    return [f"--config.seed={seed}", *variant.flags(), *extra.flags()]


def _module(path: str):
  if not os.path.isfile(path):
    raise FileNotFoundError(f"--grid: {path} does not exist")
  spec = importlib.util.spec_from_file_location("opd_jax_grid", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  for attr in ("get_config", "variants", "claims", "SEEDS"):
    if not hasattr(module, attr):
      raise ValueError(f"--grid: {path} defines no {attr!r}")
  return module


def _pick(
    variants: Sequence[Variant], names: Sequence[str], path: str
) -> tuple[Variant, ...]:
  by_name = {v.name: v for v in variants}
  unknown = [n for n in names if n not in by_name]
  if unknown:
    raise ValueError(
        f"--methods: {unknown} not in {path}; its variants are"
        f" {sorted(by_name)}"
    )
  return tuple(by_name[n] for n in names)


def _fields(node) -> list[str]:
  return sorted(node.keys()) if hasattr(node, "keys") else []


def check_variant(
    variant: Variant, base: ml_collections.ConfigDict, registry
) -> None:
  """Refuses a row whose method or overrides the trainer does not know.

  One line naming the row and the field, expected vs got, before anything
  is run or compiled: an unknown method, an override path that is not a
  config field, or a field of another method than the row's (silently
  ignored by the trainer otherwise).
  """
  where = f"row {variant.name!r}"
  if variant.method is not None and variant.method not in registry:
    raise ValueError(
        f"{where}: method: expected one of {sorted(registry)}, got"
        f" {variant.method!r}"
    )
  for path in variant.overrides:
    *parents, leaf = path.split(".")
    node, walked = base, "config"
    for p in parents:
      if not hasattr(node, "keys") or p not in node:
        raise ValueError(
            f"{where}: {walked}.{p}: expected one of {_fields(node)}, got"
            f" {p!r} (in override {path!r})"
        )
      node, walked = node[p], f"{walked}.{p}"
    if not hasattr(node, "keys") or leaf not in node:
      raise ValueError(
          f"{where}: {walked}.{leaf}: expected one of {_fields(node)}, got"
          f" {leaf!r} (in override {path!r})"
      )
    owner = parents[0] if parents else None
    if owner in registry and owner != variant.method:
      raise ValueError(
          f"{where}: config.{path}: expected fields of its method"
          f" config.{variant.method}.*, got a field of method {owner!r}"
      )


def load_grid(
    path: str, *, names: Sequence[str] = (), quick: bool = False
) -> Grid:
  """Loads a grid file; `names` keeps only those variants (in that order).

  With `quick`, the file's QUICK settings replace its variants (unless
  `names` are given), seeds, evaluation and memory shape, and its
  overrides apply to every run.
  """
  module = _module(path)
  variants = tuple(module.variants())
  if len({v.name for v in variants}) != len(variants):
    raise ValueError(f"--grid: {path} has two variants with one name")
  seeds = tuple(module.SEEDS)
  evaluation = EvalSpec(**getattr(module, "EVALUATION", {}))
  memory = MemorySpec(**getattr(module, "MEMORY", {}))
  tuning = TuningSpec(**getattr(module, "TUNING", {}))
  diagnose = DiagnoseSpec(**getattr(module, "DIAGNOSE", {}))
  overrides: dict[str, Any] = {}
  if quick:
    q = getattr(module, "QUICK", None)
    if q is None:
      raise ValueError(f"--quick: {path} defines no QUICK settings")
    names = names or q["variants"]
    seeds = tuple(q["seeds"])
    evaluation = EvalSpec(**q.get("evaluation", {}))
    memory = MemorySpec(**q.get("memory", {}))
    tuning = TuningSpec(**q.get("tuning", {}))
    diagnose = DiagnoseSpec(**q.get("diagnose", {}))
    overrides = dict(q.get("overrides", {}))
  if names:
    variants = _pick(variants, names, path)
  base = module.get_config()
  for v in variants:
    try:
      check_variant(v, base, methods.REGISTRY)
    except ValueError as e:
      raise ValueError(f"--grid: {path}: {e}") from None
  return Grid(
      path=os.path.abspath(path),
      variants=variants,
      seeds=seeds,
      evaluation=evaluation,
      memory=memory,
      claims=tuple(module.claims()),
      overrides=overrides,
      quick=quick,
      tuning=tuning,
      diagnose=diagnose,
  )
