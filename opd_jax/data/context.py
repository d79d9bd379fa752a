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
"""The teacher's own prompt: a privileged context over the example's fields.

In self-distillation (OPSD, SDFT) the teacher scores the student's response
after a prompt the student never sees: the question with a worked solution,
a summary of one, correct and wrong examples together. The teacher's
sequence is `[teacher prompt | the student's response]`, its prompt
tokenized and left-padded on its own (static width `max_prompt_len`), the
response ids copied from the rollout, so both sequences end with the same
response tokens at the same offsets from the end (what
`models.response_hidden` aligns by).
"""

from __future__ import annotations

import dataclasses
import string
from typing import Any, Mapping, Sequence

import numpy as np

from opd_jax.data.templates import format_prompts

# Context first, question last: a prompt cut from the left (over its
# budget) loses the start of the context, never the question.
TEMPLATES = {
    # The student's own prompt: reduces exactly to plain OPD.
    "empty": "{question}",
    # A correct demonstration (the reference solution).
    "solution": "A correct solution to this problem:\n{solution}\n\n{question}",
    # A summarized demonstration (the task's summary field).
    "summary": "In short: {summary}\n\n{question}",
    # Correct and wrong examples together.
    "correct_wrong": (
        "A correct solution:\n{solution}\n\nA wrong solution:\n{wrong}"
        "\n\n{question}"
    ),
}
FIELD_NAME = "config.teacher_context.template"


class ContextError(ValueError):
  """A teacher context template does not fit the data or its budget."""


def resolve_template(template: str) -> str:
  """The format string of a preset name (`TEMPLATES`) or of a custom one.

  Raises:
    ContextError: not a preset and not a format string naming {question}.
  """
  if template in TEMPLATES:
    return TEMPLATES[template]
  if "{question}" not in template:
    raise ContextError(
        f"{FIELD_NAME}: expected one of {sorted(TEMPLATES)} or a format string"
        f" naming {{question}}, got {template!r}"
    )
  template_fields(template)  # refuses a malformed one
  return template


def template_fields(template: str) -> tuple[str, ...]:
  """The placeholders of a format string other than `question`, in order."""
  try:
    names = [f for _, f, _, _ in string.Formatter().parse(template) if f]
  except ValueError as e:
    raise ContextError(f"{FIELD_NAME}: {e} in {template!r}") from None
  for name in names:
    if not name.isidentifier():
      raise ContextError(
          f"{FIELD_NAME}: placeholder {{{name}}} is not a plain field name"
          f" (in {template!r})"
      )
  return tuple(dict.fromkeys(n for n in names if n != "question"))


def check_available(template: str, available: Sequence[str], hint: str):
  """Refuses a template naming a field the data source does not provide."""
  for name in template_fields(resolve_template(template)):
    if name not in available:
      raise ContextError(
          f"{FIELD_NAME} names {{{name}}}, which the data does not provide"
          f" (it provides {sorted(available)}); {hint}"
      )


@dataclasses.dataclass(frozen=True)
class TeacherContext:
  """How the teacher's prompt is built.

  Attributes:
    template: the format string (a preset resolved).
    max_prompt_len: Pt, the static width of the teacher's prompts.
  """

  template: str
  max_prompt_len: int

  def __post_init__(self):
    object.__setattr__(self, "template", resolve_template(self.template))
    if self.max_prompt_len < 1:
      raise ContextError(
          "config.teacher_context.max_prompt_len: expected >= 1, got"
          f" {self.max_prompt_len}"
      )

  @property
  def fields(self) -> tuple[str, ...]:
    return template_fields(self.template)

  def text(self, question: str, context: Mapping[str, Any] | None, where):
    """The teacher's user turn for one example; refuses an empty field."""
    values = {"question": question}
    for name in self.fields:
      value = (context or {}).get(name)
      if value is None or not str(value).strip():
        raise ContextError(
            f"{where}: context field {name!r} is empty or missing; {FIELD_NAME}"
            " needs it for every example"
        )
      values[name] = value
    return self.template.format(**values)


def opening_length(
    tokenizer: Any, *, use_chat_template: bool, system_prompt: str | None
) -> int:
  """Tokens the chat template writes to open the assistant turn (0 plain)."""
  if not (use_chat_template and getattr(tokenizer, "chat_template", None)):
    return 0
  system = (
      []
      if system_prompt is None
      else [{"role": "system", "content": system_prompt}]
  )
  turns = system + [{"role": "user", "content": "x"}]
  with_open, without = (
      tokenizer(
          tokenizer.apply_chat_template(
              turns, add_generation_prompt=g, tokenize=False
          ),
          add_special_tokens=False,
      )["input_ids"]
      for g in (True, False)
  )
  common = 0
  while common < min(len(with_open), len(without)) and (
      with_open[common] == without[common]
  ):
    common += 1
  return len(with_open) - common


