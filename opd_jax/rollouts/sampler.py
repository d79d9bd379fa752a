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
"""The jitted rollout sampler: prefill, then a `lax.while_loop` of one-token decode steps."""

from __future__ import annotations

import functools
from typing import Sequence

import flax
import jax
import jax.numpy as jnp
from flax import nnx

from opd_jax.models import Transformer
from opd_jax.rollouts.sampling import Sampling


@flax.struct.dataclass
class Rollout:
  """Sampled responses to a batch of left-padded prompts.

  Attributes:
    prompt: int32 [B, P] prompt ids, left-padded.
    prompt_mask: bool [B, P], False on padding.
    response: int32 [B, T] sampled ids; `pad_id` after a row's EOS.
    response_mask: bool [B, T], True up to and including the first EOS.
    logprobs: float32 [B, T] log-probability of each sampled token under the
      sampling distribution (tempered, before top-k/top-p truncation; the
      mixture when sampling from several models); 0 where masked.
    policy_logprobs: float32 [B, T] the same under the first model alone (the
      student), for importance weights of mixture sampling.
  """

  prompt: jax.Array
  prompt_mask: jax.Array
  response: jax.Array
  response_mask: jax.Array
  logprobs: jax.Array
  policy_logprobs: jax.Array

  @property
  def tokens(self) -> jax.Array:
    """Prompt and response ids [B, P + T]."""
    return jnp.concatenate([self.prompt, self.response], axis=1)

  @property
  def mask(self) -> jax.Array:
    """Validity of `tokens` [B, P + T]."""
    return jnp.concatenate([self.prompt_mask, self.response_mask], axis=1)

  @property
  def lengths(self) -> jax.Array:
    """Response lengths [B] (EOS included)."""
    return self.response_mask.sum(axis=1)


def _mixture_log_probs(
    per_model: Sequence[jax.Array], weights: Sequence[float]
) -> jax.Array:
  """log(sum_i w_i p_i) from per-model log-probs [B, V]."""
  if len(per_model) == 1:
    return per_model[0]
  stacked = jnp.stack(per_model)  # [M, B, V]
  log_w = jnp.log(jnp.asarray(weights, jnp.float32))[:, None, None]
  return jax.nn.logsumexp(stacked + log_w, axis=0)


def _draw(sampling: Sampling, log_probs: jax.Array, key: jax.Array):
  """Draws ids [B] from log-probabilities [B, V].

  Without top-k / top-p truncation, inverts the CDF with one uniform per row
  instead of `jax.random.categorical`'s V Gumbel draws per row: at V = 32000
  the Gumbel noise costs more than the rest of a small model's decode step.
  """
  if sampling.greedy or sampling.top_k or sampling.top_p < 1.0:
    return sampling.get_next_tokens(log_probs, key)
  cdf = jnp.cumsum(jnp.exp(log_probs), axis=-1)  # [B, V]
  u = jax.random.uniform(key, log_probs.shape[:-1] + (1,)) * cdf[..., -1:]
  # The first id whose cumulative mass reaches u; zero-mass ids are never it.
  token = jnp.sum(cdf < u, axis=-1, dtype=jnp.int32)
  return jnp.minimum(token, log_probs.shape[-1] - 1)


def _sample_impl(
    graphdefs, states, prompt, prompt_mask, key, *, weights, sampling,
    max_new_tokens, eos_ids, pad_id, compute_dtype,
):
  if compute_dtype is not None:
    states = jax.tree.map(
        lambda x: x.astype(compute_dtype)
        if jnp.issubdtype(x.dtype, jnp.floating) else x, states)
  models = [nnx.merge(g, s) for g, s in zip(graphdefs, states)]
  b, p = prompt.shape
  t = max_new_tokens
  caches = []
  last_lp = []
  for m in models:
    # The head runs on the last position only: the prompt's other logits
    # are never used.
    out = m(prompt, attention_mask=prompt_mask,
            cache=m.init_cache(b, p + t), return_logits=False)
    caches.append(out.cache)
    last_lp.append(sampling.log_probs(m.apply_head(out.hidden[:, -1])))
  eos = jnp.asarray(eos_ids, jnp.int32)

  def choose(i, per_model, done, key):
    mix = _mixture_log_probs(per_model, weights)
    token = _draw(sampling, mix, jax.random.fold_in(key, i))
    is_eos = jnp.isin(token, eos)
    gather = lambda lp: jnp.take_along_axis(lp, token[:, None], -1)[:, 0]
    valid = ~done
    return (jnp.where(valid, token, pad_id), valid, done | is_eos,
            jnp.where(valid, gather(mix), 0.0),
            jnp.where(valid, gather(per_model[0]), 0.0))

  response = jnp.full((b, t), pad_id, jnp.int32)
  mask = jnp.zeros((b, t), bool)
  logprobs = jnp.zeros((b, t), jnp.float32)
  policy_lp = jnp.zeros((b, t), jnp.float32)
  done = jnp.zeros((b,), bool)

  def write(bufs, i, values):
    return tuple(buf.at[:, i].set(v) for buf, v in zip(bufs, values))

  token, valid, done, lp, plp = choose(0, last_lp, done, key)
  bufs = write((response, mask, logprobs, policy_lp), 0,
               (token, valid, lp, plp))

  def cond(carry):
    i, _, _, done, _ = carry
    return (i < t) & ~jnp.all(done)

  def body(carry):
    i, token, caches, done, bufs = carry
    per_model, new_caches = [], []
    for m, c in zip(models, caches):
      out = m(token[:, None], cache=c)
      new_caches.append(out.cache)
      per_model.append(sampling.log_probs(out.logits[:, 0]))
    token, valid, done, lp, plp = choose(i, per_model, done, key)
    return i + 1, token, new_caches, done, write(bufs, i, (token, valid, lp,
                                                           plp))

  _, _, _, _, bufs = jax.lax.while_loop(
      cond, body, (jnp.int32(1), token, caches, done, bufs))
  response, mask, logprobs, policy_lp = bufs
  return Rollout(prompt=prompt, prompt_mask=prompt_mask, response=response,
                 response_mask=mask, logprobs=logprobs,
                 policy_logprobs=policy_lp)


