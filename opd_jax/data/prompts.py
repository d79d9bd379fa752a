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
"""Deterministic, resumable, multi-host batches of left-padded prompt ids."""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Sequence

from absl import logging
import numpy as np

from opd_jax.data.sources import (  # re-exported: part of this module's API
    ArithmeticSource, FileSource, PromptRecord, PromptSource,
)

OVERLONG_POLICIES = ("drop", "truncate")
# Rows are tokenized this many at a time: one fast-tokenizer call per chunk
# amortises the Python overhead without holding every string twice.
_TOKENIZE_CHUNK = 1024


def format_prompts(
    tokenizer: Any,
    questions: Sequence[str],
    *,
    use_chat_template: bool = True,
    system_prompt: str | None = None,
) -> list[list[int]]:
  """Tokenizes questions as user turns followed by the generation prompt.

  With a chat template, the template renders the text (BOS included, when
  the template writes it) and the text is encoded with
  `add_special_tokens=False`, so a tokenizer whose post-processor also adds
  BOS does not double it. Without a chat template (or with
  `use_chat_template=False`), the prompt is `[bos] + encode(question)`, with
  BOS only when the tokenizer has one, and `system_prompt` is prepended to
  the question text followed by a blank line.

  Args:
    tokenizer: a Hugging Face tokenizer.
    questions: user turns.
    use_chat_template: use `tokenizer.chat_template` when it has one.
    system_prompt: an optional system turn.

  Returns:
    One list of token ids per question.
  """
  templated = use_chat_template and bool(
      getattr(tokenizer, "chat_template", None))
  if templated:
    system = (
        [{"role": "system", "content": system_prompt}] if system_prompt else []
    )
    texts = tokenizer.apply_chat_template(
        [system + [{"role": "user", "content": q}] for q in questions],
        add_generation_prompt=True,
        tokenize=False,
    )
  else:
    texts = [f"{system_prompt}\n\n{q}" if system_prompt else q
             for q in questions]
  ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
  bos = getattr(tokenizer, "bos_token_id", None)
  if not templated and bos is not None:
    ids = [[bos] + list(row) for row in ids]
  return [list(row) for row in ids]


@dataclasses.dataclass
class PromptStats:
  """What tokenization kept and changed.

  Attributes:
    total: records in the source.
    kept: rows in the dataset.
    overlong: prompts longer than `max_prompt_len` (dropped or truncated).
    empty: prompts with no tokens (dropped: the sampler needs one).
    responses_truncated: reference responses cut to `max_new_tokens`.
    responses_missing: kept rows without a reference response.
  """

  total: int = 0
  kept: int = 0
  overlong: int = 0
  empty: int = 0
  responses_truncated: int = 0
  responses_missing: int = 0


