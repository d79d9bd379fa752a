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
"""One matmul of rows grouped by expert against per-group weights (dropless MoE).

`grouped_matmul(x, w, group_sizes)` multiplies the rows of group g (rows
sorted by group) by w[g]. On GPU and TPU it is `jax.lax.ragged_dot`, which
lowers to XLA's ragged dot there. On CPU, `ragged_dot` lowers to a dense
masked product over every group ([G, M, K] operand, G times the work), so
there it is a loop over row tiles instead: each visit multiplies one tile of
`block` rows by the weights of one group, and only tiles that hold rows of
a group are visited (a dynamic trip count), so the work is the routed rows'
(plus at most one partial tile per group), and no [G, M, K] tensor exists.
Its gradient is the same loop (dx) and its transpose (dw), by custom VJP.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def block_rows(rows: int, groups: int) -> int:
  """Tile height of the CPU loop for `rows` rows over `groups` groups.

  A quarter of the mean group size (a power of two in [8, 128]): a group's
  rows start and end inside tiles, and each of its (at most two) partial
  tiles is computed whole, so the rows computed are at most (rows + 2 *
  groups * tile); at a quarter of the mean that is about 1.25-1.5x the
  rows routed, while the tiles stay tall enough for efficient dots.
  """
  mean = max(1, -(-rows // max(groups, 1)))
  quarter = max(1, mean // 4)
  return int(min(128, max(8, 1 << (quarter.bit_length() - 1))))


def grouped_matmul(
    x: jax.Array, w: jax.Array, group_sizes: jax.Array, *, platform=None
) -> jax.Array:
  """out[r] = x[r] @ w[g(r)] for rows x sorted by group.

  .. math::
    \\mathrm{out}_r = x_r W_{g(r)}, \\quad g(r) = \\min\\{g :
    r < \\textstyle\\sum_{h \\le g} n_h\\}

  Products accumulate in float32 (float64 for float64 operands); the
  result has x's dtype. Rows past sum(group_sizes) are zero.

  Args:
    x: [M, K] rows, the n_0 rows of group 0 first, then group 1's, ...
    w: [G, K, N] one weight matrix per group.
    group_sizes: int32 [G], n_g >= 0, sum <= M.
    platform: 'cpu' selects the tile loop, anything else
      `jax.lax.ragged_dot`; default `jax.default_backend()`.

  Returns:
    [M, N] in x's dtype.
  """
  _check(x, w, group_sizes)
  platform = platform or jax.default_backend()
  group_sizes = group_sizes.astype(jnp.int32)
  if platform != "cpu":
    acc = jnp.promote_types(jnp.result_type(x, w), jnp.float32)
    return jax.lax.ragged_dot(
        x, w, group_sizes, preferred_element_type=acc
    ).astype(x.dtype)
  return _loop_gmm(x, w, group_sizes)


def _check(x, w, group_sizes) -> None:
  if x.ndim != 2 or w.ndim != 3 or group_sizes.shape != (w.shape[0],):
    raise ValueError(
        "grouped_matmul: expected x [M, K], w [G, K, N], group_sizes [G];"
        f" got {x.shape}, {w.shape}, {group_sizes.shape}"
    )
  if x.shape[1] != w.shape[1]:
    raise ValueError(
        f"grouped_matmul: x has {x.shape[1]} columns but w's groups have"
        f" {w.shape[1]} rows ({x.shape} against {w.shape})"
    )


def _plan(group_sizes, rows: int, block: int):
  """Which (group, tile) each loop visit computes.

  Group g holds rows [s_g, e_g); it covers tiles floor(s_g / b) ..
  floor((e_g - 1) / b), so an empty group costs nothing and the visits
  number at most (tiles + G - 1): two consecutive groups share at most one
  tile.

  Returns:
    (group [V], tile [V], count, starts [G], ends [G]); visits past `count`
    are padding.
  """
  g = group_sizes.shape[0]
  tiles = -(-rows // block)
  ends = jnp.cumsum(group_sizes)
  starts = ends - group_sizes
  first = starts // block
  last = (ends - 1) // block
  visits = jnp.where(group_sizes > 0, last - first + 1, 0)
  visit_end = jnp.cumsum(visits)
  visit_start = visit_end - visits
  i = jnp.arange(tiles + g - 1, dtype=jnp.int32)
  group = jnp.minimum(
      jnp.searchsorted(visit_end, i, side="right"), g - 1
  ).astype(jnp.int32)
  tile = first[group] + i - visit_start[group]
  return group, tile, visit_end[-1], starts, ends


def _pad_rows(x, rows: int):
  return jnp.pad(x, ((0, rows - x.shape[0]), (0, 0)))


def _tile_mask(t, g, starts, ends, block):
  rows = t * block + jnp.arange(block, dtype=jnp.int32)
  return (rows >= starts[g]) & (rows < ends[g])


def _acc_dtype(*arrays):
  return jnp.promote_types(jnp.result_type(*arrays), jnp.float32)


def _loop_product(x, w, group_sizes, *, transpose_w: bool):
  """The CPU tile loop: x [M, K] by w [G, K, N] (or w^T of [G, N, K])."""
  m = x.shape[0]
  n = w.shape[1] if transpose_w else w.shape[2]
  block = block_rows(m, w.shape[0])
  padded = -(-m // block) * block
  xp = _pad_rows(x, padded)
  group, tile, count, starts, ends = _plan(group_sizes, m, block)
  contract = ((1,), (1,)) if transpose_w else ((1,), (0,))
  acc = _acc_dtype(x, w)

  def visit(i, out):
    g, t = group[i], tile[i]
    xt = jax.lax.dynamic_slice_in_dim(xp, t * block, block)  # [b, K]
    wg = jax.lax.dynamic_index_in_dim(w, g, keepdims=False)
    y = jax.lax.dot_general(
        xt, wg, (contract, ((), ())), preferred_element_type=acc
    ).astype(out.dtype)
    keep = _tile_mask(t, g, starts, ends, block)[:, None]
    current = jax.lax.dynamic_slice_in_dim(out, t * block, block)
    return jax.lax.dynamic_update_slice_in_dim(
        out, jnp.where(keep, y, current), t * block, 0
    )

  out = jax.lax.fori_loop(0, count, visit, jnp.zeros((padded, n), x.dtype))
  return out[:m]


def _loop_weight_grad(x, dy, group_sizes, num_groups: int, dtype):
  """dw [G, K, N] = per group, x_g^T dy_g (the tile loop, transposed)."""
  m, k = x.shape
  n = dy.shape[1]
  block = block_rows(m, num_groups)
  padded = -(-m // block) * block
  xp, dyp = _pad_rows(x, padded), _pad_rows(dy, padded)
  group, tile, count, starts, ends = _plan(group_sizes, m, block)
  acc = _acc_dtype(x, dy)

  def visit(i, dw):
    g, t = group[i], tile[i]
    keep = _tile_mask(t, g, starts, ends, block)[:, None]
    xt = jax.lax.dynamic_slice_in_dim(xp, t * block, block)
    xt = jnp.where(keep, xt, jnp.zeros_like(xt))
    dyt = jax.lax.dynamic_slice_in_dim(dyp, t * block, block)
    part = jax.lax.dot_general(
        xt, dyt, (((0,), (0,)), ((), ())), preferred_element_type=acc
    )  # [K, N]
    old = jax.lax.dynamic_index_in_dim(dw, g, keepdims=True)
    return jax.lax.dynamic_update_index_in_dim(dw, old + part[None], g, 0)

  dw = jax.lax.fori_loop(0, count, visit, jnp.zeros((num_groups, k, n), acc))
  return dw.astype(dtype)


@jax.custom_vjp
def _loop_gmm(x, w, group_sizes):
  return _loop_product(x, w, group_sizes, transpose_w=False)


def _loop_gmm_fwd(x, w, group_sizes):
  return _loop_gmm(x, w, group_sizes), (x, w, group_sizes)


def _loop_gmm_bwd(res, dy):
  x, w, group_sizes = res
  dx = _loop_product(dy, w, group_sizes, transpose_w=True).astype(x.dtype)
  dw = _loop_weight_grad(x, dy, group_sizes, w.shape[0], w.dtype)
  return dx, dw, None


_loop_gmm.defvjp(_loop_gmm_fwd, _loop_gmm_bwd)
