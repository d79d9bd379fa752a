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
"""TOPD's pre-update stage: high-loss candidates, branched windows, OT tests.

Pure functions over static shapes, run without gradient between sampling
and the update (docs/methods.md §5(e)): score the rollout, keep the top
`rho_loss` tokens of each rollout (at most N), continue each candidate's
prefix for W tokens from the teacher and from the student, and measure the
two windows' OT distance; "divergent" candidates are those above the
batch's OT quantile.
"""

from __future__ import annotations

import fractions

import jax
import jax.numpy as jnp

from opd_jax import heads
from opd_jax import selection
from opd_jax.methods import base
from opd_jax.methods import common
from opd_jax.methods.topd_transport import window_ot_distance
from opd_jax.models import response_hidden
from opd_jax.rollouts import Rollout, continue_from
from opd_jax.selection.selectors import rational

Array = jax.Array

# Batch keys of the stage's outputs (besides `segment/*`).
CAND_INDEX = "topd/cand_index"  # int32 [B, N] response position
CAND_VALID = "topd/cand_valid"  # bool [B, N] tested candidate
CAND_SCORE = "topd/cand_score"  # float32 [B, N] its per-token OPD loss
OT = "topd/ot"  # float32 [B, N] OT distance of its two windows
HIGH_OT = "topd/high_ot"  # bool [B, N] divergent state (high loss, high OT)
STAGE_KEYS = (CAND_INDEX, CAND_VALID, CAND_SCORE, OT, HIGH_OT)


def pick_candidates(
    score: Array, mask: Array, rho: float, max_candidates: int
) -> tuple[Array, Array]:
  r"""The top ``floor(rho L_b)`` tokens of each rollout by score, at most N.

  Args:
    score: float ``[B, T]`` per-token loss (stop-gradient).
    mask: bool ``[B, T]``.
    rho: fraction in (0, 1].
    max_candidates: static N <= T.

  Returns:
    ``(index int32 [B, N], valid bool [B, N])``: positions by descending
    score (ties toward earlier positions); slots past a rollout's count are
    invalid.
  """
  counts = selection.rollout_budget(rho, mask)
  sel = selection.select_top_counts(
      score, mask, counts, max_candidates, return_index=True
  )
  return sel.index.astype(jnp.int32), sel.index_weights > 0


def high_ot(ot: Array, valid: Array, quantile: float) -> Array:
  """Valid candidates whose OT exceeds the batch's `quantile` of valid OT.

  Args:
    ot: float ``[B, N]``.
    valid: bool ``[B, N]``.
    quantile: in [0, 1] (numpy's linear-interpolation quantile).

  Returns:
    bool ``[B, N]``.
  """
  cut = selection.masked_quantile(ot, valid, quantile)
  return valid & (ot > cut)


def trajectory_budget(num_candidates: int, quantile: float) -> int:
  r"""Static row count M of the trajectory pass for B*N candidates.

  At most :math:`\lceil (n - 1)(1 - q) \rceil` of n values exceed their
  linear-interpolation q-quantile, so M rows hold every divergent state of
  a batch (at least 1 row, to keep shapes non-empty).
  """
  above = fractions.Fraction(1) - rational(quantile)
  return max(1, selection.static_budget(above, num_candidates - 1))


def trajectory_rows(ot: Array, high: Array, m: int) -> tuple[Array, Array]:
  """The M highest-OT divergent candidates of the flattened batch.

  Args:
    ot: float ``[B*N]``.
    high: bool ``[B*N]``.
    m: static row count.

  Returns:
    ``(rows int32 [M], valid bool [M])``.
  """
  _, rows = jax.lax.top_k(jnp.where(high, ot, -jnp.inf), m)
  return rows.astype(jnp.int32), jnp.take(high, rows)


def suppression_mask(
    index: Array, valid: Array, high: Array, response_len: int
) -> Array:
  """False alarms as a ``[B, T]`` mask: tested candidates that are not high.

  Args:
    index: int32 ``[B, N]`` candidate positions.
    valid: bool ``[B, N]``.
    high: bool ``[B, N]``.
    response_len: T.

  Returns:
    bool ``[B, T]``.
  """
  b = index.shape[0]
  rows = jnp.arange(b)[:, None]
  alarm = valid & ~high
  return jnp.zeros((b, response_len), bool).at[rows, index].max(alarm)


def student_window_weights(
    index: Array, high: Array, mask: Array, window: int
) -> Array:
  r"""Token weights that spread each divergent state over its next W tokens.

  .. math::
    w_{bs} = \frac{1}{|\mathcal{D}|} \sum_{n : (b, n) \in \mathcal{D}}
      \frac{[t_{bn} \le s < t_{bn} + W]\, m_{bs}}{K_{bn}},

  with :math:`K_{bn}` the valid tokens of that window, so that
  :math:`\sum_s w_{bs} \ell_{bs}` is the mean over divergent states of
  each window's mean (the student's own continuation, docs/methods.md §5(d)5).

  Returns:
    float32 ``[B, T]``.
  """
  t = mask.shape[1]
  pos = jnp.arange(t)[None, None, :]
  start = index[..., None]
  inside = (
      (pos >= start)
      & (pos < start + window)
      & mask[:, None, :]
      & high[..., None]
  )  # [B, N, T]
  k = inside.sum(axis=-1, keepdims=True).astype(jnp.float32)
  per = inside / jnp.maximum(k, 1.0)
  num = jnp.maximum(jnp.sum(high & (k[..., 0] > 0)), 1).astype(jnp.float32)
  return per.sum(axis=1) / num