class PromptDataset:
  """A tokenized `PromptSource`, ready to be cut into static-shape batches.

  Prompts longer than `max_prompt_len` are dropped by default
  (`overlong='drop'`): any cut changes the question. With
  `overlong='truncate'` the prompt keeps its LAST tokens, because the end
  of the question and the generation prompt (`<assistant>`, ...) must stay
  adjacent to where the response starts; the leading BOS, if there was
  one, is kept in front of that tail since models are trained to see it
  first. The counts are in `stats` and logged once.

  Attributes:
    source: the source.
    max_prompt_len: P, the static prompt width of every batch.
    max_new_tokens: T, the static width of reference responses, or None
      when batches carry no responses.
    pad_id: the id written on padding.
    eos_id: the id appended to reference responses when it fits.
    prompts: int32 token arrays, one per kept row.
    responses: int32 token arrays (EOS appended when it fits) or None, one
      per kept row; None when `max_new_tokens` is None.
    questions: question strings, one per kept row.
    answers: answer strings (or None), one per kept row.
    source_index: int64 [N], the source index of each kept row.
    stats: a `PromptStats`.
  """

  def __init__(
      self,
      source: PromptSource,
      tokenizer: Any,
      *,
      max_prompt_len: int,
      max_new_tokens: int | None = None,
      overlong: str = "drop",
      use_chat_template: bool = True,
      system_prompt: str | None = None,
      pad_id: int | None = None,
  ):
    if overlong not in OVERLONG_POLICIES:
      raise ValueError(
          f"PromptDataset.overlong: expected one of {OVERLONG_POLICIES}, got"
          f" {overlong!r}"
      )
    if max_prompt_len < 1 or (max_new_tokens is not None and
                              max_new_tokens < 1):
      raise ValueError(
          "PromptDataset: expected max_prompt_len >= 1 and max_new_tokens >= 1"
          f" (or None), got {max_prompt_len} and {max_new_tokens}"
      )
    self.source, self.max_prompt_len = source, max_prompt_len
    self.max_new_tokens = max_new_tokens
    self.pad_id = _pad_id(tokenizer, pad_id)
    self.eos_id = getattr(tokenizer, "eos_token_id", None)
    self._bos_id = getattr(tokenizer, "bos_token_id", None)
    self._truncate = overlong == "truncate"
    if use_chat_template and not getattr(tokenizer, "chat_template", None):
      logging.warning(
          "prompts %s: the tokenizer has no chat template; prompts are the"
          " plain question text after BOS", source.name)
    self.stats = PromptStats(total=len(source))
    self.prompts, self.questions, self.answers = [], [], []
    self.responses = [] if max_new_tokens is not None else None
    kept_index = []
    for lo in range(0, len(source), _TOKENIZE_CHUNK):
      records = [source[i]
                 for i in range(lo, min(lo + _TOKENIZE_CHUNK, len(source)))]
      kept = self._add_chunk(
          tokenizer, records, use_chat_template, system_prompt)
      kept_index.extend(lo + i for i in kept)
    self.source_index = np.asarray(kept_index, np.int64)
    self.stats.kept = len(kept_index)
    logging.info(
        "prompts %s: kept %d of %d (overlong > %d tokens: %d %s, empty: %d"
        " dropped; responses truncated to %s: %d, missing: %d)",
        source.name, self.stats.kept, self.stats.total, max_prompt_len,
        self.stats.overlong, "truncated" if self._truncate else "dropped",
        self.stats.empty, max_new_tokens, self.stats.responses_truncated,
        self.stats.responses_missing,
    )
    if not self.prompts:
      raise ValueError(
          f"prompts {source.name}: expected at least one prompt of at most"
          f" {max_prompt_len} tokens, got 0 of {self.stats.total} (overlong:"
          f" {self.stats.overlong}, empty: {self.stats.empty})"
      )

  def _add_chunk(
      self,
      tokenizer: Any,
      records: list[PromptRecord],
      use_chat_template: bool,
      system_prompt: str | None,
  ) -> list[int]:
    """Tokenizes and appends records; returns the kept positions."""
    ids = format_prompts(
        tokenizer, [r.question for r in records],
        use_chat_template=use_chat_template, system_prompt=system_prompt,
    )
    kept = []
    for i, (rec, row) in enumerate(zip(records, ids)):
      row = self._fit_prompt(row)
      if row is not None:
        kept.append(i)
        self.prompts.append(np.asarray(row, np.int32))
        self.questions.append(rec.question)
        self.answers.append(rec.answer)
    if self.responses is not None:
      refs = [records[i].reference_response for i in kept]
      texts = [r for r in refs if r is not None]
      encoded = iter(tokenizer(texts, add_special_tokens=False)["input_ids"]
                     if texts else [])
      for ref in refs:
        self.responses.append(
            self._fit_response(None if ref is None else next(encoded)))
    return kept

  def _fit_prompt(self, row: list[int]) -> list[int] | None:
    """Applies the overlong policy; None when the row is dropped."""
    if not row:
      self.stats.empty += 1
      return None
    p = self.max_prompt_len
    if len(row) <= p:
      return row
    self.stats.overlong += 1
    if not self._truncate:
      return None
    if self._bos_id is not None and row[0] == self._bos_id and p > 1:
      return [row[0]] + row[len(row) - (p - 1):]
    return row[len(row) - p:]

  def _fit_response(self, ids: list[int] | None) -> np.ndarray:
    """Appends EOS to reference response ids and cuts them to T."""
    if ids is None:
      self.stats.responses_missing += 1
      return np.zeros((0,), np.int32)
    ids = list(ids) + ([] if self.eos_id is None else [self.eos_id])
    if len(ids) > self.max_new_tokens:
      self.stats.responses_truncated += 1
      ids = ids[: self.max_new_tokens]
    return np.asarray(ids, np.int32)

  def __len__(self) -> int:
    return len(self.prompts)

  def batch(self, rows: Sequence[int] | np.ndarray) -> dict[str, Any]:
    """Builds a batch from dataset rows (not source indices).

    Args:
      rows: dataset row numbers, [b].

    Returns:
      A dict with the arrays `prompt` int32 [b, P] left-padded with
      `pad_id`, `prompt_mask` bool [b, P], `index` int64 [b] (source
      indices), `valid` bool [b] (all True here) and, when `max_new_tokens`
      is set, `response` int32 [b, T] right-padded and `response_mask` bool
      [b, T]; plus the Python lists `question` and `answer`.
    """
    rows = np.asarray(rows, np.int64)
    b, p = len(rows), self.max_prompt_len
    prompt = np.full((b, p), self.pad_id, np.int32)
    prompt_mask = np.zeros((b, p), bool)
    for j, r in enumerate(rows):
      ids = self.prompts[r]
      prompt[j, p - len(ids):] = ids  # Left padding: the prompt ends at P.
      prompt_mask[j, p - len(ids):] = True
    out = {
        "prompt": prompt,
        "prompt_mask": prompt_mask,
        "index": self.source_index[rows],
        "valid": np.ones((b,), bool),
        "question": [self.questions[r] for r in rows],
        "answer": [self.answers[r] for r in rows],
    }
    if self.responses is not None:
      t = self.max_new_tokens
      response = np.full((b, t), self.pad_id, np.int32)
      response_mask = np.zeros((b, t), bool)
      for j, r in enumerate(rows):
        ids = self.responses[r]
        response[j, : len(ids)] = ids
        response_mask[j, : len(ids)] = True
      out["response"], out["response_mask"] = response, response_mask
    return out


