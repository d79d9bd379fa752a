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
"""Prompt sources: the built-in task and local jsonl / parquet / saved datasets."""

from __future__ import annotations

import abc
import dataclasses
import json
import os
from typing import Any, Iterator

from opd_jax.data import arithmetic


@dataclasses.dataclass(frozen=True)
class PromptRecord:
  """One prompt before tokenization.

  Attributes:
    question: the user turn.
    answer: the reference final answer (for grading), or None.
    reference_response: a full reference assistant turn (for GKD's
      off-policy dataset steps), or None.
  """

  question: str
  answer: str | None = None
  reference_response: str | None = None


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


class ArithmeticSource(PromptSource):
  """`num_examples` problems of one split of the built-in arithmetic task.

  Use split 'train' for training and 'validation' or 'test' for evaluation:
  the generator makes the splits disjoint. The answer is the integer as a
  string and the reference response is the worked rationale.
  """

  def __init__(
      self,
      split: str,
      num_examples: int,
      *,
      task: arithmetic.ArithmeticTask | None = None,
      start: int = 0,
  ):
    if split not in arithmetic.SPLITS:
      raise ValueError(
          f"ArithmeticSource.split: expected one of {arithmetic.SPLITS},"
          f" got {split!r}"
      )
    if num_examples < 0 or start < 0:
      raise ValueError(
          "ArithmeticSource: expected num_examples >= 0 and start >= 0, got"
          f" {num_examples} and {start}"
      )
    self._split, self._n, self._start = split, num_examples, start
    self._task = task or arithmetic.ArithmeticTask()

  @property
  def name(self) -> str:
    return f"arithmetic:{self._split}[{self._start}:+{self._n}]"

  def __len__(self) -> int:
    return self._n

  def __getitem__(self, index: int) -> PromptRecord:
    if not 0 <= index < self._n:
      raise IndexError(f"{self.name}: index {index} out of range")
    ex = self._task.example(self._split, self._start + index)
    return PromptRecord(ex.question, str(ex.answer), ex.rationale)


def _infer_format(path: str) -> str:
  if os.path.isdir(path):
    return "disk"
  lower = path.lower()
  for ext, fmt in ((".jsonl", "json"), (".json", "json"),
                   (".parquet", "parquet")):
    if lower.endswith(ext) or lower.endswith(ext + ".gz"):
      return fmt
  raise ValueError(
      f"prompts file {path}: expected a .jsonl/.json/.parquet file or a"
      " directory written by datasets.Dataset.save_to_disk, got neither;"
      " pass format='json'|'parquet'|'disk'"
  )


def _saved_without_rows(path: str) -> bool:
  """True for a saved `Dataset` with no data files (0 rows)."""
  # datasets 5.2's load_from_disk fails with an IndexError on these.
  state = os.path.join(path, "state.json")
  if not os.path.isfile(state):
    return False
  with open(state, encoding="utf-8") as f:
    return not json.load(f).get("_data_files", [None])


def _load_table(path: str, fmt: str, split: str, cache_dir: str | None):
  """Reads `path` into a `datasets.Dataset` (one split); None when empty."""
  # Imported here: `datasets` is slow to import and only file sources need it.
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
    return ds
  if fmt not in ("json", "parquet"):
    raise ValueError(
        f"prompts file {path}: format expected 'json', 'parquet' or 'disk',"
        f" got {fmt!r}"
    )
  if os.path.isfile(path) and os.path.getsize(path) == 0:
    return None
  try:
    return datasets.load_dataset(
        fmt, data_files=path, split="train", cache_dir=cache_dir
    )
  except StopIteration:  # What the json builder raises on blank files.
    return None
  except datasets.exceptions.DatasetGenerationError as e:
    raise ValueError(f"prompts file {path}: cannot read as {fmt}: {e}") from e


def _as_optional_str(value: Any) -> str | None:
  return None if value is None else str(value)


class FileSource(PromptSource):
  """Prompts from a local jsonl / parquet file or a `save_to_disk` directory.

  The file is read with `datasets` (`load_dataset('json' | 'parquet')` or
  `load_from_disk`), and the configured columns are held in memory: prompt
  sets are small next to the models that consume them.
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
  ):
    """Reads the file.

    Args:
      path: a .jsonl/.json/.parquet file (optionally .gz) or a directory
        saved by `datasets.Dataset.save_to_disk` (a saved `DatasetDict` is
        read at `split`).
      question_field: column holding the user turn.
      answer_field: column holding the reference answer, or None.
      response_field: column holding a reference assistant turn, or None.
      format: 'json', 'parquet' or 'disk'; inferred from `path` when None.
      split: split of a saved `DatasetDict`.
      cache_dir: `datasets` cache for the arrow conversion of json/parquet;
        its default cache when None.

    Raises:
      FileNotFoundError: `path` does not exist.
      ValueError: a configured field is missing, a question is not a string,
        or the file has no rows.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
      raise FileNotFoundError(f"prompts file {path}: no such file or directory")
    self._path = path
    ds = _load_table(path, format or _infer_format(path), split, cache_dir)
    if ds is None:
      raise ValueError(f"prompts file {path}: expected rows, got 0")
    fields = {
        "question_field": question_field,
        "answer_field": answer_field,
        "response_field": response_field,
    }
    for arg, column in fields.items():
      if column is not None and column not in ds.column_names:
        raise ValueError(
            f"prompts file {path}: {arg}={column!r} is not a field; fields"
            f" are {ds.column_names}"
        )
    if len(ds) == 0:
      raise ValueError(f"prompts file {path}: expected rows, got 0")
    self._questions = list(ds[question_field])
    for i, q in enumerate(self._questions):
      if not isinstance(q, str):
        raise ValueError(
            f"prompts file {path}: row {i} field {question_field!r}: expected"
            f" a string, got {type(q).__name__}"
        )
    n = len(self._questions)
    self._answers = (
        [_as_optional_str(a) for a in ds[answer_field]]
        if answer_field else [None] * n
    )
    self._responses = (
        [_as_optional_str(r) for r in ds[response_field]]
        if response_field else [None] * n
    )

  @property
  def name(self) -> str:
    return self._path

  def __len__(self) -> int:
    return len(self._questions)

  def __getitem__(self, index: int) -> PromptRecord:
    return PromptRecord(
        self._questions[index], self._answers[index], self._responses[index]
    )
