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
"""Teacher-forced per-position statistics of rollouts, head chunked over positions."""

from __future__ import annotations

import functools

import flax
import jax
import jax.numpy as jnp
from flax import nnx

from opd_jax.diagnostics import directions
from opd_jax.models import Transformer
from opd_jax.rollouts import Rollout


@flax.struct.dataclass
class PositionStats:
  """What the targeted tree needs at every response position [G, T].

  A node is the prefix before response position t; its candidate children
  are the rollout's own token, the student's top-C tokens and the teacher's
  argmax, in that order (duplicates included; the tree drops them).

  Attributes:
    children: int32 [G, T, C + 2] candidate next-token ids.
    student_log_probs: float32 [G, T, C + 2] student log p of each child.
    teacher_log_probs: float32 [G, T, C + 2] teacher log p of each child.
    log_ratio: float32 [G, T] log pT(y_t) - log pS(y_t) of the taken token.
    kl, l2, cos, gap, rkl_norm: float32 [G, T] full-vocabulary statistics
      (see `directions.distribution_stats`).
  """

  children: jax.Array
  student_log_probs: jax.Array
  teacher_log_probs: jax.Array
  log_ratio: jax.Array
  kl: jax.Array
  l2: jax.Array
  cos: jax.Array
  gap: jax.Array
  rkl_norm: jax.Array


def _score_impl(
    graphdefs, states, tokens, mask, response, *, p, top_c, temperature, chunk
):
  student, teacher = (nnx.merge(g, s) for g, s in zip(graphdefs, states))
  t = response.shape[1]
  # The hidden state at column P - 1 + t predicts response token t.
  hs = student(tokens, attention_mask=mask, return_logits=False).hidden
  ht = teacher(tokens, attention_mask=mask, return_logits=False).hidden
  hs, ht = hs[:, p - 1 : p - 1 + t], ht[:, p - 1 : p - 1 + t]  # [G, T, D]

  def position(args):
    h_s, h_t, y = args  # [G, D], [G, D'], [G]
    ls = jax.nn.log_softmax(student.apply_head(h_s) / temperature, -1)
    lt = jax.nn.log_softmax(teacher.apply_head(h_t) / temperature, -1)
    stats = directions.distribution_stats(ls, lt)
    kids = jnp.concatenate(
        [y[:, None], jax.lax.top_k(ls, top_c)[1], jnp.argmax(lt, -1)[:, None]],
        axis=1,
    ).astype(jnp.int32)
    take = lambda lp: jnp.take_along_axis(lp, kids, -1)
    return (
        kids,
        take(ls),
        take(lt),
        take(lt)[:, 0] - take(ls)[:, 0],
        stats["kl"],
        stats["l2"],
        stats["cos"],
        stats["gap"],
        stats["rkl_norm"],
    )

  # One [G, V] head per position, `chunk` positions at a time: never [G, T, V].
  out = jax.lax.map(
      position,
      (hs.swapaxes(0, 1), ht.swapaxes(0, 1), response.T),
      batch_size=chunk,
  )
  return PositionStats(*(x.swapaxes(0, 1) for x in out))


@functools.lru_cache(maxsize=16)
def _compiled(graphdefs, p, top_c, temperature, chunk):
  return jax.jit(
      functools.partial(
          _score_impl,
          graphdefs,
          p=p,
          top_c=top_c,
          temperature=temperature,
          chunk=chunk,
      )
  )


def score_positions(
    student: Transformer,
    teacher: Transformer,
    rollout: Rollout,
    *,
    top_c: int,
    temperature: float = 1.0,
    chunk: int = 64,
) -> PositionStats:
  """Both models' next-token statistics at every response position.

  Args:
    student: the student.
    teacher: the teacher (same vocabulary).
    rollout: G rollouts of one or more prompts ([G, P], [G, T]).
    top_c: C, how many of the student's most likely tokens are candidates.
    temperature: both distributions are softmax(logits / temperature).
    chunk: positions per head call.

  Returns:
    A `PositionStats` of [G, T] arrays (garbage where the response is
    masked; callers read valid positions only).
  """
  if student.config.vocab_size != teacher.config.vocab_size:
    raise ValueError(
        "score_positions: student and teacher vocabularies differ:"
        f" {student.config.vocab_size} vs {teacher.config.vocab_size}"
    )
  if not 1 <= top_c <= student.config.vocab_size:
    raise ValueError(f"score_positions: top_c must be in [1, V], got {top_c}")
  graphdefs, states = zip(*(nnx.split(m) for m in (student, teacher)))
  fn = _compiled(
      tuple(graphdefs),
      rollout.prompt.shape[1],
      int(top_c),
      float(temperature),
      int(chunk),
  )
  return fn(
      tuple(states),
      rollout.tokens,
      rollout.mask,
      jnp.asarray(rollout.response, jnp.int32),
  )
