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
"""Prompt text to token ids through the tokenizer's chat template (or plainly)."""

from __future__ import annotations

from typing import Any, Sequence


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
    system_prompt: an optional system turn; None leaves the template's
      default, '' sends an empty one.

  Returns:
    One list of token ids per question.
  """
  templated = use_chat_template and bool(
      getattr(tokenizer, "chat_template", None)
  )
  if templated:
    # An empty string is an explicit (empty) system turn: it replaces the
    # default system prompt some templates add when there is none.
    system = (
        []
        if system_prompt is None
        else [{"role": "system", "content": system_prompt}]
    )
    texts = tokenizer.apply_chat_template(
        [system + [{"role": "user", "content": q}] for q in questions],
        add_generation_prompt=True,
        tokenize=False,
    )
  else:
    texts = [
        f"{system_prompt}\n\n{q}" if system_prompt else q for q in questions
    ]
  ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
  bos = getattr(tokenizer, "bos_token_id", None)
  if not templated and bos is not None:
    ids = [[bos] + list(row) for row in ids]
  return [list(row) for row in ids]
