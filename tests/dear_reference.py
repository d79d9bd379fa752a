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
"""A brute-force numpy DEAR (decision + evidence tokens), row by row, for tests."""

import fractions

import numpy as np


def floor_frac(x, n):
  f = fractions.Fraction(x).limit_denominator(10_000)
  return (n * f.numerator) // f.denominator


def np_top(scores, valid, count):
  idx = np.flatnonzero(valid)
  order = idx[np.argsort(-scores[idx], kind="stable")]
  out = np.zeros_like(valid)
  out[order[:count]] = True
  return out


def np_relevance(hidden, decision, causal=False, window=None):
  """Brute force over the full [T, T] cosine matrix of one sequence."""
  h = hidden / np.linalg.norm(hidden, axis=-1, keepdims=True)
  cos = h @ h.T  # [T(j), T(i)]
  t = len(h)
  j, i = np.meshgrid(np.arange(t), np.arange(t), indexing="ij")
  ok = decision[None, :] & np.ones((t, t), bool)
  if causal:
    ok &= i < j
  if window is not None:
    ok &= np.abs(i - j) <= window
  return np.where(ok, cos, -np.inf).max(axis=1)


def np_dear(entropy, divergence, hidden, mask, p=0.2, q=0.2, **kw):
  """Reference DEAR for one batch, row by row."""
  dec = np.zeros_like(mask)
  evi = np.zeros_like(mask)
  for b in range(mask.shape[0]):
    n = int(mask[b].sum())
    dec[b] = np_top(entropy[b], mask[b], floor_frac(p, n))
    a = np_relevance(hidden[b], dec[b], **kw)
    rest = mask[b] & ~dec[b]
    has = rest & np.isfinite(a)

    def mm(x, valid):
      if not valid.any() or x[valid].max() == x[valid].min():
        return np.zeros_like(x)
      v = x[valid]
      return np.where(valid, (x - v.min()) / (v.max() - v.min()), 0.0)

    score = np.where(rest, mm(a, has) * (1 + mm(divergence[b], rest)), 0.0)
    # Only tokens with an anchor can be evidence.
    evi[b] = np_top(
        score.astype(np.float32), has, floor_frac(q, int(rest.sum()))
    )
  return dec, evi
