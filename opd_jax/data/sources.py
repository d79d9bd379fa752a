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
"""Prompt sources: the built-in tasks and local jsonl / parquet / saved datasets."""

from __future__ import annotations

import abc
import dataclasses
import gzip
import hashlib
import json
import os
from typing import Any, Iterator, Mapping

from absl import logging

from opd_jax.data import arithmetic
from opd_jax.data import tasks


@dataclasses.dataclass(frozen=True)
class PromptRecord:
  """One prompt before tokenization.

  Attributes:
    question: the user turn.
    answer: the reference final answer (for grading), or None.
    reference_response: a full reference assistant turn (for GKD's
      off-policy dataset steps), or None.
    context: the fields a teacher context template can name (`solution`,
      `summary`, `wrong`, ...; see `data.context`), or None. Not part of
      equality: two records of the same prompt compare equal.
  """

  question: str
  answer: str | None = None
  reference_response: str | None = None
  context: Mapping[str, str | None] | None = dataclasses.field(
      default=None, compare=False, hash=False
  )


class PromptSource(abc.ABC):
  """A finite, indexable collection of `PromptRecord`s."""

  @property
  @abc.abstractmethod
  def name(self) -> str:
    """A human-readable origin (a path or a task split) for messages."""

  @abc.abstractmethod
  def __len__(self) -> int:
    ...

  @abc.abstractmethod
  def __getitem__(self, index: int) -> PromptRecord:
    ...

  def records(self) -> Iterator[PromptRecord]:
    """Yields every record in index order."""
    for i in range(len(self)):
      yield self[i]

  def location(self, index: int) -> str:
    """Where record `index` is, for messages ('line 7', 'row 6')."""
    return f"row {index}"

  def origin(self, index: int) -> int:
    """Record `index`'s row in the underlying file or split.

    The same index, unless this source is a selection of another one's
    rows (the rows kept by `--skip_ungradable`, ...).
    """
    return index


class _Head(PromptSource):
  """The first `n` records of another source."""

  def __init__(self, source: PromptSource, n: int):
    self._source, self._n = source, n

  @property
  def name(self) -> str:
    return self._source.name

  def __len__(self) -> int:
    return self._n

  def __getitem__(self, index: int) -> PromptRecord:
    if not 0 <= index < self._n:
      raise IndexError(f"{self.name}: index {index} out of range")
    return self._source[index]

  def location(self, index: int) -> str:
    return self._source.location(index)

  def origin(self, index: int) -> int:
    return self._source.origin(index)


class Rows(PromptSource):
  """The rows `index` of another source (messages name the original rows)."""

  def __init__(self, source: PromptSource, index, *, name: str | None = None):
    self._source, self._index = source, list(index)
    self._name = name

  @property
  def name(self) -> str:
    return self._name or self._source.name

  def __len__(self) -> int:
    return len(self._index)

  def __getitem__(self, index: int) -> PromptRecord:
    return self._source[self._index[index]]

  def location(self, index: int) -> str:
    return self._source.location(self._index[index])

  def origin(self, index: int) -> int:
    return self._source.origin(self._index[index])


# The held-out split's seed. A constant, not the run's seed: the split is a
# property of the file, so every run on it (every seed of a grid) trains and
# evaluates on the same rows.
HOLD_OUT_SEED = 0


def hold_out(
    source: PromptSource,
    fraction: float,
    *,
    seed: int = HOLD_OUT_SEED,
    field: str = "fraction",
) -> tuple[Rows, Rows]:
  """(training rows, held-out rows) of `source`, by its distinct questions.

  Every distinct question gets the key sha256(f"{seed}:{question}"); the
  round(fraction * distinct) questions of smallest key (at least one, and at
  least one left to train on) are held out with every row that asks them,
  so no question is both trained and evaluated on. The split depends on the
  questions alone (not their order, the platform or numpy's version); each
  part keeps the source's row order.

  Raises:
    ValueError: `fraction` is not in (0, 1), or `source` has fewer than two
      distinct questions (one line naming `field`).
  """
  if not 0 < fraction < 1:
    raise ValueError(f"{field}: expected a fraction in (0, 1), got {fraction}")
  questions = [r.question for r in source.records()]
  distinct = list(dict.fromkeys(questions))
  if len(distinct) < 2:
    raise ValueError(
        f"{field}: {source.name} has {len(distinct)} distinct question(s);"
        " holding some out for evaluation needs at least 2 (give"
        " config.data.eval_path, or set the fraction to 0 to train on all)"
    )
  key = lambda q: hashlib.sha256(f"{seed}:{q}".encode()).hexdigest()
  k = min(max(round(fraction * len(distinct)), 1), len(distinct) - 1)
  held = set(sorted(distinct, key=key)[:k])
  index = {True: [], False: []}
  for i, q in enumerate(questions):
    index[q in held].append(i)
  share = f"{k} of {len(distinct)} questions held out, {fraction:g}"
  return (
      Rows(source, index[False], name=f"{source.name} (training rows)"),
      Rows(source, index[True], name=f"{source.name} ({share})"),
  )


