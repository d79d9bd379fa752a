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
"""Tokenized prompts (and reference responses) as static-shape batches."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from absl import logging
import numpy as np

from opd_jax.data import context as contexts
from opd_jax.data.sources import PromptRecord, PromptSource
from opd_jax.data.templates import format_prompts

OVERLONG_POLICIES = ("drop", "truncate")
# Rows are tokenized this many at a time: one fast-tokenizer call per chunk
# amortises the Python overhead without holding every string twice.
_TOKENIZE_CHUNK = 1024


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
    teacher_context: the `data.context.TeacherContext` of the teacher's
      own prompts, or None (the teacher scores the student's sequence).
    teacher_prompts: with a teacher context, a `TeacherPrompts` (ids per
      kept row, at most `teacher_context.max_prompt_len` each); else None.
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
      teacher_context: contexts.TeacherContext | None = None,
  ):
    if overlong not in OVERLONG_POLICIES:
      raise ValueError(
          f"PromptDataset.overlong: expected one of {OVERLONG_POLICIES}, got"
          f" {overlong!r}"
      )
    if max_prompt_len < 1 or (
        max_new_tokens is not None and max_new_tokens < 1
    ):
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
          " plain question text after BOS",
          source.name,
      )
    self.stats = PromptStats(total=len(source))
    self.prompts, self.questions, self.answers = [], [], []
    self.responses = [] if max_new_tokens is not None else None
    self.teacher_context = teacher_context
    self.teacher_prompts = None
    if teacher_context is not None:
      self.teacher_prompts = contexts.TeacherPrompts()
      self._opening = contexts.opening_length(
          tokenizer,
          use_chat_template=use_chat_template,
          system_prompt=system_prompt,
      )
    kept_index = []
    for lo in range(0, len(source), _TOKENIZE_CHUNK):
      records = [
          source[i] for i in range(lo, min(lo + _TOKENIZE_CHUNK, len(source)))
      ]
      kept = self._add_chunk(
          tokenizer, records, use_chat_template, system_prompt
      )
      if teacher_context is not None:
        contexts.add_teacher_prompts(
            self.teacher_prompts,
            teacher_context,
            tokenizer,
            [records[i] for i in kept],
            self.prompts[len(self.prompts) - len(kept) :],
            [f"{source.name} {source.location(lo + i)}" for i in kept],
            use_chat_template=use_chat_template,
            system_prompt=system_prompt,
            opening=self._opening,
        )
      kept_index.extend(lo + i for i in kept)
    self.source_index = np.asarray(kept_index, np.int64)
    self.stats.kept = len(kept_index)
    logging.info(
        "prompts %s: kept %d of %d (overlong > %d tokens: %d %s, empty: %d"
        " dropped; responses truncated to %s: %d, missing: %d)",
        source.name,
        self.stats.kept,
        self.stats.total,
        max_prompt_len,
        self.stats.overlong,
        "truncated" if self._truncate else "dropped",
        self.stats.empty,
        max_new_tokens,
        self.stats.responses_truncated,
        self.stats.responses_missing,
    )
    if self.teacher_prompts is not None and self.teacher_prompts.truncated:
      logging.warning(
          "teacher prompts %s: %d of %d longer than"
          " config.teacher_context.max_prompt_len=%d tokens, cut from the"
          " left (the start of their context is lost)",
          source.name,
          self.teacher_prompts.truncated,
          self.stats.kept,
          teacher_context.max_prompt_len,
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
        tokenizer,
        [r.question for r in records],
        use_chat_template=use_chat_template,
        system_prompt=system_prompt,
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
      encoded = iter(
          tokenizer(texts, add_special_tokens=False)["input_ids"]
          if texts
          else []
      )
      for ref in refs:
        self.responses.append(
            self._fit_response(None if ref is None else next(encoded))
        )
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
      return [row[0]] + row[len(row) - (p - 1) :]
    return row[len(row) - p :]

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
      [b, T]; with a teacher context, `teacher_prompt` int32 [b, Pt]
      left-padded and `teacher_prompt_mask` bool [b, Pt]; plus the Python
      lists `question` and `answer`.
    """
    rows = np.asarray(rows, np.int64)
    b, p = len(rows), self.max_prompt_len
    prompt = np.full((b, p), self.pad_id, np.int32)
    prompt_mask = np.zeros((b, p), bool)
    for j, r in enumerate(rows):
      ids = self.prompts[r]
      prompt[j, p - len(ids) :] = ids  # Left padding: the prompt ends at P.
      prompt_mask[j, p - len(ids) :] = True
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
    if self.teacher_prompts is not None:
      out["teacher_prompt"], out["teacher_prompt_mask"] = contexts.left_pad(
          [self.teacher_prompts.ids[r] for r in rows],
          self.teacher_context.max_prompt_len,
          self.pad_id,
      )
    return out


def _pad_id(tokenizer: Any, pad_id: int | None) -> int:
  """The explicit pad id, else the tokenizer's pad, else its EOS."""
  # Llama-style tokenizers have no pad token; the masks carry validity, so
  # any id works and EOS is the usual choice.
  for candidate in (
      pad_id,
      getattr(tokenizer, "pad_token_id", None),
      getattr(tokenizer, "eos_token_id", None),
  ):
    if candidate is not None:
      return int(candidate)
  raise ValueError(
      "PromptDataset.pad_id: the tokenizer has neither pad_token_id nor"
      " eos_token_id; pass pad_id explicitly"
  )
