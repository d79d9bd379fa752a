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
"""Per-token maps of a batch of rollouts: channels and selector masks.

`compute_token_map` scores a `Rollout` with the student and the teacher and
returns every per-token channel (entropies, reverse KL, the TSD-KD gate, the
TIP Soft-OR score, ...) and the tokens each selector of `opd_jax.selection`
keeps, as numpy arrays in a `TokenMap`. `label_token_map` adds the text
(token pieces, prompts) and the graded verdicts; `token_map_html.render_html`
turns the result into a self-contained page; `write_token_map` does all three.

A `TokenMap` is open: any extra channel or selector is one more entry in
`channels` / `selectors` with a line in `descriptions`, and the page shows
it without other changes. TOPD's are such entries: with a `TopdProbe`,
`compute_token_map` runs TOPD's pre-update stage on the rollouts (branched
teacher / student windows and their OT distance) and adds its candidates,
divergent states and false alarms, and the candidates' OT channel.
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
from opd_jax import selection
from opd_jax.methods import topd as topd_lib
from opd_jax.methods import topd_stage
from opd_jax.models import response_hidden
from opd_jax.rollouts import Sampling
from opd_jax.diagnostics import token_map_html

FORMAT = "opd_jax.token_map/1"

Grader = Callable[[Sequence[str], Sequence[str]], list[bool]]

# Descriptions of the built-in channels and selectors, shown in the page.
DESCRIPTIONS = {
    "student_entropy": "student entropy H_S (nats)",
    "teacher_entropy": "teacher entropy H_T (nats)",
    "reverse_kl": "reverse KL(p_S || p_T) (nats)",
    "tsd_gate": "TSD-KD confidence gate sigmoid((H_S - H_T) / tau)",
    "soft_or": "TIP Soft-OR score 1 - (1 - h)(1 - d), batch min-max",
    "student_logprob": "log p_S(y) of the sampled token",
    "teacher_logprob": "log p_T(y) of the sampled token",
    "tip_soft_or": "TIP Soft-OR: top rho of each rollout by Soft-OR score",
    "tip_entropy": "TIP entropy-only: top rho of each rollout by H_S",
    "tip_quadrant": "TIP quadrant selector (Q3 = low H_S, high divergence)",
    "tsd_opener": "TSD-KD opener: prefix holding the first c of the entropy",
    "tsd_em": "TSD-KD entropy-min set: top em_ratio of the batch by H_S",
    "dear_decision": "DEAR decision anchors: top p of each rollout by H_S",
    "dear_evidence": "DEAR evidence: top q of the rest by relevance x gap",
    "topd_ot": (
        "TOPD OT distance of a candidate's teacher and student windows"
        " (0 off candidates)"
    ),
    "topd_candidate": "TOPD candidates: top rho_loss of each rollout by loss",
    "topd_divergent": "TOPD divergent states: candidates above the OT quantile",
    "topd_false_alarm": "TOPD false alarms: candidates at or below it",
}
# Channels with a natural range; the others are coloured by batch min-max.
RANGES = {"tsd_gate": (0.0, 1.0), "soft_or": (0.0, 1.0)}
CHANNELS = (
    "student_entropy",
    "teacher_entropy",
    "reverse_kl",
    "tsd_gate",
    "soft_or",
    "student_logprob",
    "teacher_logprob",
)
SELECTORS = (
    "tip_soft_or",
    "tip_entropy",
    "tip_quadrant",
    "tsd_opener",
    "tsd_em",
    "dear_decision",
    "dear_evidence",
)
# Added by a TopdProbe (TOPD's stage runs only when asked: it samples).
TOPD_CHANNELS = ("topd_ot",)
TOPD_SELECTORS = ("topd_candidate", "topd_divergent", "topd_false_alarm")


@dataclasses.dataclass(frozen=True)
class TokenMapSettings:
  """Selector parameters of a token map; defaults are METHODS.md's.

  Attributes:
    rho: TIP kept fraction per rollout (Soft-OR and entropy-only), 0.5.
    clip_quantile: TIP entropy clip quantile before min-max, 0.98.
    quadrant: TIP quadrant label(s) kept by the quadrant selector (3).
    q_entropy: TIP quadrant entropy cut quantile, 0.5.
    q_divergence: TIP quadrant divergence cut quantile, 0.8.
    gate_tau: TSD-KD gate temperature, 1.
    opener_threshold: TSD-KD opener cumulative-entropy fraction c, 0.1.
    em_ratio: TSD-KD entropy-min fraction of the batch's tokens, 0.1.
    dear_p: DEAR decision fraction p, 0.2.
    dear_q: DEAR evidence fraction q of the non-decision tokens, 0.2.
    temperature: softmax temperature of every statistic, 1.
    chunk_size: positions per chunk of the stats pass.
  """

  rho: float = 0.5
  clip_quantile: float | None = 0.98
  quadrant: int | tuple[int, ...] = 3
  q_entropy: float = 0.5
  q_divergence: float = 0.8
  gate_tau: float = 1.0
  opener_threshold: float = 0.1
  em_ratio: float = 0.1
  dear_p: float = 0.2
  dear_q: float = 0.2
  temperature: float = 1.0
  chunk_size: int = 128

  @classmethod
  def from_config(cls, config: Mapping[str, Any]) -> "TokenMapSettings":
    """The settings of a run config's tip / tsd_kd / dear blocks.

    The temperature is the run's method's (``config[config.method]``).
    """
    tip = config.get("tip") or {}
    tsd = config.get("tsd_kd") or {}
    dear = config.get("dear") or {}
    method = config.get(config.get("method") or "") or {}
    which = tip.get("which", 3)
    which = which if isinstance(which, int) else tuple(which)
    d = cls()
    return cls(
        rho=tip.get("rho", d.rho),
        clip_quantile=tip.get("clip_quantile", d.clip_quantile),
        quadrant=which,
        q_entropy=tip.get("q_entropy", d.q_entropy),
        q_divergence=tip.get("q_divergence", d.q_divergence),
        gate_tau=tsd.get("gate_tau", d.gate_tau),
        opener_threshold=tsd.get("opener_threshold", d.opener_threshold),
        em_ratio=tsd.get("em_ratio", d.em_ratio),
        dear_p=dear.get("p", d.dear_p),
        dear_q=dear.get("q", d.dear_q),
        temperature=method.get("temperature", d.temperature),
    )


@dataclasses.dataclass(frozen=True)
class TopdProbe:
  """TOPD's pre-update stage on a token map's rollouts (it samples).

  Attributes:
    method: the TOPD settings (candidate fraction, cap, window, OT); its
      trajectory term is not run here. ``max_candidates`` is capped at the
      response length.
    sampling: how the branched windows are drawn (the rollouts' sampling).
    eos_ids: ids that end a window.
    pad_id: the padding id.
    seed: seed of the branch sampling.
  """

  method: topd_lib.TOPD = topd_lib.TOPD()
  sampling: Sampling = Sampling()
  eos_ids: tuple[int, ...] = ()
  pad_id: int = 0
  seed: int = 0

  @classmethod
  def from_config(
      cls, config: Mapping[str, Any], *, eos_ids: Sequence[int], pad_id: int
  ) -> "TopdProbe":
    """The run config's `topd` block and sampling (temperature, top-k/p)."""
    plain = lambda d: d.to_dict() if hasattr(d, "to_dict") else dict(d or {})
    return cls(
        method=topd_lib.TOPD(**plain(config.get("topd"))),
        sampling=Sampling(**plain(config.get("sampling"))),
        eos_ids=tuple(int(e) for e in eos_ids),
        pad_id=int(pad_id),
        seed=int(config.get("seed") or 0),
    )


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


@nnx.jit(static_argnames=("settings",))
def _compute(student, teacher, tokens, mask, response_mask, *, settings):
  """Channels and selector masks [B, T] of one batch (see compute_token_map)."""
  s = settings
  t = response_mask.shape[1]
  rmask = response_mask.astype(bool)
  hidden_s = response_hidden(student, tokens, mask, t)
  st = heads.token_stats(
      hidden_s,
      student.head_matrix(),
      response_hidden(teacher, tokens, mask, t),
      teacher.head_matrix(),
      tokens[:, -t:],
      where=rmask,
      chunk_size=min(s.chunk_size, t),
      temperature=s.temperature,
  )
  hs, rkl = st.student_entropy, st.reverse_kl
  vocab = student.config.vocab_size
  channels = {
      "student_entropy": hs,
      "teacher_entropy": st.teacher_entropy,
      "reverse_kl": rkl,
      "tsd_gate": jnp.where(
          rmask,
          selection.confidence_gate(hs, st.teacher_entropy, tau=s.gate_tau),
          0.0,
      ),
      "soft_or": selection.soft_or_scores(
          hs, rkl, rmask, vocab_size=vocab, clip_quantile=s.clip_quantile
      ),
      "student_logprob": st.student_logprob,
      "teacher_logprob": st.teacher_logprob,
  }
  dear = selection.dear_tokens(hs, rkl, hidden_s, rmask, p=s.dear_p, q=s.dear_q)
  kept = lambda sel: sel.weights > 0
  selectors = {
      "tip_soft_or": kept(
          selection.soft_or(
              hs,
              rkl,
              rmask,
              s.rho,
              vocab_size=vocab,
              clip_quantile=s.clip_quantile,
          )
      ),
      "tip_entropy": kept(selection.entropy_top(hs, rmask, s.rho)),
      "tip_quadrant": kept(
          selection.quadrant_select(
              hs,
              rkl,
              rmask,
              which=s.quadrant,
              q_entropy=s.q_entropy,
              q_divergence=s.q_divergence,
          )
      ),
      "tsd_opener": selection.opener_mask(
          hs, rmask, threshold=s.opener_threshold
      ),
      "tsd_em": selection.entropy_min_set(hs, rmask, ratio=s.em_ratio),
      "dear_decision": dear.decision,
      "dear_evidence": dear.evidence,
  }
  return channels, selectors


@nnx.jit(static_argnames=("probe",))
def _compute_topd(student, teacher, rollout, *, probe):
  """TOPD's channels and selector masks [B, T] (see compute_token_map)."""
  response_mask = rollout.response_mask
  t = response_mask.shape[1]
  cfg = dataclasses.replace(
      probe.method,
      max_candidates=min(probe.method.max_candidates, t),
      lambda_traj=0.0,  # no trajectory term: its windows are not shown
  )
  out = topd_stage.prepare(
      cfg,
      student,
      teacher,
      rollout,
      jax.random.PRNGKey(probe.seed),
      sampling=probe.sampling,
      eos_ids=probe.eos_ids,
      pad_id=probe.pad_id,
  )
  index, valid = out[topd_stage.CAND_INDEX], out[topd_stage.CAND_VALID]
  high = out[topd_stage.HIGH_OT]
  rows = jnp.arange(index.shape[0])[:, None]
  scatter = (
      lambda v, init: jnp.full(response_mask.shape, init, v.dtype)
      .at[rows, index]
      .max(v)
  )
  channels = {"topd_ot": scatter(out[topd_stage.OT], 0.0)}
  selectors = {
      "topd_candidate": scatter(valid, False),
      "topd_divergent": scatter(valid & high, False),
      "topd_false_alarm": topd_stage.suppression_mask(index, valid, high, t),
  }
  return channels, selectors


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


def compute_token_map(
    student,
    teacher,
    rollout,
    *,
    settings: TokenMapSettings = TokenMapSettings(),
    topd: TopdProbe | None = None,
) -> TokenMap:
  """Scores a rollout with both models; every channel and selector mask.

  One jitted pass: both trunks over ``prompt + response``, the chunked
  `heads.token_stats` (never a ``[B, T, V]`` array), then the selectors
  of `opd_jax.selection` with ``settings``: TIP Soft-OR / entropy-only /
  quadrant, the TSD-KD opener and entropy-min set, DEAR decision and
  evidence (relevance from the student's last hidden states).

  Args:
    student: the student Transformer (the policy that sampled `rollout`).
    teacher: the teacher Transformer, same vocabulary.
    rollout: a `rollouts.Rollout` ([B, P] prompt, [B, T] response).
    settings: selector parameters (METHODS.md defaults).
    topd: when given, also TOPD's stage (a second jitted pass that samples
      ``B x max_candidates`` branched windows from each model): the
      `TOPD_CHANNELS` and `TOPD_SELECTORS` entries.

  Returns:
    A `TokenMap` without text (see `label_token_map`). Under several
    processes every process must call it (the arrays are all-gathered).
  """
  check_vocabularies(student.config.vocab_size, teacher.config.vocab_size)
  if rollout.response.ndim != 2 or rollout.prompt.ndim != 2:
    raise ValueError(
        "rollout: expected prompt [B, P] and response [B, T], got"
        f" {rollout.prompt.shape} and {rollout.response.shape}"
    )
  channels, selectors = _to_numpy(
      _compute(
          student,
          teacher,
          rollout.tokens,
          rollout.mask,
          rollout.response_mask,
          settings=settings,
      )
  )
  channel_names, selector_names = CHANNELS, SELECTORS
  meta = {f"settings.{k}": v for k, v in dataclasses.asdict(settings).items()}
  if topd is not None:
    more_channels, more_selectors = _to_numpy(
        _compute_topd(student, teacher, rollout, probe=topd)
    )
    channels, selectors = (
        {**channels, **more_channels},
        {**selectors, **more_selectors},
    )
    channel_names += TOPD_CHANNELS
    selector_names += TOPD_SELECTORS
    meta.update({
        f"topd.{k}": v
        for k, v in dataclasses.asdict(topd.method).items()
        if k in _TOPD_STAGE_FIELDS
    })
  ids, mask = _to_numpy((rollout.response, rollout.response_mask))
  return TokenMap(
      ids=ids.astype(np.int32),
      mask=mask.astype(bool),
      # jit returns dicts in sorted key order; keep the page's order.
      channels={k: channels[k].astype(np.float32) for k in channel_names},
      selectors={k: selectors[k].astype(bool) for k in selector_names},
      descriptions={k: DESCRIPTIONS[k] for k in channel_names + selector_names},
      ranges=dict(RANGES),
      meta=meta,
  )


# The TOPD fields the stage reads (shown in the page header).
_TOPD_STAGE_FIELDS = (
    "rho_loss",
    "max_candidates",
    "window",
    "candidate_divergence",
    "ot_epsilon",
    "ot_quantile",
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
      `evaluation.evaluate.arithmetic_grader` or `pool_grader(pool)`;
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
    answers: Sequence[str | None] | None = None,
    grader: Grader | None = None,
    settings: TokenMapSettings = TokenMapSettings(),
    topd: TopdProbe | None = None,
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
    answers: reference answers per rollout, for the verdicts.
    grader: (texts, answers) -> bools; without one no verdict is shown.
    settings: selector parameters.
    topd: also TOPD's candidates, divergent states and false alarms.
    title: the page title.
    meta: extra header fields (e.g. {"step": 300, "student": "..."}).
    json_path: also write the `TokenMap.to_json` data there.

  Returns:
    The labelled TokenMap.
  """
  token_map = compute_token_map(
      student, teacher, rollout, settings=settings, topd=topd
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