def take(source: PromptSource, n: int) -> PromptSource:
  """The first `n` records of `source` (all of them when n <= 0 or n >= len).

  How `eval_examples` applies to a file evaluation set: the first rows, so
  every run and every process grades the same questions.
  """
  if n <= 0 or n >= len(source):
    return source
  return _Head(source, n)


# Every built-in task's splits.
SPLITS = arithmetic.SPLITS


class TaskSource(PromptSource):
  """`num_examples` problems of one split of a built-in task (`data.tasks`).

  Use split 'train' for training and 'validation' or 'test' for evaluation:
  each generator makes its splits disjoint. The answer is the task's
  grading key (the integer for arithmetic, "24 from 3 5 7 9" for
  countdown), the reference response its worked solution, and the context
  fields its `context_fields` (worked solution, summary, a wrong one, the
  answer).
  """

  # The placeholders a teacher context template may name on this source.
  CONTEXT_FIELDS = ("solution", "summary", "wrong", "answer")

  def __init__(
      self,
      split: str,
      num_examples: int,
      *,
      task: str = "arithmetic",
      difficulty: str = "default",
      seed: int = 0,
      start: int = 0,
  ):
    self._spec = tasks.get(task)
    if split not in SPLITS:
      raise ValueError(
          f"TaskSource.split: expected one of {SPLITS}, got {split!r}"
      )
    if num_examples < 0 or start < 0:
      raise ValueError(
          "TaskSource: expected num_examples >= 0 and start >= 0, got"
          f" {num_examples} and {start}"
      )
    self._split, self._n, self._start = split, num_examples, start
    self._task = self._spec.task(difficulty, seed)
    tasks.check_num_examples(
        task,
        difficulty,
        split,
        num_examples,
        start,
        field=f"TaskSource({task!r}, {split!r}).num_examples",
    )

  @property
  def task_name(self) -> str:
    return self._spec.name

  @property
  def name(self) -> str:
    return f"{self._spec.name}:{self._split}[{self._start}:+{self._n}]"

  def __len__(self) -> int:
    return self._n

  def example(self, index: int):
    """The task's own example behind record `index` (numbers, target...)."""
    if not 0 <= index < self._n:
      raise IndexError(f"{self.name}: index {index} out of range")
    return self._task.example(self._split, self._start + index)

  def __getitem__(self, index: int) -> PromptRecord:
    ex = self.example(index)
    return PromptRecord(
        ex.question,
        self._spec.answer_key(ex),
        ex.rationale,
        context=self._spec.context_fields(ex),
    )

  def fingerprint(self, n: int = 16) -> str:
    """A short hash of the first `n` records' questions and references.

    Flags name a task's data but not its generator's code: a run that
    records this can refuse to resume on text the generator no longer
    writes (a changed trace format, say).
    """
    digest = hashlib.sha256()
    for i in range(min(n, self._n)):
      record = self[i]
      digest.update(
          f"{record.question}\n{record.reference_response}\n".encode()
      )
    return digest.hexdigest()[:16]


SUPPORTED = (
    ".jsonl",
    ".json",
    ".parquet",
    "(each optionally .gz)",
    "a directory written by datasets.Dataset.save_to_disk",
)


def _infer_format(path: str) -> str:
  if os.path.isdir(path):
    return "disk"
  lower = path.lower()
  if lower.endswith((".jsonl", ".jsonl.gz")):
    return "jsonl"
  if lower.endswith((".json", ".json.gz")):
    return "json"
  if lower.endswith((".parquet", ".parquet.gz")):
    return "parquet"
  ext = os.path.splitext(lower.removesuffix(".gz"))[1] or "no extension"
  raise ValueError(
      f"prompts file {path}: expected a .jsonl, .json or .parquet file"
      " (optionally .gz) or a directory written by"
      f" datasets.Dataset.save_to_disk, got {ext!r}; for plain text, write"
      ' one JSON object per line, e.g. {"question": "..."}, to a .jsonl'
      " file"
  )


