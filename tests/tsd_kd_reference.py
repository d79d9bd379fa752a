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
"""TSD-KD's sets and Plackett–Luce loss in numpy, for the tests.

`inputs` draws entropies and a ragged mask; the `np_*` functions are the
paper's definitions and loops transcribing the released code
(kmswin1/TSD-KD).
"""

import numpy as np

B, T, K = 4, 64, 5


def inputs(seed, b=B, t=T):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(1, t + 1, size=b)
  lengths[0] = t
  mask = np.arange(t)[None, :] < lengths[:, None]
  hs = (rng.random((b, t)) * 3).astype(np.float32)
  ht = (rng.random((b, t)) * 3).astype(np.float32)
  return hs, ht, mask, lengths


def np_opener(hs, mask, c):
  """Paper definition: positions up to m* = min{m: cum fraction >= c}."""
  out = np.zeros_like(mask)
  for b in range(hs.shape[0]):
    valid = np.flatnonzero(mask[b])
    e = hs[b, valid].astype(np.float64)
    if e.sum() == 0:
      out[b, valid] = True
      continue
    frac = np.cumsum(e) / e.sum()
    m_star = int(np.argmax(frac >= c))
    out[b, valid[: m_star + 1]] = True
  return out


def np_opener_code(hs, mask, c):
  """The released code: one prefix length from the flattened batch."""
  flat = hs[mask].astype(np.float64)
  frac = np.cumsum(flat / flat.sum())
  n_star = int(np.argmax(frac >= c))
  return mask & (np.arange(hs.shape[1])[None, :] < n_star)


def np_opener_groups(hs, mask, c, rows):
  """The released code run on each micro-batch of `rows` rows in turn."""
  parts = [
      np_opener_code(hs[i : i + rows], mask[i : i + rows], c)
      for i in range(0, hs.shape[0], rows)
  ]
  return np.concatenate(parts)


def np_em_quantile(hs, mask, ratio, rows=None):
  """The code's EM set: entropies >= torch.quantile(valid, 1 - ratio), per
  micro-batch of `rows` rows (pads excluded)."""
  rows = rows or hs.shape[0]
  out = np.zeros_like(mask)
  for i in range(0, hs.shape[0], rows):
    h, m = hs[i : i + rows], mask[i : i + rows]
    if m.any():
      q = np.quantile(h[m].astype(np.float64), 1.0 - ratio)
      out[i : i + rows] = m & (h >= q)
  return out


def np_pl_nll(s, reverse=True):
  """-log P_PL of the given order (suffix sums) or its code mirror."""
  s = s - s.mean()
  total = 0.0
  for j in range(len(s)):
    rest = s[j:] if reverse else s[: j + 1]
    total += np.log(np.sum(np.exp(rest))) - s[j]
  return total