def rollout_scores(
    cfg, student, teacher, rollout: Rollout, teacher_rollout=None
) -> Array:
  """Per-token OPD loss ``[B, T]`` (cfg.score_divergence), no gradient.

  The teacher scores `teacher_rollout` (the same response after its own
  prompt) when given, else the student's `rollout`.
  """
  t = rollout.response.shape[1]
  seen = rollout if teacher_rollout is None else teacher_rollout
  hs = response_hidden(student, rollout.tokens, rollout.mask, t)
  ht = response_hidden(teacher, seen.tokens, seen.mask, t)
  rmask = jnp.asarray(rollout.response_mask, bool)
  stats = heads.token_stats(
      hs,
      student.head_matrix(),
      ht,
      teacher.head_matrix(),
      rollout.response,
      where=rmask,
      chunk_size=cfg.loss_pass.chunk_size,
      temperature=cfg.loss_pass.temperature,
      jsd_beta=cfg.loss_pass.jsd_beta,
  )
  score = common.axis_divergence(stats, cfg.score_divergence)
  return jax.lax.stop_gradient(jnp.where(rmask, score, 0.0))


def prepare(
    cfg,
    student,
    teacher,
    rollout: Rollout,
    key: Array,
    *,
    sampling,
    eos_ids: tuple[int, ...],
    pad_id: int,
    teacher_rollout: Rollout | None = None,
) -> dict[str, Array]:
  """The whole stage for a TOPD config `cfg` (see module docstring).

  Args:
    cfg: the TOPD method (its fields).
    student, teacher: the models, already in the compute dtype.
    rollout: the step's rollouts ([B, P] prompts, [B, T] responses).
    key: PRNG key of the branch sampling.
    sampling: the sampling strategy of the branches (the rollouts').
    eos_ids: ids that end a response.
    pad_id: the padding id.
    teacher_rollout: the same responses after the teacher's own prompts
      ([B, Pt], a teacher context), or None: the teacher scores the
      candidates and branches its windows from this sequence instead of
      the student's.

  Returns:
    The `STAGE_KEYS` arrays, plus `segment/*` ([M, P+T+W] prefix + teacher
    window, [M, W] window mask) when the trajectory term runs along the
    teacher's windows; under a teacher context the student's segment is
    its own prefix + the teacher's window, and `segment/teacher_*` ([M,
    Pt+T+W]) the teacher's prefix + the same window.
  """
  b, t = rollout.response.shape
  n, w = cfg.max_candidates, cfg.window
  cfg.check_response_len(t)
  score = rollout_scores(cfg, student, teacher, rollout, teacher_rollout)
  index, valid = pick_candidates(score, rollout.response_mask, cfg.rho_loss, n)
  cut = jnp.where(valid, index, -1)  # invalid cuts come back masked
  key_t, key_s = jax.random.split(key)
  kw = dict(max_new_tokens=w, sampling=sampling, eos_ids=eos_ids, pad_id=pad_id)
  seen = rollout if teacher_rollout is None else teacher_rollout
  tw = continue_from(teacher, seen, cut, key_t, **kw)  # [B*N, W]
  sw = continue_from(student, rollout, cut, key_s, **kw)
  table = student.embedder.embedding[...]  # [V, D]: input embeddings
  ot = window_ot_distance(
      jnp.take(table, tw.response, axis=0),
      tw.response_mask,
      jnp.take(table, sw.response, axis=0),
      sw.response_mask,
      epsilon=cfg.ot_epsilon,
      max_iterations=cfg.ot_iterations,
      threshold=cfg.ot_threshold,
  ).reshape(b, n)
  valid &= (tw.response_mask[:, 0] & sw.response_mask[:, 0]).reshape(b, n)
  high = high_ot(ot, valid, cfg.ot_quantile)
  out = {
      CAND_INDEX: index,
      CAND_VALID: valid,
      CAND_SCORE: jnp.take_along_axis(score, index, axis=1),
      OT: jnp.where(valid, ot, 0.0),
      HIGH_OT: high,
  }
  if cfg.uses_segments:
    rows, rows_valid = trajectory_rows(
        ot.reshape(-1),
        high.reshape(-1),
        trajectory_budget(b * n, cfg.ot_quantile),
    )
    window_mask = jnp.take(tw.response_mask, rows, axis=0) & rows_valid[:, None]
    window = jnp.take(tw.response, rows, axis=0)

    def segment(prefix: Rollout):
      """[prefix | the teacher's window] ids and mask of the chosen rows."""
      return (
          jnp.concatenate([jnp.take(prefix.prompt, rows, axis=0), window], 1),
          jnp.concatenate(
              [jnp.take(prefix.prompt_mask, rows, axis=0), window_mask], 1
          ),
      )

    # The student is teacher-forced along the teacher's window after its
    # own prefix (sw's: the same cut of the student's sequence), the
    # teacher after its own (tw's; the same as sw's without a context).
    out[base.SEGMENT_TOKENS], out[base.SEGMENT_MASK] = segment(sw)
    out[base.SEGMENT_RESPONSE_MASK] = window_mask
    if teacher_rollout is not None:
      (
          out[base.TEACHER_SEGMENT_TOKENS],
          out[base.TEACHER_SEGMENT_MASK],
      ) = segment(tw)
  return jax.lax.stop_gradient(out)
