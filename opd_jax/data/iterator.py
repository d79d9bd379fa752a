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
"""Deterministic, resumable, multi-host iteration over a PromptDataset."""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from opd_jax.data.dataset import PromptDataset


def _process_slice(
    global_batch_size: int,
    process_index: int | None,
    process_count: int | None,
) -> tuple[int, int]:
  """Returns (process_index, local batch size), checking divisibility."""
  if process_index is None or process_count is None:
    import jax  # Deferred: only the defaults need a JAX backend.

    process_index = (
        jax.process_index() if process_index is None else (process_index)
    )
    process_count = (
        jax.process_count() if process_count is None else (process_count)
    )
  if not 0 <= process_index < process_count:
    raise ValueError(
        f"process_index: expected in [0, {process_count}), got {process_index}"
    )
  if global_batch_size < 1 or global_batch_size % process_count:
    raise ValueError(
        "global_batch_size: expected a positive multiple of the process count"
        f" {process_count}, got {global_batch_size}"
    )
  return process_index, global_batch_size // process_count


class PromptIterator:
  """Endless shuffled batches; process i yields its slice of each batch.

  The global row stream is the concatenation of one permutation per epoch,
  `np.random.default_rng([seed, epoch]).permutation(N)`, cut into global
  batches of B consecutive rows, so a batch may straddle two epochs and
  every epoch covers every row exactly once. Process i takes rows
  [i * B / n, (i + 1) * B / n) of each global batch. Every process holds
  the same state, `{'epoch', 'position', 'num_rows', 'seed'}`, where
  (epoch, position) points at the next row of the stream: restoring it
  continues with exactly the batches an uninterrupted iterator would yield.
  """

  def __init__(
      self,
      dataset: PromptDataset,
      *,
      global_batch_size: int,
      seed: int = 0,
      shuffle: bool = True,
      process_index: int | None = None,
      process_count: int | None = None,
      state: dict[str, int] | None = None,
  ):
    """Creates the iterator at epoch 0, or at `state`.

    Args:
      dataset: the tokenized prompts.
      global_batch_size: B, summed over processes.
      seed: shuffling seed.
      shuffle: shuffle each epoch; rows in dataset order otherwise.
      process_index: this process; `jax.process_index()` when None.
      process_count: processes; `jax.process_count()` when None.
      state: a `get_state()` result to continue from.
    """
    self._dataset, self._seed, self._shuffle = dataset, int(seed), shuffle
    self._global = global_batch_size
    self._process, self._local = _process_slice(
        global_batch_size, process_index, process_count
    )
    self._epoch, self._position = 0, 0
    self._perm_epoch, self._perm = None, None
    if state is not None:
      self.set_state(state)

  @property
  def local_batch_size(self) -> int:
    return self._local

  def get_state(self) -> dict[str, int]:
    """Returns the JSON-able position of the next batch."""
    return {
        "epoch": self._epoch,
        "position": self._position,
        "num_rows": len(self._dataset),
        "seed": self._seed,
    }

  def set_state(self, state: dict[str, int]) -> None:
    """Moves to a position from `get_state()`.

    Raises:
      ValueError: a key is missing or out of range, or the state was saved
        for a dataset of a different size or another seed (its batches would
        not continue the saved run).
    """
    n = len(self._dataset)
    for key in ("epoch", "position"):
      if key not in state:
        raise ValueError(
            f"PromptIterator state: missing key {key!r}, got {sorted(state)}"
        )
    for key, expected in (("num_rows", n), ("seed", self._seed)):
      if key in state and int(state[key]) != expected:
        raise ValueError(
            f"PromptIterator state: {key} expected {expected}, got"
            f" {state[key]} (was the dataset or seed changed?)"
        )
    epoch, position = int(state["epoch"]), int(state["position"])
    if epoch < 0 or not 0 <= position < n:
      raise ValueError(
          f"PromptIterator state: expected epoch >= 0 and 0 <= position < {n},"
          f" got epoch={epoch}, position={position}"
      )
    self._epoch, self._position = epoch, position

  def _permutation(self, epoch: int) -> np.ndarray:
    if self._perm_epoch != epoch:
      n = len(self._dataset)
      self._perm = (
          np.random.default_rng([self._seed, epoch]).permutation(n)
          if self._shuffle
          else np.arange(n)
      )
      self._perm_epoch = epoch
    return self._perm

  def _next_global_rows(self) -> np.ndarray:
    n, rows = len(self._dataset), []
    need = self._global
    while need:
      take = min(need, n - self._position)
      perm = self._permutation(self._epoch)
      rows.append(perm[self._position : self._position + take])
      self._position += take
      need -= take
      if self._position == n:
        self._epoch, self._position = self._epoch + 1, 0
    return np.concatenate(rows)

  def __iter__(self) -> PromptIterator:
    return self

  def __next__(self) -> dict[str, Any]:
    rows = self._next_global_rows()
    lo = self._process * self._local
    return self._dataset.batch(rows[lo : lo + self._local])


def eval_batches(
    dataset: PromptDataset,
    *,
    global_batch_size: int,
    process_index: int | None = None,
    process_count: int | None = None,
) -> Iterator[dict[str, Any]]:
  """One ordered pass over `dataset` in static-shape batches.

  The last global batch is filled up with copies of row 0 marked
  `valid=False`, so every batch has the same shape (one compile) and
  metrics must be weighted by `valid`.

  Args:
    dataset: the tokenized prompts.
    global_batch_size: B, summed over processes.
    process_index: this process; `jax.process_index()` when None.
    process_count: processes; `jax.process_count()` when None.

  Yields:
    Batches as `PromptDataset.batch` returns them, this process's slice.
  """
  process, local = _process_slice(
      global_batch_size, process_index, process_count
  )
  n = len(dataset)
  for start in range(0, n, global_batch_size):
    rows = np.arange(start, start + global_batch_size)
    valid = rows < n
    rows = np.where(valid, rows, 0)
    lo = process * local
    batch = dataset.batch(rows[lo : lo + local])
    batch["valid"] = valid[lo : lo + local]
    yield batch
