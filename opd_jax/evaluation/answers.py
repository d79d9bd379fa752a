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
"""Pure string functions that extract and normalise final math answers."""

from __future__ import annotations

import re

_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*")
# Phrases that introduce a final answer; the last occurrence wins.
_FINAL_RE = re.compile(
    r"(?:(?<!#)####(?!#)|\bthe (?:final )?answer is\b:?|\bfinal answer\s*:)"
    r"[ \t]*(?P<ans>[^\n]*)",
    re.IGNORECASE,
)
_TEXT_RE = re.compile(r"\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}")
_THOUSANDS_RE = re.compile(r"(?<![\d.])(\d{1,3}(?:,\d{3})+)(?![\d,])")


def _balanced(text: str, open_idx: int) -> str | None:
  """Returns the content of the brace group opening at `open_idx`."""
  depth = 0
  for i in range(open_idx, len(text)):
    # A backslash-escaped brace (\{ or \}) is literal, not a group delimiter.
    if text[i] in "{}" and i > 0 and text[i - 1] == "\\":
      continue
    if text[i] == "{":
      depth += 1
    elif text[i] == "}":
      depth -= 1
      if depth == 0:
        return text[open_idx + 1 : i]
  return None


def extract_boxed(text: str) -> str | None:
  """Returns the content of the last `\\boxed{...}` (or `\\fbox{...}`).

  Braces are matched with nesting, so `\\boxed{\\frac{1}{2}}` gives
  `\\frac{1}{2}`. The brace-less form `\\boxed 5` gives `5`. An unclosed
  box is skipped in favour of an earlier, well-formed one.

  Args:
    text: a model completion.

  Returns:
    The raw box content, or None when there is no well-formed box.

  Examples:
    >>> extract_boxed(r"so \\boxed{1} or rather \\boxed{\\frac{1}{2}}.")
    '\\\\frac{1}{2}'
  """
  for match in reversed(list(_BOXED_RE.finditer(text))):
    end = match.end()
    if end < len(text) and text[end] == "{":
      content = _balanced(text, end)
      if content is not None:
        return content
    elif match.group(0).endswith(" ") or match.group(0).endswith("\t"):
      token = re.match(r"[^\s$]+", text[end:])
      if token:
        return token.group(0)
  return None


def extract_final_line(text: str) -> str | None:
  """Returns what follows the last `####`, `The answer is` or `Final answer:`.

  Only the rest of that line is taken.
  """
  matches = list(_FINAL_RE.finditer(text))
  if not matches:
    return None
  answer = matches[-1].group("ans").strip()
  return answer or None


def extract_answer(text: str) -> str | None:
  """Returns the normalised final answer of `text`, or None.

  The last `\\boxed{}` wins; without one, the last final-answer line
  (`#### x`, `The answer is x`, `Final answer: x`). A boxed answer inside
  the final line is preferred, since both must be the same answer.

  Examples:
    >>> extract_answer("The answer is $1,234$.")
    '1234'
  """
  if not isinstance(text, str):
    return None
  raw = extract_boxed(text)
  if raw is None:
    raw = extract_final_line(text)
  if raw is None:
    return None
  answer = normalize_answer(raw)
  return answer or None


def remove_thousands_separators(text: str) -> str:
  """`1,234,567` -> `1234567` (but not `1,2` or a list `1, 2`)."""
  return _THOUSANDS_RE.sub(lambda m: m.group(1).replace(",", ""), text)


def normalize_answer(answer: str) -> str:
  """Canonicalises an answer string for exact comparison.

  Unwraps `\\text{}`-like groups and `\\boxed{}`, drops `$`, `\\!`,
  `\\left`/`\\right`, spaces and a trailing period, maps `\\dfrac`/`\\tfrac`
  to `\\frac`, and removes thousands separators (`1,234,567` but not
  `1,2`).

  Examples:
    >>> normalize_answer(r" $\\text{12,000}$. ")
    '12000'
  """
  s = answer.strip()
  boxed = extract_boxed(s)
  if boxed is not None and s.startswith(("\\boxed", "\\fbox")):
    s = boxed
  prev = None
  while prev != s:  # Nested \text{\textbf{x}} needs several passes.
    prev, s = s, _TEXT_RE.sub(r"\1", s)
  s = s.replace("$", "").replace("\\!", "")
  s = s.replace("\\left", "").replace("\\right", "")
  s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
  s = remove_thousands_separators(s)
  s = re.sub(r"\s+", "", s)
  s = s.rstrip(".")
  return s


def _paren_group(text: str, open_idx: int) -> int | None:
  """The index of the `)` closing the `(` at `open_idx`, or None."""
  depth = 0
  for i in range(open_idx, len(text)):
    if text[i] == "(":
      depth += 1
    elif text[i] == ")":
      depth -= 1
      if depth == 0:
        return i
  return None


_PLAIN_CALL_RE = re.compile(r"(?<![\\A-Za-z])(sqrt|binom|C)\s*\(")
_POWER_RE = re.compile(r"(\^|\*\*)\s*\(")


def plain_to_latex(text: str) -> str:
  """Plain-text math as the LaTeX math-verify parses reliably.

  `2^(n-1)` / `2**(n-1)` -> `2^{n-1}`, `sqrt(3)/3` -> `\\sqrt{3}/3`,
  `C(n, 4)` / `binom(n, 4)` -> `\\binom{n}{4}`; everything else (LaTeX
  included) is left as it is.

  Examples:
    >>> plain_to_latex("2^(n-1) + sqrt(2)")
    '2^{n-1} + \\\\sqrt{2}'
    >>> plain_to_latex("C(n, 4)")
    '\\\\binom{n}{4}'
  """
  out, i = [], 0
  while i < len(text):
    call = _PLAIN_CALL_RE.match(text, i) if text[i] in "sbC" else None
    power = _POWER_RE.match(text, i) if text[i] in "^*" else None
    match = call or power
    if match is not None:
      open_idx = match.end() - 1
      close = _paren_group(text, open_idx)
      if close is not None:
        inner = plain_to_latex(text[open_idx + 1 : close])
        if power is not None:
          out.append(f"^{{{inner}}}")
        elif call.group(1) == "sqrt":
          out.append(f"\\sqrt{{{inner}}}")
        else:
          args = [a.strip() for a in _split_top(inner)]
          if len(args) != 2:
            out.append(text[i : close + 1])
            i = close + 1
            continue
          out.append(f"\\binom{{{args[0]}}}{{{args[1]}}}")
        i = close + 1
        continue
    out.append(text[i])
    i += 1
  return "".join(out)


def _split_top(text: str) -> list[str]:
  """`text` split at its top-level commas (not inside brackets)."""
  parts, depth, start = [], 0, 0
  for i, ch in enumerate(text):
    if ch in "([{":
      depth += 1
    elif ch in ")]}":
      depth -= 1
    elif ch == "," and depth == 0:
      parts.append(text[start:i])
      start = i + 1
  parts.append(text[start:])
  return parts