def _decode(raw: bytes, path: str, line: int) -> str:
  try:
    return raw.decode("utf-8-sig" if line == 1 else "utf-8")
  except UnicodeDecodeError as e:
    raise ValueError(
        f"prompts file {path} line {line}: not UTF-8 (byte"
        f" {raw[e.start]:#04x} at column {e.start + 1}); save the file as"
        " UTF-8"
    ) from None


def _object(row: Any, path: str, where: str) -> dict[str, Any]:
  if not isinstance(row, dict):
    raise ValueError(
        f"prompts file {path} {where}: expected a JSON object, got"
        f" {type(row).__name__}"
    )
  return row


def _read_json_rows(path: str) -> tuple[list[dict[str, Any]], list[str]]:
  """Rows of a JSON-lines file (or one JSON array) and where each one is."""
  opener = gzip.open if path.lower().endswith(".gz") else open
  with opener(path, "rb") as f:
    data = f.read()
  if data.lstrip()[:1] == b"[":  # one JSON array of objects
    try:
      rows = json.loads(_decode(data, path, 1))
    except json.JSONDecodeError as e:
      raise ValueError(
          f"prompts file {path}: not valid JSON ({e.msg} at line"
          f" {e.lineno} column {e.colno})"
      ) from None
    return (
        [_object(r, path, f"item {i}") for i, r in enumerate(rows)],
        [f"item {i}" for i in range(len(rows))],
    )
  rows, where = [], []
  for n, raw in enumerate(data.split(b"\n"), 1):
    text = _decode(raw, path, n)
    if not text.strip():
      continue
    try:
      row = json.loads(text)
    except json.JSONDecodeError as e:
      raise ValueError(
          f"prompts file {path} line {n}: not valid JSON ({e.msg} at column"
          f" {e.colno}): {text.strip()[:60]!r}"
      ) from None
    rows.append(_object(row, path, f"line {n}"))
    where.append(f"line {n}")
  return rows, where


def _saved_without_rows(path: str) -> bool:
  """True for a saved `Dataset` with no data files (0 rows)."""
  # datasets 5.2's load_from_disk fails with an IndexError on these.
  state = os.path.join(path, "state.json")
  if not os.path.isfile(state):
    return False
  with open(state, encoding="utf-8") as f:
    return not json.load(f).get("_data_files", [None])


class _Table:
  """Rows as columns: `columns` in first-seen order, `where[i]` for row i."""

  def __init__(
      self, columns: list[str], get, where: list[str] | None, num_rows: int
  ):
    self.columns, self._get, self.num_rows = columns, get, num_rows
    self.where = where or [f"row {i}" for i in range(num_rows)]

  def column(self, name: str) -> list[Any]:
    return self._get(name)


def _json_table(path: str) -> _Table:
  rows, where = _read_json_rows(path)
  columns = list(dict.fromkeys(k for r in rows for k in r))
  return _Table(columns, lambda c: [r.get(c) for r in rows], where, len(rows))


def _load_table(path: str, fmt: str, split: str, cache_dir: str | None):
  """Reads `path` into a `_Table` (one split); None when empty."""
  if fmt in ("json", "jsonl"):
    return _json_table(path)
  # Imported here: `datasets` is slow to import and only these need it.
  import datasets

  if fmt == "disk":
    if _saved_without_rows(path):
      return None
    ds = datasets.load_from_disk(path)
    if isinstance(ds, datasets.DatasetDict):
      if split not in ds:
        raise ValueError(
            f"prompts directory {path}: split {split!r} not found; splits are"
            f" {sorted(ds)}"
        )
      ds = ds[split]
  elif fmt == "parquet":
    if os.path.isfile(path) and os.path.getsize(path) == 0:
      return None
    try:
      ds = datasets.load_dataset(
          fmt, data_files=path, split="train", cache_dir=cache_dir
      )
    except datasets.exceptions.DatasetGenerationError as e:
      raise ValueError(f"prompts file {path}: cannot read as {fmt}: {e}") from e
  else:
    raise ValueError(
        f"prompts file {path}: format expected 'jsonl', 'json', 'parquet' or"
        f" 'disk', got {fmt!r}"
    )
  return _Table(list(ds.column_names), lambda c: list(ds[c]), None, len(ds))


