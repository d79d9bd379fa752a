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
"""What every generated task shares: seeded draws, splits, answer markers."""

from __future__ import annotations

import hashlib
import random
import re
from typing import Any, Iterator

SPLITS = ("train", "validation", "test")
_SPLIT_BUCKETS = 16  # bucket 0 -> test, 1 -> validation, the rest -> train.
ANSWER_MARKER = "####"
# `(?<!#)####(?!#)`: exactly four hashes, so '###' or '#####' is no marker.
_MARKER_RE = re.compile(r"(?<!#)####(?!#)")


def seeded_rng(key: str) -> random.Random:
  """A `random.Random` seeded by the first 8 bytes of sha256(`key`)."""
  # sha256 rather than hash(): stable across processes and Python versions.
  digest = hashlib.sha256(key.encode()).digest()
  return random.Random(int.from_bytes(digest[:8], "little"))


def split_of_key(key: str) -> str:
  """The split a problem's canonical `key` hashes into (1/16 test, 1/16
  validation, the rest train), whatever the seed or index it was drawn at."""
  bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little")
  bucket %= _SPLIT_BUCKETS
  return "test" if bucket == 0 else "validation" if bucket == 1 else "train"


def check_split_index(split: str, index: int) -> None:
  """Raises a ValueError unless `split` is one of `SPLITS` and `index` >= 0."""
  if split not in SPLITS:
    raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
  if index < 0:
    raise ValueError(f"index: expected >= 0, got {index}")


def last_marker_end(text: Any) -> int | None:
  """Where the text after the last `####` starts; None without a marker (or
  for a non-string)."""
  if not isinstance(text, str):
    return None
  markers = list(_MARKER_RE.finditer(text))
  if not markers:
    return None
  return markers[-1].end()


class SplitView:
  """Ranges and endless streams of a task's `example(split, index)`."""

  def example(self, split: str, index: int) -> Any:
    raise NotImplementedError

  def dataset(self, split: str, n: int, start: int = 0) -> list[Any]:
    """Returns `n` consecutive examples of `split` from `start`."""
    return [self.example(split, i) for i in range(start, start + n)]

  def iterate(self, split: str, start: int = 0) -> Iterator[Any]:
    """Yields examples of `split` forever from index `start`."""
    index = start
    while True:
      yield self.example(split, index)
      index += 1
