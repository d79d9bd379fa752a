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
"""What every generated task's seeded view shares: ranges and streams."""

from __future__ import annotations

from typing import Any, Iterator


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
