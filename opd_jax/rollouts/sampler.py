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

import dataclasses
import functools
from typing import Any, Sequence

import flax
import jax
import jax.numpy as jnp
from flax import nnx

from opd_jax import sharding
from opd_jax.models import Transformer
from opd_jax.models import cast_floating
from opd_jax.models import split_layers
from opd_jax.models import attention
from opd_jax.rollouts.sampling import Sampling


def default_eos_ids(model_config, tokenizer=None) -> tuple[int, ...]:
  """The ids that end a response: the model config's `eos_token_ids`, else
  the tokenizer's `eos_token_id`, else none (responses run to the budget).

  Examples:
    >>> import types
    >>> default_eos_ids(types.SimpleNamespace(eos_token_ids=[2, 7]))
    (2, 7)
    >>> tok = types.SimpleNamespace(eos_token_id=5)
    >>> default_eos_ids(types.SimpleNamespace(eos_token_ids=()), tok)
    (5,)
  """
  ids = tuple(int(e) for e in model_config.eos_token_ids)
  eos = getattr(tokenizer, "eos_token_id", None)
  return ids or (() if eos is None else (int(eos),))


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
      mixture when sampling from several models); 0 where masked. The
      trainer passes them on as `sampler_logprobs`, the old policy of the
      methods' importance weights (MiniLLM's mixture sampling included).
  """

  prompt: jax.Array
  prompt_mask: jax.Array
  response: jax.Array
  response_mask: jax.Array
  logprobs: jax.Array

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


@dataclasses.dataclass(frozen=True)
class DecodeSettings:
  """The static settings of a sampling program; each distinct one compiles.

  Attributes:
    weights: mixture weights, one per model.
    sampling: the strategy (temperature 0 is greedy).
    max_new_tokens: T, the static response length.
    eos_ids: ids that end a row; the EOS itself is kept in the response mask.
    pad_id: the id written after a row has ended.
    compute_dtype: the dtype the models decode in; None keeps their own.
  """

  weights: tuple[float, ...]
  sampling: Sampling
  max_new_tokens: int
  eos_ids: tuple[int, ...]
  pad_id: int
  compute_dtype: Any = None

  @classmethod
  def of(
      cls, weights, sampling, max_new_tokens, eos_ids, pad_id, compute_dtype
  ) -> DecodeSettings:
    """The settings as hashable Python values, so equal ones share a program."""
    return cls(
        weights=tuple(float(w) for w in weights),
        sampling=sampling,
        max_new_tokens=int(max_new_tokens),
        eos_ids=tuple(int(e) for e in eos_ids),
        pad_id=int(pad_id),
        compute_dtype=(
            None if compute_dtype is None else jnp.dtype(compute_dtype)
        ),
    )


def check_max_new_tokens(max_new_tokens: int, caller: str) -> None:
  """Raises a ValueError naming `caller` unless the length is at least 1."""
  if max_new_tokens < 1:
    raise ValueError(
        f"{caller}: max_new_tokens must be >= 1, got {max_new_tokens}"
    )


@functools.lru_cache(maxsize=64)
def compiled(impl, graphdefs, settings: DecodeSettings, *static):
  """`impl` jitted with the models' structure and static settings bound.

  One program per (impl, graphdefs, settings, static); the parameters and
  inputs are its traced arguments, so new weights reuse it.
  """
  return jax.jit(functools.partial(impl, graphdefs, settings, *static))


def _mixture_log_probs(
    per_model: Sequence[jax.Array], weights: Sequence[float]
) -> jax.Array:
  """log(sum_i w_i p_i) from per-model log-probs [B, V]."""
  if len(per_model) == 1:
    return per_model[0]
  stacked = jnp.stack(per_model)  # [M, B, V]
  log_w = jnp.log(jnp.asarray(weights, jnp.float32))[:, None, None]
  return jax.nn.logsumexp(stacked + log_w, axis=0)


# Decode steps of the first segment; each later segment doubles the cache.
_FIRST_SEGMENT = 128


def cache_schedule(
    max_new_tokens: int, first: int = _FIRST_SEGMENT
) -> tuple[int, ...]:
  """Response lengths at which the sampler's KV cache grows, last = T - 1.

  Decode step i (1 <= i < T) writes the cache slot P + i - 1, so a segment
  of steps up to c runs on a cache of P + c slots. Attention reads the
  whole buffer every step; doubling it by segments keeps that read within
  2x of the filled part (instead of P + T from the first step), at the cost
  of one compiled decode loop and one copy of the cache per segment.
  """
  last = max_new_tokens - 1
  bounds, c = [], first
  while c < last:
    bounds.append(c)
    c *= 2
  return (*bounds, last)


def decode(
    models: Sequence[Transformer],
    caches: Sequence[attention.KVCache],
    first_log_probs: Sequence[jax.Array],
    key: jax.Array,
    settings: DecodeSettings,
    *,
    schedule: tuple[int, ...],
    base_len: int | Sequence[int],
) -> Rollout:
  """The decode loop after a prefill; returns a Rollout without its prompt.

  Args:
    models: the sampling models (layers split), already in the compute dtype.
    caches: one KVCache per model, filled up to its `base_len` slots and with
      room for `base_len + schedule[0]`.
    first_log_probs: per model, float32 [B, V] log-probs of the first token.
    key: PRNG key; response position i draws with `fold_in(key, i)`.
    settings: the mixture weights, strategy, length and ids (its
      `compute_dtype` is already applied to `models`).
    schedule: `cache_schedule(max_new_tokens)`: before segment n > 0 the
      caches grow to `base_len + schedule[n]` slots.
    base_len: cache slots in use before the first decode step: one for all
      models, or one per model (models that prefilled prompts of their own
      widths, e.g. a teacher after its context).

  Returns:
    A Rollout whose `prompt` / `prompt_mask` are empty [B, 0] placeholders.
  """
  sampling, pad_id = settings.sampling, settings.pad_id
  b = first_log_probs[0].shape[0]
  t = settings.max_new_tokens
  if isinstance(base_len, int):
    base_len = (base_len,) * len(models)
  eos = jnp.asarray(settings.eos_ids, jnp.int32)

  def choose(i, per_model, done):
    mix = _mixture_log_probs(per_model, settings.weights)
    token = sampling.get_next_tokens(mix, jax.random.fold_in(key, i))
    is_eos = jnp.isin(token, eos)
    gather = lambda lp: jnp.take_along_axis(lp, token[:, None], -1)[:, 0]
    valid = ~done
    return (
        jnp.where(valid, token, pad_id),
        valid,
        done | is_eos,
        jnp.where(valid, gather(mix), 0.0),
    )

  def write(bufs, i, values):
    return tuple(buf.at[:, i].set(v) for buf, v in zip(bufs, values))

  bufs = (
      jnp.full((b, t), pad_id, jnp.int32),
      jnp.zeros((b, t), bool),
      jnp.zeros((b, t), jnp.float32),
  )
  token, valid, done, lp = choose(
      0, list(first_log_probs), jnp.zeros((b,), bool)
  )
  bufs = write(bufs, 0, (token, valid, lp))

  def body(carry):
    i, token, caches, done, bufs = carry
    per_model, new_caches = [], []
    for m, c in zip(models, caches):
      out = m(token[:, None], cache=c)
      new_caches.append(out.cache)
      per_model.append(sampling.log_probs(out.logits[:, 0]))
    token, valid, done, lp = choose(i, per_model, done)
    return (
        i + 1,
        token,
        new_caches,
        done,
        write(bufs, i, (token, valid, lp)),
    )

  carry = (jnp.int32(1), token, list(caches), done, bufs)
  for n, bound in enumerate(schedule):
    if n:
      carry = (
          *carry[:2],
          [
              attention.extend_cache(c, p + bound)
              for c, p in zip(carry[2], base_len)
          ],
          *carry[3:],
      )
    carry = jax.lax.while_loop(
        lambda c, bound=bound: (c[0] <= bound) & ~jnp.all(c[3]), body, carry
    )
  response, mask, logprobs = carry[4]
  empty = jnp.zeros((b, 0), jnp.int32)
  return Rollout(
      prompt=empty,
      prompt_mask=empty.astype(bool),
      response=response,
      response_mask=mask,
      logprobs=logprobs,
  )


def decoding_models(graphdefs, states, compute_dtype) -> list[Transformer]:
  """The models of a decode loop, in the compute dtype, layers split.

  Layer weights are sliced out of their stacks once, not every step of the
  loop (`models.decode.split_layers`, which on one CPU device also sets up
  the C++ kernel paths); under a mesh of several devices they are first
  gathered over the data-parallel axes, once for all the loops
  (`sharding.gather_data_parallel`).
  """
  states = cast_floating(states, compute_dtype)
  if not sharding.single_device():
    mesh = sharding.current_mesh()
    states = [sharding.gather_data_parallel(s, mesh) for s in states]
  return [split_layers(nnx.merge(g, s)) for g, s in zip(graphdefs, states)]


def _sample_impl(
    graphdefs,
    settings: DecodeSettings,
    first_segment: int,
    states,
    prompts,
    prompt_masks,
    key,
):
  models = decoding_models(graphdefs, states, settings.compute_dtype)
  schedule = cache_schedule(settings.max_new_tokens, first_segment)
  caches, first_lp = [], []
  for m, prompt, prompt_mask in zip(models, prompts, prompt_masks):
    # The head runs on the last position only: the prompt's other logits
    # are never used.
    b, p = prompt.shape
    out = m(
        prompt,
        attention_mask=prompt_mask,
        cache=m.init_cache(b, p + schedule[0]),
        prefill=True,
        return_logits=False,
    )
    caches.append(out.cache)
    last_logits = m.apply_head(out.hidden[:, -1])
    first_lp.append(settings.sampling.log_probs(last_logits))
  out = decode(
      models,
      caches,
      first_lp,
      key,
      settings,
      schedule=schedule,
      base_len=tuple(p.shape[1] for p in prompts),
  )
  return out.replace(prompt=prompts[0], prompt_mask=prompt_masks[0])


def check_models(
    models: Transformer | Sequence[Transformer],
    weights: Sequence[float] | None,
    caller: str,
) -> tuple[tuple[Transformer, ...], tuple[float, ...]]:
  """The sampling models as a tuple and their mixture weights (uniform)."""
  models = (models,) if isinstance(models, Transformer) else tuple(models)
  if not models:
    raise ValueError(f"{caller}: `models` is empty")
  if weights is None:
    weights = (1.0 / len(models),) * len(models)
  weights = tuple(float(w) for w in weights)
  if (
      len(weights) != len(models)
      or any(w < 0 for w in weights)
      or not (abs(sum(weights) - 1.0) < 1e-6)
  ):
    raise ValueError(
        f"{caller}: weights must be {len(models)} non-negative numbers"
        f" summing to 1, got {weights}"
    )
  vocab = {m.config.vocab_size for m in models}
  if len(vocab) > 1:
    raise ValueError(
        f"{caller}: mixed models have different vocabularies {vocab}"
    )
  return models, weights


def jitted_sampler(
    graphdefs,
    weights,
    sampling: Sampling,
    max_new_tokens: int,
    eos_ids,
    pad_id: int,
    compute_dtype=None,
):
  """The jitted program `sample` runs: fn(states, prompts, prompt_masks,
  key), with one [B, P_m] prompt and mask per model (tuples).

  For compiling ahead (the dry run's memory figures) with the models'
  `graphdefs` and abstract `states`; `sample` is the way to run it.
  """
  settings = DecodeSettings.of(
      weights, sampling, max_new_tokens, eos_ids, pad_id, compute_dtype
  )
  return compiled(_sample_impl, tuple(graphdefs), settings, _FIRST_SEGMENT)


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
  parameters are traced arguments, so new weights reuse it. Decoding runs
  in segments (`cache_schedule`): the KV cache starts with room for 128 new
  tokens and doubles, so each step attends over at most twice the filled
  cache. Tokens are drawn by `Sampling.get_next_tokens` with the key
  `fold_in(key, i)` for response position i.

  Args:
    models: the policy (the student), or several models whose next-token
      distributions are mixed: `[student, teacher]` with `weights=(1 - a, a)`
      samples from `a * p_teacher + (1 - a) * p_student` (MiniLLM), and
      `[teacher]` alone is sequence-level KD.
    prompt: int32 [B, P], left-padded; every row needs at least one real token.
      Or a sequence of such prompts, one per model, each of its own width
      P_m: a mixture whose teacher conditions on a context the student does
      not see (row b of each is the same example).
    prompt_mask: bool [B, P], False on padding (a sequence, one per model,
      with a sequence of prompts).
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
    A Rollout with response [B, T], response_mask and logprobs; its prompt
    is the first model's.
  """
  models, weights = check_models(models, weights, "sample")
  prompts, masks = _per_model_prompts(prompt, prompt_mask, len(models))
  check_max_new_tokens(max_new_tokens, "sample")
  graphdefs, states = zip(*(nnx.split(m) for m in models))
  fn = jitted_sampler(
      graphdefs,
      weights,
      sampling,
      max_new_tokens,
      eos_ids,
      pad_id,
      compute_dtype,
  )
  return fn(tuple(states), prompts, masks, key)


def _per_model_prompts(prompt, prompt_mask, n: int):
  """(prompts, masks): one int32 / bool [B, P_m] pair per model."""
  shared = not isinstance(prompt, (list, tuple))
  if shared != (not isinstance(prompt_mask, (list, tuple))):
    raise ValueError(
        "sample: prompt and prompt_mask must both be arrays or both be"
        " sequences of arrays (one per model)"
    )
  prompts = (prompt,) * n if shared else tuple(prompt)
  masks = (prompt_mask,) * n if shared else tuple(prompt_mask)
  if len(prompts) != n or len(masks) != n:
    raise ValueError(
        f"sample: {n} model(s) need {n} prompt(s) and mask(s), got"
        f" {len(prompts)} and {len(masks)}"
    )
  prompts = tuple(jnp.asarray(p, jnp.int32) for p in prompts)
  masks = tuple(jnp.asarray(m, bool) for m in masks)
  for i, (p, m) in enumerate(zip(prompts, masks)):
    if p.ndim != 2 or p.shape != m.shape or p.shape[0] != prompts[0].shape[0]:
      which = "" if shared else f"[{i}]"
      raise ValueError(
          f"sample: prompt{which} and prompt_mask{which} must both be [B, P]"
          f" (the same B for every model), got {p.shape} and {m.shape}"
      )
  return prompts, masks