@dataclasses.dataclass
class TeacherPrompts:
  """Teacher prompt ids built for kept dataset rows, and what was cut.

  Attributes:
    ids: int32 arrays, one per row, each at most `max_prompt_len` long.
    truncated: rows whose teacher prompt was cut from the left.
  """

  ids: list[np.ndarray] = dataclasses.field(default_factory=list)
  truncated: int = 0


def add_teacher_prompts(
    out: TeacherPrompts,
    context: TeacherContext,
    tokenizer: Any,
    records: Sequence[Any],
    student_prompts: Sequence[Sequence[int]],
    wheres: Sequence[str],
    *,
    use_chat_template: bool,
    system_prompt: str | None,
    opening: int,
) -> None:
  """Tokenizes the teacher prompts of `records` and appends them to `out`.

  Args:
    out: where the ids and the truncation count go.
    context: the template and budget.
    tokenizer: the (shared) tokenizer.
    records: `PromptRecord`s of kept rows.
    student_prompts: their student prompt ids (after the overlong policy).
    wheres: each record's location for messages ('source line 7').
    use_chat_template, system_prompt: as for the student's prompts.
    opening: `opening_length` of the chat template.

  Raises:
    ContextError: an empty context field, a budget below the student's
      prompt (no room for the question), or a teacher prompt whose
      assistant opening differs from the student's (the response would not
      continue the same tokens); each names the example.
  """
  texts = [
      context.text(r.question, r.context, w) for r, w in zip(records, wheres)
  ]
  ids = format_prompts(
      tokenizer,
      texts,
      use_chat_template=use_chat_template,
      system_prompt=system_prompt,
  )
  budget = context.max_prompt_len
  for row, student, where in zip(ids, student_prompts, wheres):
    if len(student) > budget:
      raise ContextError(
          f"{where}: config.teacher_context.max_prompt_len={budget} leaves no"
          f" room for the question (its prompt alone is {len(student)}"
          " tokens)"
      )
    if opening and list(row[-opening:]) != list(student[-opening:]):
      raise ContextError(
          f"{where}: the teacher prompt ends with ids {list(row[-opening:])}"
          f" where the student's ends with {list(student[-opening:])}: the"
          " chat template opens the assistant turn differently after the"
          " context, so the response ids would not follow the same tokens"
      )
    if len(row) > budget:
      # Cut from the left of the context: the tokens the two prompts start
      # with (BOS, the user turn's opening) stay in front, as the model
      # was trained to see them, and the question's tail stays adjacent to
      # the response.
      out.truncated += 1
      keep = _common_prefix(row, student)
      row = list(row[:keep]) + list(row[len(row) - (budget - keep) :])
    out.ids.append(np.asarray(row, np.int32))


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
  """Length of the common prefix of two id lists, short of all of `b`."""
  n = 0
  while n < min(len(a), len(b) - 1) and a[n] == b[n]:
    n += 1
  return n


def left_pad(rows: Sequence[np.ndarray], width: int, pad_id: int):
  """(ids int32 [b, width], mask bool [b, width]) of rows flush right."""
  ids = np.full((len(rows), width), pad_id, np.int32)
  mask = np.zeros((len(rows), width), bool)
  for j, row in enumerate(rows):
    ids[j, width - len(row) :] = row
    mask[j, width - len(row) :] = True
  return ids, mask


class ContextSource:
  """Another source's records with the teacher's user turn as the question.

  Evaluating a model on it measures the teacher-with-context's accuracy
  (what self-distillation can transfer to the bare student); answers and
  context fields are the wrapped records'. With `fraction` < 1 only that
  fraction of the records, evenly spaced, carries the context (an SFT set
  that teaches a model to use one). Duck-types `PromptSource`.
  """

  def __init__(
      self, source: Any, context: TeacherContext, fraction: float = 1.0
  ):
    if not 0.0 <= fraction <= 1.0:
      raise ContextError(
          f"ContextSource.fraction: expected in [0, 1], got {fraction}"
      )
    self._source, self._context, self._fraction = source, context, fraction

  @property
  def name(self) -> str:
    return f"{self._source.name} (teacher context)"

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int):
    rec = self._source[index]
    f = self._fraction
    if int((index + 1) * f) == int(index * f):  # not one of the fraction
      return rec
    where = f"{self._source.name} {self._source.location(index)}"
    return dataclasses.replace(
        rec, question=self._context.text(rec.question, rec.context, where)
    )

  def records(self):
    for i in range(len(self)):
      yield self[i]

  def location(self, index: int) -> str:
    return self._source.location(index)
