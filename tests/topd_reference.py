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
"""TOPD in float64 numpy, and synthetic stage outputs for method tests."""

import jax.numpy as jnp
import numpy as np

from opd_jax import methods
from opd_jax.methods import topd_stage


def log_softmax(z):
  z = np.asarray(z, np.float64)
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def kl(p_logits, q_logits):
  """KL(p || q) per position, float64."""
  lp, lq = log_softmax(p_logits), log_softmax(q_logits)
  return (np.exp(lp) * (lp - lq)).sum(-1)


def np_candidates(score, mask, rho, n):
  """Top floor(rho L_b) valid positions by score (ties: earlier), at most n."""
  b, t = score.shape
  index = np.zeros((b, n), np.int64)
  valid = np.zeros((b, n), bool)
  for i in range(b):
    length = int(mask[i].sum())
    count = min(int(np.floor(rho * length + 1e-9)), n)
    order = sorted(np.flatnonzero(mask[i]), key=lambda j: (-score[i, j], j))
    for k in range(min(count, n)):
      index[i, k] = order[k]
      valid[i, k] = True
  return index, valid


def np_nds_weights(mask, index, valid, high, w_low):
  weights = np.where(mask, 1.0, 0.0)
  for i in range(index.shape[0]):
    for k in range(index.shape[1]):
      if valid[i, k] and not high[i, k]:
        weights[i, index[i, k]] = w_low
  return weights


def np_opd_term(zs, zt, weights):
  """sum_t w_t KL(pS || pT)_t / sum_t w_t."""
  per = kl(zs, zt)
  return float((weights * per).sum() / weights.sum())


def np_teacher_window_term(zs, zt, mask):
  """Mean over rows with tokens of the row's mean KL(pT || pS)."""
  per = kl(zt, zs)
  rows = [per[i][mask[i]].mean() for i in range(len(mask)) if mask[i].any()]
  return float(np.mean(rows)) if rows else 0.0


def np_student_window_term(zs, zt, mask, index, high, window):
  """Mean over divergent states of KL(pT || pS) over the rollout's window."""
  per = kl(zt, zs)
  means = []
  for i in range(index.shape[0]):
    for k in range(index.shape[1]):
      if not high[i, k]:
        continue
      t0 = index[i, k]
      sel = [
          s for s in range(t0, min(t0 + window, mask.shape[1])) if mask[i, s]
      ]
      if sel:
        means.append(per[i, sel].mean())
  return float(np.mean(means)) if means else 0.0


def synthetic_stage(inputs, *, n=3, m=2, w=5, seed=0, quantile=0.5):
  """`inputs` with random TOPD stage outputs and a random segment.

  Candidates are distinct valid positions per row (row b's last slot is
  invalid), OT values random, high = above the batch quantile; the segment
  has `m` rows of `w` window tokens (the last row shorter).
  """
  rng = np.random.default_rng(seed)
  mask = np.asarray(inputs.mask)
  b, t = mask.shape
  index = np.zeros((b, n), np.int32)
  valid = np.zeros((b, n), bool)
  for i in range(b):
    pos = rng.permutation(np.flatnonzero(mask[i]))[:n]
    index[i, : len(pos)] = pos
    valid[i, : len(pos)] = True
    valid[i, -1] = False
  ot = rng.uniform(0.1, 1.0, (b, n)).astype(np.float32)
  cut = np.quantile(ot[valid], quantile)
  high = valid & (ot > cut)
  ds = inputs.student_hidden.shape[-1]
  dt = inputs.teacher_hidden.shape[-1]
  v = inputs.student_head.shape[1]
  seg_mask = np.ones((m, w), bool)
  seg_mask[-1, w // 2 :] = False
  arr = lambda *s: jnp.asarray(rng.standard_normal(s), jnp.float32)
  segment = methods.Segment(
      student_hidden=arr(m, w, ds),
      teacher_hidden=arr(m, w, dt),
      ids=jnp.asarray(rng.integers(0, v, (m, w)), jnp.int32),
      mask=jnp.asarray(seg_mask),
  )
  extras = {
      topd_stage.CAND_INDEX: jnp.asarray(index),
      topd_stage.CAND_VALID: jnp.asarray(valid),
      topd_stage.CAND_SCORE: jnp.asarray(
          rng.uniform(0, 2, (b, n)), jnp.float32
      ),
      topd_stage.OT: jnp.asarray(np.where(valid, ot, 0.0)),
      topd_stage.HIGH_OT: jnp.asarray(high),
  }
  return inputs.replace(segment=segment, extras=extras)
