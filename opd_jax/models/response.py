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
"""Hidden states aligned with the response tokens they predict."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from opd_jax.models import moe


def response_hidden(
    model, tokens: jax.Array, mask: jax.Array, response_len: int
) -> jax.Array:
  """Hidden states [B, T, D] that predict the last `response_len` tokens.

  The output at position i predicts token i + 1, so response token t (at
  position P + t of the [B, P + T] `tokens`) is predicted by the hidden
  state at P + t - 1. The trainer's step, SFT and the diagnostics all score
  responses through this one alignment.

  Args:
    model: a `Transformer`.
    tokens: int32 [B, P + T] prompt and response ids.
    mask: bool [B, P + T], False on padding.
    response_len: T.

  Returns:
    [B, T, D] final-norm hidden states.
  """
  return response_hidden_and_router(model, tokens, mask, response_len)[0]


def response_hidden_and_router(
    model, tokens: jax.Array, mask: jax.Array, response_len: int
) -> tuple[jax.Array, moe.RouterStats | None]:
  """`response_hidden` and the forward's router sums (None if dense).

  The router's load-balancing loss of the whole sequences (prompt and
  response, padding excluded, as transformers computes it for a forward
  with labels) is `moe.balance_loss` of the sums.
  """
  out = model(tokens, attention_mask=mask, return_logits=False)
  prompt_len = tokens.shape[1] - response_len
  return out.hidden[:, prompt_len - 1 : -1], out.router_stats


def map_row_groups_with_sums(
    fn: Callable[..., tuple[jax.Array, object]],
    groups: int,
    *rows: jax.Array,
    remat: bool = False,
) -> tuple[jax.Array, object]:
  """`map_row_groups` for an `fn` returning (rows [b, ...], sums pytree).

  The rows are put back in row order as `map_row_groups` does; the sums
  (e.g. a MoE student's `moe.RouterStats`) are added over the groups, so
  a loss made of them is the whole batch's, whatever `groups` is.
  """
  b = rows[0].shape[0]
  if groups == 1:
    return fn(*rows)
  if b % groups:
    raise ValueError(f"row groups: {groups} groups do not divide {b} rows")
  # [B, ...] -> [groups, B / groups, ...], row i * groups + g -> [g, i].
  split = lambda x: jnp.swapaxes(
      x.reshape(b // groups, groups, *x.shape[1:]), 0, 1
  )
  body = jax.checkpoint(lambda xs: fn(*xs)) if remat else (lambda xs: fn(*xs))
  out, sums = jax.lax.map(body, tuple(split(x) for x in rows))
  out = jnp.swapaxes(out, 0, 1).reshape(b, *out.shape[2:])
  return out, jax.tree.map(lambda s: jnp.sum(s, axis=0), sums)


def map_row_groups(
    fn: Callable[..., jax.Array],
    groups: int,
    *rows: jax.Array,
    remat: bool = False,
) -> jax.Array:
  """`fn` over `groups` groups of rows, one group's activations live at a time.

  Row r of every [B, ...] input belongs to group r % groups (strided, so
  that under a batch-sharded mesh each group keeps B / groups rows spread
  over every batch shard, as the whole batch was). The groups run one after
  another (`lax.map`); the outputs are put back in row order, so
  `map_row_groups(fn, g, *rows)` equals `fn(*rows)` for any g dividing B,
  up to float32 rounding, whenever `fn` treats rows independently (a
  transformer's forward does).

  With `remat=True` each group is rematerialised (`jax.checkpoint`): under
  differentiation only the group's inputs are kept, and the backward pass
  recomputes one group's forward at a time, so the trunk's live
  activations are those of B / groups rows (what gradient accumulation
  over micro-batches would keep) while the loss still sees the whole
  batch: selections over the batch (TIP's quantiles, TSD-KD's openers)
  and the loss's normalisation are unchanged.

  Args:
    fn: maps [B / groups, ...] arrays to one [B / groups, ...] array.
    groups: the number of row groups; must divide B.
    *rows: [B, ...] arrays.
    remat: rematerialise each group under differentiation.

  Returns:
    fn's output for all B rows, [B, ...].
  """
  # No sums: the same grouped map with an empty pytree beside the rows.
  out, _ = map_row_groups_with_sums(
      lambda *xs: (fn(*xs), ()), groups, *rows, remat=remat
  )
  return out