def _as_optional_str(value: Any) -> str | None:
  return None if value is None else str(value)


class FileSource(PromptSource):
  """Prompts from a local jsonl / json / parquet file or a saved dataset.

  JSON lines (and JSON arrays) are parsed here, so that a bad line is named
  by its number; parquet files and `save_to_disk` directories are read with
  `datasets`. The configured columns are held in memory: prompt sets are
  small next to the models that consume them.
  """

  def __init__(
      self,
      path: str | os.PathLike[str],
      *,
      question_field: str = "question",
      answer_field: str | None = "answer",
      response_field: str | None = None,
      format: str | None = None,  # pylint: disable=redefined-builtin
      split: str = "train",
      cache_dir: str | None = None,
      require_answers: bool = False,
      context_fields: Mapping[str, str] | None = None,
  ):
    """Reads the file.

    Args:
      path: a .jsonl/.json/.parquet file (optionally .gz) or a directory
        saved by `datasets.Dataset.save_to_disk` (a saved `DatasetDict` is
        read at `split`).
      question_field: column holding the user turn.
      answer_field: column holding the reference answer, or None.
      response_field: column holding a reference assistant turn, or None.
      format: 'jsonl', 'json', 'parquet' or 'disk'; inferred from `path`
        when None.
      split: split of a saved `DatasetDict`.
      cache_dir: `datasets` cache for the arrow conversion of parquet; its
        default cache when None.
      require_answers: refuse a file without the `answer_field` column
        (evaluation sets). Otherwise such a file loads with no answers:
        OPD trains without them.
      context_fields: teacher context placeholders and the columns holding
        them, e.g. {'solution': 'reference_solution'} (`config.data.
        solution_field`, ...); each record's `context` maps placeholders to
        their values (None where a row has none). `answer` is always there
        when the answer column is.

    Raises:
      FileNotFoundError: `path` does not exist.
      ValueError: a line is not UTF-8 or not a JSON object (named by line),
        a configured field is missing, a question is not a string, or the
        file has no rows.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
      raise FileNotFoundError(f"prompts file {path}: no such file or directory")
    self._path = path
    table = _load_table(path, format or _infer_format(path), split, cache_dir)
    if table is None or table.num_rows == 0:
      raise ValueError(f"prompts file {path}: expected rows, got 0")
    self._where = table.where
    if (
        answer_field
        and answer_field not in table.columns
        and (not require_answers)
    ):
      logging.info(
          "prompts %s: no %r field; rows have no answers", path, answer_field
      )
      answer_field = None
    context_fields = dict(context_fields or {})
    fields = {
        "question_field": question_field,
        "answer_field": answer_field,
        "response_field": response_field,
        **{f"{k}_field": v for k, v in context_fields.items()},
    }
    for arg, column in fields.items():
      if column is not None and column not in table.columns:
        raise ValueError(
            f"prompts file {path}: {arg}={column!r} is not a field; fields"
            f" are {table.columns}"
        )
    self._answer_field = answer_field
    self._questions = table.column(question_field)
    for i, q in enumerate(self._questions):
      if not isinstance(q, str):
        raise ValueError(
            f"prompts file {path} {self._where[i]}: field {question_field!r}:"
            f" expected a string, got {type(q).__name__}"
            + (" (missing)" if q is None else "")
        )
    n = len(self._questions)
    self._answers = (
        [_as_optional_str(a) for a in table.column(answer_field)]
        if answer_field
        else [None] * n
    )
    self._responses = (
        [_as_optional_str(r) for r in table.column(response_field)]
        if response_field
        else [None] * n
    )
    self._context = None
    if context_fields:
      columns = {
          k: [_as_optional_str(v) for v in table.column(c)]
          for k, c in context_fields.items()
      }
      if answer_field and "answer" not in columns:
        columns["answer"] = self._answers
      self._context = [{k: v[i] for k, v in columns.items()} for i in range(n)]

  @property
  def name(self) -> str:
    return self._path

  @property
  def has_answers(self) -> bool:
    """Whether the file has the answer column (its rows can be graded)."""
    return self._answer_field is not None

  def __len__(self) -> int:
    return len(self._questions)

  def __getitem__(self, index: int) -> PromptRecord:
    return PromptRecord(
        self._questions[index],
        self._answers[index],
        self._responses[index],
        context=None if self._context is None else self._context[index],
    )

  def location(self, index: int) -> str:
    return self._where[index]
