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
"""Branching: continue generation from prefixes cut inside existing rollouts."""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from opd_jax.models import Transformer
from opd_jax.models import attention
from opd_jax.rollouts import sampler
from opd_jax.rollouts.sampler import Rollout
from opd_jax.rollouts.sampling import Sampling


def valid_cuts(
    response: jax.Array,
    response_mask: jax.Array,
    cut: jax.Array,
    *,
    eos_ids: Sequence[int] = (),
) -> jax.Array:
  """Which cuts leave a prefix that can be continued.

  Cut `c` keeps the first `c` response tokens. It is valid when those tokens
  are all real (`0 <= c <= L_b`, `L_b` the row's response length) and none
  of them is an EOS: a row that ended cannot be continued, and a cut into
  its padding would continue from garbage. `c = L_b` is valid for a row cut
  off by the length limit (no EOS), and continues it.

  Args:
    response: int32 [B, T] response ids.
    response_mask: bool [B, T], a prefix of True per row.
    cut: int32 [B, N] cut positions.
    eos_ids: ids that end a response.

  Returns:
    bool [B, N].
  """
  t = response.shape[1]
  lengths = response_mask.sum(axis=1).astype(jnp.int32)  # [B]
  is_eos = jnp.isin(response, jnp.asarray(eos_ids, jnp.int32)) & response_mask
  # ends[b, i] = an EOS among the first i tokens, i = 0..T.
  ends = jnp.concatenate(
      [jnp.zeros((response.shape[0], 1), bool), jnp.cumsum(is_eos, axis=1) > 0],
      axis=1,
  )  # [B, T + 1]
  in_range = (cut >= 0) & (cut <= lengths[:, None])
  ended = jnp.take_along_axis(ends, jnp.clip(cut, 0, t), axis=1)
  return in_range & ~ended