@functools.lru_cache(maxsize=32)
def _compiled(graphdefs, weights, sampling, max_new_tokens, eos_ids, pad_id,
              compute_dtype):
  return jax.jit(functools.partial(
      _sample_impl, graphdefs, weights=weights, sampling=sampling,
      max_new_tokens=max_new_tokens, eos_ids=eos_ids, pad_id=pad_id,
      compute_dtype=compute_dtype))


def sample(
    models: Transformer | Sequence[Transformer],
    prompt: jax.Array,
    prompt_mask: jax.Array,
    key: jax.Array,
    *,
    max_new_tokens: int,
    sampling: Sampling = Sampling(),
    eos_ids: Sequence[int] = (),
    pad_id: int = 0,
    weights: Sequence[float] | None = None,
    compute_dtype=None,
) -> Rollout:
  """Samples `max_new_tokens` (at most) after each left-padded prompt.

  One compiled program per (model structure, sampling, lengths); the
  parameters are traced arguments, so new weights reuse it.

  Args:
    models: the policy (the student), or several models whose next-token
      distributions are mixed: `[student, teacher]` with `weights=(1 - a, a)`
      samples from `a * p_teacher + (1 - a) * p_student` (MiniLLM), and
      `[teacher]` alone is sequence-level KD.
    prompt: int32 [B, P], left-padded; every row needs at least one real token.
    prompt_mask: bool [B, P], False on padding.
    key: PRNG key; derive per-step keys with `jax.random.fold_in(root, step)`.
    max_new_tokens: T, the static response length.
    sampling: the strategy (temperature 0 is greedy).
    eos_ids: ids that end a row; the EOS itself is kept in the response mask.
    pad_id: the id written after a row has ended.
    weights: mixture weights, one per model (default: uniform).
    compute_dtype: e.g. `jnp.bfloat16` to run the models with parameters
      and KV cache cast to it (matmuls accumulate in float32; softmaxes and
      log-probs stay float32). Decoding a small model on CPU is bound by
      reading the weights, so this about halves its time. None (default)
      keeps the models' own dtype.

  Returns:
    A Rollout with response [B, T], response_mask, logprobs and
    policy_logprobs.
  """
  models = (models,) if isinstance(models, Transformer) else tuple(models)
  if not models:
    raise ValueError("sample: `models` is empty")
  if weights is None:
    weights = (1.0 / len(models),) * len(models)
  weights = tuple(float(w) for w in weights)
  if len(weights) != len(models) or any(w < 0 for w in weights) or not (
      abs(sum(weights) - 1.0) < 1e-6):
    raise ValueError(
        f"sample: weights must be {len(models)} non-negative numbers summing"
        f" to 1, got {weights}")
  vocab = {m.config.vocab_size for m in models}
  if len(vocab) > 1:
    raise ValueError(f"sample: mixed models have different vocabularies {vocab}")
  if prompt.ndim != 2 or prompt.shape != prompt_mask.shape:
    raise ValueError(
        f"sample: prompt and prompt_mask must both be [B, P], got"
        f" {prompt.shape} and {prompt_mask.shape}")
  if max_new_tokens < 1:
    raise ValueError(f"sample: max_new_tokens must be >= 1, got {max_new_tokens}")
  graphdefs, states = zip(*(nnx.split(m) for m in models))
  fn = _compiled(tuple(graphdefs), weights, sampling, int(max_new_tokens),
                 tuple(int(e) for e in eos_ids), int(pad_id),
                 None if compute_dtype is None else jnp.dtype(compute_dtype))
  return fn(tuple(states), jnp.asarray(prompt, jnp.int32),
            jnp.asarray(prompt_mask, bool), key)