def _pad_id(tokenizer: Any, pad_id: int | None) -> int:
  """The explicit pad id, else the tokenizer's pad, else its EOS."""
  # Llama-style tokenizers have no pad token; the masks carry validity, so
  # any id works and EOS is the usual choice.
  for candidate in (pad_id, getattr(tokenizer, "pad_token_id", None),
                    getattr(tokenizer, "eos_token_id", None)):
    if candidate is not None:
      return int(candidate)
  raise ValueError(
      "PromptDataset.pad_id: the tokenizer has neither pad_token_id nor"
      " eos_token_id; pass pad_id explicitly"
  )


def _process_slice(
    global_batch_size: int,
    process_index: int | None,
    process_count: int | None,
) -> tuple[int, int]:
  """Returns (process_index, local batch size), checking divisibility."""
  if process_index is None or process_count is None:
    import jax  # Deferred: only the defaults need a JAX backend.

    process_index = jax.process_index() if process_index is None else (
        process_index)
    process_count = jax.process_count() if process_count is None else (
        process_count)
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
          if self._shuffle else np.arange(n)
      )
      self._perm_epoch = epoch
    return self._perm

  def _next_global_rows(self) -> np.ndarray:
    n, rows = len(self._dataset), []
    need = self._global
    while need:
      take = min(need, n - self._position)
      perm = self._permutation(self._epoch)
      rows.append(perm[self._position:self._position + take])
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
    return self._dataset.batch(rows[lo:lo + self._local])


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
    batch = dataset.batch(rows[lo:lo + local])
    batch["valid"] = valid[lo:lo + local]
    yield batch