@functools.partial(jax.jit, static_argnames=("eos_ids", "pad_id"))
def branch_prefixes(
    prompt: jax.Array,
    prompt_mask: jax.Array,
    response: jax.Array,
    response_mask: jax.Array,
    cut: jax.Array,
    *,
    eos_ids: tuple[int, ...] = (),
    pad_id: int = 0,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The left-padded prefixes `prompt + response[:cut]`, N per row.

  Each prefix is shifted right so that it ends at the last column: the
  static width is `P + T` whatever the cut, and the rows keep the left
  padding the sampler expects. An invalid cut (see `valid_cuts`) yields the
  bare prompt, whose continuation `continue_from` then masks out.

  Args:
    prompt: int32 [B, P] left-padded prompt ids.
    prompt_mask: bool [B, P].
    response: int32 [B, T].
    response_mask: bool [B, T].
    cut: int32 [B, N].
    eos_ids: ids that end a response.
    pad_id: id written on padding.

  Returns:
    (prefix int32 [B*N, P+T], prefix_mask bool [B*N, P+T], valid bool
    [B*N]); row `b*N + n` is row b cut at `cut[b, n]`.
  """
  b, p = prompt.shape
  t = response.shape[1]
  n = cut.shape[1]
  valid = valid_cuts(response, response_mask, cut, eos_ids=eos_ids)
  c = jnp.where(valid, cut, 0).reshape(b * n)  # [B*N]
  tokens = jnp.repeat(jnp.concatenate([prompt, response], axis=1), n, axis=0)
  keep = jnp.concatenate(
      [jnp.repeat(prompt_mask, n, axis=0), jnp.arange(t)[None, :] < c[:, None]],
      axis=1,
  )  # [B*N, P+T]
  # Output column j holds input column j - (T - c): the prefix's last token
  # (input column P + c - 1) lands on the last column.
  src = jnp.arange(p + t)[None, :] - (t - c)[:, None]  # [B*N, P+T]
  inside = src >= 0
  src = jnp.clip(src, 0, p + t - 1)
  mask = inside & jnp.take_along_axis(keep, src, axis=1)
  ids = jnp.where(mask, jnp.take_along_axis(tokens, src, axis=1), pad_id)
  return ids, mask, valid.reshape(b * n)


def branch_cache(
    cache: attention.KVCache, prompt_mask: jax.Array, cut: jax.Array, n: int
) -> attention.KVCache:
  """The cache of each prefix `prompt + response[:cut]`, from the rollout's.

  A key or value at slot s depends only on the tokens up to s (causal
  attention), so the cache of a whole rollout row, written by one forward
  over `prompt + response`, already holds the cache of every prefix of that
  row: the prefix cut at c is the same buffers with the response slots from
  c on masked out. The continuation then writes after the rollout's slots
  (the cache's shared `end`) and takes RoPE positions from c on.

  Args:
    cache: the KVCache of B rows after a forward over [B, P + T] (with room
      for the continuation after slot P + T).
    prompt_mask: bool [B, P].
    cut: int32 [B*N] response tokens kept, row b*N + n cut from row b.
    n: N, cuts per row.

  Returns:
    The KVCache of B*N rows.
  """
  p = prompt_mask.shape[1]
  rep = lambda x: jnp.repeat(x, n, axis=0)
  slots = jnp.arange(cache.length)
  return cache.replace(
      k=tuple(rep(k) for k in cache.k),
      v=tuple(rep(v) for v in cache.v),
      key_mask=rep(cache.key_mask) & (slots[None, :] < p + cut[:, None]),
      next_pos=rep(prompt_mask.sum(axis=1, dtype=jnp.int32)) + cut,
  )


def _continue_impl(
    graphdefs,
    settings: sampler.DecodeSettings,
    states,
    prompt,
    prompt_mask,
    response,
    response_mask,
    cut,
    key,
):
  models = sampler.decoding_models(graphdefs, states, settings.compute_dtype)
  b, p = prompt.shape
  t, n = response.shape[1], cut.shape[1]
  prefix, prefix_mask, valid = branch_prefixes(
      prompt,
      prompt_mask,
      response,
      response_mask,
      cut,
      eos_ids=settings.eos_ids,
      pad_id=settings.pad_id,
  )
  kept = jnp.where(valid, cut.reshape(b * n), 0)  # [B*N]
  rows = jnp.repeat(jnp.arange(b), n)
  tokens = jnp.concatenate([prompt, response], axis=1)
  mask = jnp.concatenate([prompt_mask, response_mask], axis=1)
  schedule = sampler.cache_schedule(settings.max_new_tokens)
  caches, first_lp = [], []
  for m in models:
    if m.config.is_hybrid:
      # A Gated DeltaNet layer keeps one state, the whole rollout's after a
      # forward over it; a prefix's state needs the prefix alone: a fresh
      # prefill of the B*N right-aligned prefixes (exact, N times the FLOPs).
      out = m(
          prefix,
          attention_mask=prefix_mask,
          cache=m.init_cache(b * n, p + t + schedule[0]),
          prefill=True,
          return_logits=False,
      )
      caches.append(out.cache)
      last = out.hidden[:, -1]
    else:
      # One forward over the B rollout rows, not one per prefix (N times
      # fewer prefill FLOPs); each prefix's cache is cut from it.
      out = m(
          tokens,
          attention_mask=mask,
          cache=m.init_cache(b, p + t + schedule[0]),
          prefill=True,
          return_logits=False,
      )
      caches.append(branch_cache(out.cache, prompt_mask, kept, n))
      last = out.hidden[rows, p + kept - 1]  # [B*N, D]: the prefix's last
    first_lp.append(settings.sampling.log_probs(m.apply_head(last)))
  out = sampler.decode(
      models, caches, first_lp, key, settings, schedule=schedule, base_len=p + t
  )
  return _mask_rows(
      out.replace(prompt=prefix, prompt_mask=prefix_mask),
      valid,
      settings.pad_id,
  )


def continue_from(
    models: Transformer | Sequence[Transformer],
    rollout: Rollout,
    cut: jax.Array,
    key: jax.Array,
    *,
    max_new_tokens: int,
    sampling: Sampling = Sampling(),
    eos_ids: Sequence[int] = (),
    pad_id: int = 0,
    weights: Sequence[float] | None = None,
    compute_dtype=None,
) -> Rollout:
  """Samples N continuations of each row from N cuts inside its response.

  Continuation `n` of row `b` is sampled after `prompt[b] + response[b,
  :cut[b, n]]`: the cut-th response token and what follows are replaced by
  fresh draws from `models` (the student, the teacher, or a mixture, as in
  `sample`). Each attention model runs one forward over the B rollout rows
  and every prefix's KV cache is cut from it (`branch_cache`); a hybrid
  (Gated DeltaNet) model prefills each prefix, since its recurrent state
  cannot be cut back to a position; the decode loop is the
  sampler's own (`sampler.decode`: EOS handling, every sampling strategy,
  the key `fold_in(key, i)` for continuation position i).

  Rows whose cut is invalid (negative, into the padding, after the row's
  EOS; see `valid_cuts`) come back fully masked: `response_mask` all False,
  `response` all `pad_id`, log-probs 0. A valid row always has its first
  continuation token in the mask, so `response_mask[:, 0]` tells them apart.

  Args:
    models: the sampling model(s), as in `sample`.
    rollout: the rollouts to branch from; only `prompt`, `prompt_mask`,
      `response` and `response_mask` are read ([B, P] and [B, T]).
    cut: int32 [B, N], number of response tokens kept before each
      continuation (static N).
    key: PRNG key; the same key gives the same continuations.
    max_new_tokens: K, the static continuation length.
    sampling: the strategy (temperature 0 is greedy).
    eos_ids: ids that end a row (also used to reject cuts past an EOS).
    pad_id: id written on padding.
    weights: mixture weights, as in `sample`.
    compute_dtype: as in `sample`.

  Returns:
    A Rollout of B*N rows (row `b*N + n` continues row b from `cut[b, n]`):
    `prompt` [B*N, P+T] is the left-padded prefix, `response` [B*N, K] the
    continuation, with its mask and log-probs.
  """
  cut = jnp.asarray(cut)
  b, t = rollout.response.shape
  if cut.ndim != 2 or cut.shape[0] != b:
    raise ValueError(
        f"continue_from: cut must be [B, N] with B = {b} rows, got {cut.shape}"
    )
  if not jnp.issubdtype(cut.dtype, jnp.integer):
    raise TypeError(f"continue_from: cut must be integer, got {cut.dtype}")
  if rollout.prompt.shape[0] != b or rollout.response_mask.shape != (b, t):
    raise ValueError(
        "continue_from: rollout prompt/response/response_mask rows differ:"
        f" {rollout.prompt.shape}, {rollout.response.shape},"
        f" {rollout.response_mask.shape}"
    )
  sampler.check_max_new_tokens(max_new_tokens, "continue_from")
  models, weights = sampler.check_models(models, weights, "continue_from")
  graphdefs, states = zip(*(nnx.split(m) for m in models))
  settings = sampler.DecodeSettings.of(
      weights, sampling, max_new_tokens, eos_ids, pad_id, compute_dtype
  )
  fn = sampler.compiled(_continue_impl, tuple(graphdefs), settings)
  return fn(
      tuple(states),
      jnp.asarray(rollout.prompt, jnp.int32),
      jnp.asarray(rollout.prompt_mask, bool),
      jnp.asarray(rollout.response, jnp.int32),
      jnp.asarray(rollout.response_mask, bool),
      cut.astype(jnp.int32),
      key,
  )


@functools.partial(jax.jit, static_argnames=("pad_id",))
def _mask_rows(out: Rollout, valid: jax.Array, pad_id: int) -> Rollout:
  """Blanks the continuations of invalid rows."""
  keep = valid[:, None] & out.response_mask
  return out.replace(
      response=jnp.where(keep, out.response, pad_id),
      response_mask=keep,
      logprobs=jnp.where(keep, out.logprobs, 0.0),
  )
