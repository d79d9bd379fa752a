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
"""Per-token maps of a batch of rollouts: channels and token sets.

`compute_token_map` scores a `Rollout` with the student and the teacher and
returns the models' per-token channels (entropies, reverse KL, log-probs)
and, for a run's method and every other registered method that names its
token sets (`methods.TokenSetMethod`), the tokens it trains on and its
per-token scores, as numpy arrays in a `TokenMap`. Each method computes its
own sets with its own settings, through the code its loss runs, so a map of
a run shows the tokens that run trained on; the others are built with
their defaults, for comparison. A method with a pre-update stage (TOPD)
runs it on the rollouts first (it samples) when it is shown.
`label_token_map` adds the text (token pieces, prompts) and the graded
verdicts; `token_map_html.render_html` turns the result into a
self-contained page; `write_token_map` does all three.

A `TokenMap` is open: any extra channel or selector is one more entry in
`channels` / `selectors` with a line in `descriptions`, and the page shows
it without other changes.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from opd_jax import heads
from opd_jax import methods as methods_lib
from opd_jax.methods.base import SEGMENT_KEYS
from opd_jax.models import response_hidden
from opd_jax.rollouts import Sampling
from opd_jax.diagnostics import token_map_html

FORMAT = "opd_jax.token_map/1"

Grader = Callable[[Sequence[str], Sequence[str]], list[bool]]

# The models' own channels (temperature 1), shown in every map; a method's
# channels and sets come from its `token_sets`, named `<method>_<name>`.
DESCRIPTIONS = {
    "student_entropy": "student entropy H_S (nats)",
    "teacher_entropy": "teacher entropy H_T (nats)",
    "reverse_kl": "reverse KL(p_S || p_T) (nats)",
    "student_logprob": "log p_S(y) of the sampled token",
    "teacher_logprob": "log p_T(y) of the sampled token",
}
CHANNELS = tuple(DESCRIPTIONS)


@dataclasses.dataclass(frozen=True)
class StageSettings:
  """What a staged method's pre-update stage needs on a map's rollouts.

  Attributes:
    sampling: how the stage samples (the rollouts' sampling).
    eos_ids: ids that end a sampled window.
    pad_id: the padding id.
  """

  sampling: Sampling = Sampling()
  eos_ids: tuple[int, ...] = ()
  pad_id: int = 0


def comparison_methods(
    exclude: Sequence[str] = (),
) -> tuple[methods_lib.Method, ...]:
  """Every registered method that names token sets and has no pre-update
  stage, built with its defaults, in registry order (minus `exclude`)."""
  out = []
  for name in methods_lib.REGISTRY:
    if name in exclude:
      continue
    method = methods_lib.build_method(name)
    if methods_lib.has_token_sets(method) and not methods_lib.has_stage(method):
      out.append(method)
  return tuple(out)


@dataclasses.dataclass
class TokenMap:
  """Per-token channels and selector masks of B rollouts (numpy).

  Attributes:
    ids: int32 ``[B, T]`` response token ids.
    mask: bool ``[B, T]`` response mask (True up to and including EOS).
    channels: name -> float32 ``[B, T]`` per-token value (0 where masked).
    selectors: name -> bool ``[B, T]``, the tokens the selector keeps.
    descriptions: name -> one line, for channels and selectors.
    ranges: channel name -> fixed (lo, hi) colour range; other channels use
      their min and max over the valid tokens.
    pieces: per rollout, the text of each valid response token, or None.
    prompts: per rollout, the prompt text, or None.
    answers: per rollout, the reference answer, or None.
    verdicts: per rollout, True / False as graded, or None (not graded).
    meta: name -> str or number, shown in the page header.
  """

  ids: np.ndarray
  mask: np.ndarray
  channels: dict[str, np.ndarray]
  selectors: dict[str, np.ndarray]
  descriptions: dict[str, str] = dataclasses.field(default_factory=dict)
  ranges: dict[str, tuple[float, float]] = dataclasses.field(
      default_factory=dict
  )
  pieces: list[list[str]] | None = None
  prompts: list[str] | None = None
  answers: list[str | None] | None = None
  verdicts: list[bool | None] | None = None
  meta: dict[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    shape = np.shape(self.ids)
    if len(shape) != 2 or np.shape(self.mask) != shape:
      raise ValueError(
          f"TokenMap: ids and mask must be [B, T] alike, got {shape} and"
          f" {np.shape(self.mask)}"
      )
    for kind, arrays in (
        ("channel", self.channels),
        ("selector", self.selectors),
    ):
      for name, x in arrays.items():
        if np.shape(x) != shape:
          raise ValueError(
              f"TokenMap: {kind} {name!r} must have shape"
              f" {shape}, got {np.shape(x)}"
          )
    b = shape[0]
    for field in ("pieces", "prompts", "answers", "verdicts"):
      value = getattr(self, field)
      if value is not None and len(value) != b:
        raise ValueError(
            f"TokenMap.{field}: expected {b} rollouts, got {len(value)}"
        )
    if self.pieces is not None:
      for i, (p, n) in enumerate(zip(self.pieces, self.mask.sum(axis=1))):
        if len(p) != n:
          raise ValueError(
              f"TokenMap.pieces[{i}]: expected {n} pieces (the"
              f" valid tokens), got {len(p)}"
          )

  def to_dict(self) -> dict[str, Any]:
    """The JSON form: one entry per rollout with its valid tokens only.

    ``{"format", "seq_len", "meta", "descriptions", "ranges", "rollouts":
    [{"positions", "ids", "tokens", "prompt", "answer", "verdict",
    "channels": {name: [float | null]}, "selectors": {name: [0 | 1]}}]}``;
    non-finite values are null.
    """
    rollouts = []
    for b in range(self.ids.shape[0]):
      pos = np.flatnonzero(self.mask[b])
      rollouts.append({
          "positions": pos.tolist(),
          "ids": self.ids[b, pos].tolist(),
          "tokens": None if self.pieces is None else list(self.pieces[b]),
          "prompt": None if self.prompts is None else self.prompts[b],
          "answer": None if self.answers is None else self.answers[b],
          "verdict": None if self.verdicts is None else self.verdicts[b],
          "channels": {
              k: _finite_list(v[b, pos]) for k, v in self.channels.items()
          },
          "selectors": {
              k: v[b, pos].astype(int).tolist()
              for k, v in self.selectors.items()
          },
      })
    return {
        "format": FORMAT,
        "seq_len": int(self.ids.shape[1]),
        "meta": dict(self.meta),
        "descriptions": dict(self.descriptions),
        "ranges": {k: list(v) for k, v in self.ranges.items()},
        "rollouts": rollouts,
    }

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), ensure_ascii=False)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "TokenMap":
    """Inverse of `to_dict` (null values read back as NaN)."""
    if d.get("format") != FORMAT:
      raise ValueError(
          f"token map: expected format {FORMAT!r}, got {d.get('format')!r}"
      )
    rows, t = d["rollouts"], d["seq_len"]
    ids = np.zeros((len(rows), t), np.int32)
    mask = np.zeros((len(rows), t), bool)
    names = (rows[0]["channels"], rows[0]["selectors"]) if rows else ({}, {})
    channels = {k: np.zeros((len(rows), t), np.float32) for k in names[0]}
    selectors = {k: np.zeros((len(rows), t), bool) for k in names[1]}
    for b, row in enumerate(rows):
      pos = np.asarray(row["positions"], np.int64)
      ids[b, pos], mask[b, pos] = row["ids"], True
      for k, v in row["channels"].items():
        channels[k][b, pos] = [np.nan if x is None else x for x in v]
      for k, v in row["selectors"].items():
        selectors[k][b, pos] = np.asarray(v, bool)
    column = (
        lambda key: [r[key] for r in rows]
        if any(r[key] is not None for r in rows)
        else None
    )
    return cls(
        ids=ids,
        mask=mask,
        channels=channels,
        selectors=selectors,
        descriptions=dict(d.get("descriptions", {})),
        ranges={k: tuple(v) for k, v in d.get("ranges", {}).items()},
        pieces=column("tokens"),
        prompts=column("prompt"),
        answers=column("answer"),
        verdicts=column("verdict"),
        meta=dict(d.get("meta", {})),
    )

  @classmethod
  def from_json(cls, text: str) -> "TokenMap":
    return cls.from_dict(json.loads(text))


def _finite_list(x: np.ndarray) -> list[float | None]:
  # 7 significant digits: float32 precision, and a compact page.
  return [float(f"{v:.7g}") if np.isfinite(v) else None for v in x.tolist()]


@nnx.jit(static_argnames=("shown", "chunk_size"))
def _compute(
    student, teacher, rollout, teacher_seq, key, extras, *, shown, chunk_size
):
  """Channels and each method's token sets [B, T] (see compute_token_map)."""
  t = rollout.response.shape[1]
  rmask = rollout.response_mask.astype(bool)
  # The teacher's own [B, Pt + T] sequence, or the student's; both end in
  # the response, which `response_hidden` aligns by position from the end.
  t_tokens, t_mask = teacher_seq or (rollout.tokens, rollout.mask)
  inputs = methods_lib.StepInputs(
      student_hidden=response_hidden(student, rollout.tokens, rollout.mask, t),
      student_head=student.head_matrix(),
      teacher_hidden=response_hidden(teacher, t_tokens, t_mask, t),
      teacher_head=teacher.head_matrix(),
      ids=rollout.response,
      mask=rmask,
      sampler_logprobs=rollout.logprobs,
      key=key,
  )
  st = heads.token_stats(
      *inputs.hidden_and_heads,
      inputs.ids,
      where=rmask,
      chunk_size=min(chunk_size, t),
  )
  channels = {
      "student_entropy": st.student_entropy,
      "teacher_entropy": st.teacher_entropy,
      "reverse_kl": st.reverse_kl,
      "student_logprob": st.student_logprob,
      "teacher_logprob": st.teacher_logprob,
  }
  sets = [
      method.token_sets(inputs.replace(extras=ex))
      for method, ex in zip(shown, extras)
  ]
  return channels, sets


@nnx.jit(static_argnames=("method", "stage"))
def _prepare(student, teacher, rollout, key, *, method, stage):
  """A staged method's `prepare` outputs but the segments (its extras)."""
  out = method.prepare(
      student,
      teacher,
      rollout,
      key,
      sampling=stage.sampling,
      eos_ids=stage.eos_ids,
      pad_id=stage.pad_id,
  )
  return {k: v for k, v in out.items() if k not in SEGMENT_KEYS}


def _to_numpy(tree):
  """Global arrays -> numpy on every process (an all-gather when several)."""
  if jax.process_count() == 1:
    return jax.tree.map(np.asarray, tree)
  return multihost_utils.process_allgather(tree, tiled=True)


def check_vocabularies(student_vocab: int, teacher_vocab: int) -> None:
  """Raises ValueError unless the two vocabulary sizes agree."""
  if student_vocab != teacher_vocab:
    raise ValueError(
        "teacher vocabulary differs from the student's: teacher"
        f" vocab_size={teacher_vocab}, student vocab_size={student_vocab};"
        " the teacher scores the student's tokens, so both need one"
        " tokenizer"
    )


def check_teacher_sequence(rollout, teacher_tokens, teacher_mask) -> None:
  """Raises ValueError unless the teacher's sequence ends in the response.

  Args:
    rollout: the student's `Rollout` (response [B, T]).
    teacher_tokens: int [B, Pt + T], `[teacher prompt | response]`.
    teacher_mask: bool [B, Pt + T].
  """
  b, t = rollout.response.shape
  shape = np.shape(teacher_tokens)
  if (
      len(shape) != 2
      or shape[0] != b
      or shape[1] < t
      or np.shape(teacher_mask) != shape
  ):
    raise ValueError(
        f"teacher_tokens / teacher_mask: expected [{b}, Pt + {t}] each, got"
        f" {shape} and {np.shape(teacher_mask)}"
    )
  ids, mask = _to_numpy((teacher_tokens[:, -t:], teacher_mask[:, -t:]))
  want_ids, want_mask = _to_numpy((rollout.response, rollout.response_mask))
  if not (
      np.array_equal(mask, want_mask)
      and np.array_equal(
          np.where(want_mask, ids, 0), np.where(want_mask, want_ids, 0)
      )
  ):
    raise ValueError(
        "teacher_tokens: its last T ids must be the rollout's response"
    )


def compute_token_map(
    student,
    teacher,
    rollout,
    *,
    teacher_tokens: jax.Array | None = None,
    teacher_mask: jax.Array | None = None,
    method: methods_lib.Method | None = None,
    compare: Sequence[methods_lib.Method] | None = None,
    stage: StageSettings | None = None,
    prepared: Mapping[str, jax.Array] | None = None,
    seed: int = 0,
    chunk_size: int = 128,
) -> TokenMap:
  """Scores a rollout with both models; the channels and token sets.

  One jitted pass: both trunks over ``prompt + response``, the chunked
  `heads.token_stats` (never a ``[B, T, V]`` array) for the models'
  channels, then each shown method's `token_sets` on the same inputs (each
  with its own stats pass, at its own settings). A staged method first runs
  its `prepare` on the rollout (a second jitted pass; TOPD samples ``B x
  max_candidates`` branched windows from each model).

  Args:
    student: the student Transformer (the policy that sampled `rollout`).
    teacher: the teacher Transformer, same vocabulary.
    rollout: a `rollouts.Rollout` ([B, P] prompt, [B, T] response).
    teacher_tokens: int [B, Pt + T], the teacher's own sequence
      `[teacher prompt with context | response]` (self-distillation with a
      privileged context, the batch's ``teacher/tokens``); None: the
      teacher scores the student's sequence.
    teacher_mask: bool [B, Pt + T], with `teacher_tokens`.
    method: a run's method: shown first, its config in `meta`
      (``settings.<method>.<field>``).
    compare: the other methods shown; default `comparison_methods` less the
      run's method's name.
    stage: needed when a shown method has a pre-update stage.
    prepared: the staged `method`'s `prepare` outputs on these rollouts
      (the trainer passes those its step trained on); its stage is then not
      rerun.
    seed: PRNG seed of stochastic selectors and of a stage's sampling.
    chunk_size: positions per chunk of the models' stats pass.

  Returns:
    A `TokenMap` without text (see `label_token_map`): channels and
    selectors ``<method>_<name>`` (a method's entries in name order).
    Under several processes every process must call it (the arrays are
    all-gathered).
  """
  check_vocabularies(student.config.vocab_size, teacher.config.vocab_size)
  if rollout.response.ndim != 2 or rollout.prompt.ndim != 2:
    raise ValueError(
        "rollout: expected prompt [B, P] and response [B, T], got"
        f" {rollout.prompt.shape} and {rollout.response.shape}"
    )
  teacher_seq = None
  if teacher_tokens is not None or teacher_mask is not None:
    check_teacher_sequence(rollout, teacher_tokens, teacher_mask)
    teacher_seq = (
        jnp.asarray(teacher_tokens, jnp.int32),
        jnp.asarray(teacher_mask, bool),
    )
  meta = {}
  if method is not None:
    name = methods_lib.method_name(method)
    meta["method"] = name
    meta.update({  # the page folds `settings.*` into one line
        f"settings.{name}.{k}": v for k, v in dataclasses.asdict(method).items()
    })
  if compare is None:
    compare = comparison_methods(exclude=[meta["method"]] if meta else [])
  if teacher_seq is not None:
    for m in (method, *compare):
      if m is method and prepared is not None:
        continue  # its stage outputs come from the step (on this context)
      if m is not None and methods_lib.has_stage(m):
        # Its branches are cut from the student's sequence (see
        # docs/self_distillation.md).
        raise ValueError(
            f"{methods_lib.method_name(m)}'s pre-update stage branches the"
            " teacher from the student's sequence: it cannot be shown with"
            " teacher_tokens"
        )
    meta["teacher sequence"] = "its own prompt (a teacher context)"
  shown = tuple(
      m
      for m in (method, *compare)
      if m is not None and methods_lib.has_token_sets(m)
  )
  key = jax.random.PRNGKey(seed)
  extras = []
  for m in shown:
    if not methods_lib.has_stage(m):
      extras.append(None)
      continue
    if m is method and prepared is not None:
      extras.append(
          {k: v for k, v in prepared.items() if k not in SEGMENT_KEYS}
      )
      continue
    if stage is None:
      raise ValueError(
          f"{methods_lib.method_name(m)} has a pre-update stage (it"
          " samples): pass stage=StageSettings(sampling, eos_ids, pad_id)"
      )
    extras.append(
        _prepare(student, teacher, rollout, key, method=m, stage=stage)
    )
  channels, sets = _to_numpy(
      _compute(
          student,
          teacher,
          rollout,
          teacher_seq,
          key,
          tuple(extras),
          shown=shown,
          chunk_size=chunk_size,
      )
  )
  # jit returns dicts in sorted key order; keep the page's order.
  channels = {k: channels[k].astype(np.float32) for k in CHANNELS}
  selectors, descriptions, ranges = {}, dict(DESCRIPTIONS), {}
  for m, views in zip(shown, sets):
    name = methods_lib.method_name(m)
    for key_name, view in views.items():
      full = f"{name}_{key_name}"
      if full in channels or full in selectors:
        raise ValueError(f"token map: two entries named {full!r}")
      values = np.asarray(view.values)
      if values.dtype == bool:
        selectors[full] = values
      else:
        channels[full] = values.astype(np.float32)
      descriptions[full] = view.description
      if view.value_range is not None:
        ranges[full] = tuple(view.value_range)
  ids, mask = _to_numpy((rollout.response, rollout.response_mask))
  return TokenMap(
      ids=ids.astype(np.int32),
      mask=mask.astype(bool),
      channels=channels,
      selectors=selectors,
      descriptions=descriptions,
      ranges=ranges,
      meta=meta,
  )


def token_pieces(tokenizer, ids: Sequence[int]) -> list[str]:
  """The text each token adds to the decoded response, one per id.

  Piece t is ``decode(ids[:t+1])`` minus the text already attributed, so
  leading spaces and merges are as the tokenizer decodes them in context;
  a token that ends inside a multi-byte character adds "" and the token that
  completes it adds the character. Where the decoding of a longer prefix
  rewrites earlier text, the token falls back to its own decoding. Special
  tokens are kept (an EOS shows as its text).
  """
  pieces, emitted = [], ""
  for t in range(len(ids)):
    text = tokenizer.decode(list(ids[: t + 1]), skip_special_tokens=False)
    stable = text.rstrip("\ufffd") if t + 1 < len(ids) else text
    if stable.startswith(emitted):
      pieces.append(stable[len(emitted) :])
    else:
      pieces.append(tokenizer.decode([ids[t]], skip_special_tokens=False))
    emitted = stable
  return pieces


def label_token_map(
    token_map: TokenMap,
    tokenizer,
    *,
    prompts: Sequence[str] | None = None,
    answers: Sequence[str | None] | None = None,
    grader: Grader | None = None,
) -> TokenMap:
  """Adds token pieces, prompts, answers and graded verdicts.

  Args:
    token_map: from `compute_token_map`.
    tokenizer: decodes the response ids.
    prompts: prompt texts per rollout (optional).
    answers: reference answers per rollout (optional).
    grader: (response texts, answers) -> bools, e.g.
      `evaluation.TaskGrader(task)` or `pool_grader(pool)`;
      rollouts without an answer are not graded.

  Returns:
    A new TokenMap.
  """
  responses = [
      token_map.ids[b][token_map.mask[b]].tolist()
      for b in range(token_map.ids.shape[0])
  ]
  verdicts = None
  if answers is not None and grader is not None:
    texts = [tokenizer.decode(r, skip_special_tokens=True) for r in responses]
    graded = [i for i, a in enumerate(answers) if a is not None]
    ok = grader([texts[i] for i in graded], [answers[i] for i in graded])
    verdicts = [None] * len(responses)
    for i, v in zip(graded, ok):
      verdicts[i] = bool(v)
  return dataclasses.replace(
      token_map,
      pieces=[token_pieces(tokenizer, r) for r in responses],
      prompts=None if prompts is None else list(prompts),
      answers=None
      if answers is None
      else [None if a is None else str(a) for a in answers],
      verdicts=verdicts,
  )


def decode_prompts(tokenizer, rollout) -> list[str]:
  """The prompt text of each rollout (padding removed, specials kept)."""
  prompt, mask = _to_numpy((rollout.prompt, rollout.prompt_mask))
  return [
      tokenizer.decode(p[m].tolist(), skip_special_tokens=False)
      for p, m in zip(prompt, mask.astype(bool))
  ]


def write_token_map(
    path: str,
    student,
    teacher,
    rollout,
    tokenizer,
    *,
    teacher_tokens: jax.Array | None = None,
    teacher_mask: jax.Array | None = None,
    answers: Sequence[str | None] | None = None,
    grader: Grader | None = None,
    method: methods_lib.Method | None = None,
    compare: Sequence[methods_lib.Method] | None = None,
    stage: StageSettings | None = None,
    prepared: Mapping[str, jax.Array] | None = None,
    seed: int = 0,
    title: str = "opd_jax token map",
    meta: Mapping[str, Any] | None = None,
    json_path: str | None = None,
) -> TokenMap:
  """Computes, labels and renders a token map to a self-contained HTML file.

  The file appears whole or not at all (written beside, then renamed).
  Every process computes (a collective under several processes); only
  process 0 writes.

  Args:
    path: the .html file to write (parent directories are created).
    student, teacher: Transformers sharing a vocabulary.
    rollout: the student's `Rollout`.
    tokenizer: the student's tokenizer.
    teacher_tokens, teacher_mask: the teacher's own `[teacher prompt |
      response]` (see `compute_token_map`).
    answers: reference answers per rollout, for the verdicts.
    grader: (texts, answers) -> bools; without one no verdict is shown.
    method, compare, stage, prepared, seed: what `compute_token_map` shows
      (a run's method, the methods compared with it, a staged method's
      sampling or its stage's outputs).
    title: the page title.
    meta: extra header fields (e.g. {"step": 300, "student": "..."}).
    json_path: also write the `TokenMap.to_json` data there.

  Returns:
    The labelled TokenMap.
  """
  token_map = compute_token_map(
      student,
      teacher,
      rollout,
      teacher_tokens=teacher_tokens,
      teacher_mask=teacher_mask,
      method=method,
      compare=compare,
      stage=stage,
      prepared=prepared,
      seed=seed,
  )
  token_map = label_token_map(
      token_map,
      tokenizer,
      prompts=decode_prompts(tokenizer, rollout),
      answers=answers,
      grader=grader,
  )
  token_map.meta = {**dict(meta or {}), **token_map.meta}
  if jax.process_index() == 0:
    _write_atomic(path, token_map_html.render_html(token_map, title=title))
    if json_path:
      _write_atomic(json_path, token_map.to_json())
  return token_map


def _write_atomic(path: str, text: str) -> None:
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  try:
    with open(tmp, "w", encoding="utf-8") as f:
      f.write(text)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
