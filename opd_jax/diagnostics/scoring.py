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
    graphdefs,
    states,
    tokens,
    mask,
    teacher_tokens,
    teacher_mask,
    response,
    children,
    *,
    top_c,
    temperature,
    chunk,
):
  student, teacher = (nnx.merge(g, s) for g, s in zip(graphdefs, states))
  t = response.shape[1]
  p, pt = tokens.shape[1] - t, teacher_tokens.shape[1] - t
  # The hidden state at column P - 1 + t predicts response token t; both
  # sequences end with the same response, so the teacher's is Pt - 1 + t.
  hs = student(tokens, attention_mask=mask, return_logits=False).hidden
  ht = teacher(
      teacher_tokens, attention_mask=teacher_mask, return_logits=False
  ).hidden
  hs, ht = hs[:, p - 1 : p - 1 + t], ht[:, pt - 1 : pt - 1 + t]  # [G, T, D]

  def position(args):
    h_s, h_t, y, given = args  # [G, D], [G, D'], [G], [G, C + 2] or None
    ls = jax.nn.log_softmax(student.apply_head(h_s) / temperature, -1)
    lt = jax.nn.log_softmax(teacher.apply_head(h_t) / temperature, -1)
    stats = directions.distribution_stats(ls, lt)
    if given is None:
      kids = jnp.concatenate(
          [
              y[:, None],
              jax.lax.top_k(ls, top_c)[1],
              jnp.argmax(lt, -1)[:, None],
          ],
          axis=1,
      ).astype(jnp.int32)
    else:
      kids = given
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
  given = None if children is None else children.swapaxes(0, 1)
  out = jax.lax.map(
      position,
      (hs.swapaxes(0, 1), ht.swapaxes(0, 1), response.T, given),
      batch_size=chunk,
  )
  return PositionStats(*(x.swapaxes(0, 1) for x in out))


@functools.lru_cache(maxsize=16)
def _compiled(graphdefs, top_c, temperature, chunk):
  return jax.jit(
      functools.partial(
          _score_impl,
          graphdefs,
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
    teacher_prompt: jax.Array | None = None,
    teacher_prompt_mask: jax.Array | None = None,
    children: jax.Array | None = None,
) -> PositionStats:
  """Both models' next-token statistics at every response position.

  Args:
    student: the student.
    teacher: the teacher (same vocabulary).
    rollout: G rollouts of one or more prompts ([G, P], [G, T]).
    top_c: C, how many of the student's most likely tokens are candidates.
    temperature: both distributions are softmax(logits / temperature).
    chunk: positions per head call.
    teacher_prompt: int [G, Pt] the teacher's own left-padded prompts (a
      privileged context, `data.context`), with `teacher_prompt_mask` bool
      [G, Pt]: the teacher scores `[teacher prompt | response]`, the
      student `rollout.tokens`. None: both score the rollout's sequence.
    children: int [G, T, C + 2] candidate children to score instead of the
      ones this pass would choose (another teacher configuration's, so that
      several teachers are compared on the same nodes and children).

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
  response = jnp.asarray(rollout.response, jnp.int32)
  if teacher_prompt is None:
    teacher_tokens, teacher_mask = rollout.tokens, rollout.mask
  else:
    teacher_prompt = jnp.asarray(teacher_prompt, jnp.int32)
    if teacher_prompt.ndim != 2 or teacher_prompt.shape[0] != len(response):
      raise ValueError(
          "score_positions: teacher_prompt must be [G, Pt] with G ="
          f" {len(response)}, got {teacher_prompt.shape}"
      )
    teacher_tokens = jnp.concatenate([teacher_prompt, response], 1)
    teacher_mask = jnp.concatenate(
        [jnp.asarray(teacher_prompt_mask, bool), rollout.response_mask], 1
    )
  if children is not None:
    children = jnp.asarray(children, jnp.int32)
    if children.shape != (*response.shape, top_c + 2):
      raise ValueError(
          "score_positions: children must be [G, T, top_c + 2] ="
          f" {(*response.shape, top_c + 2)}, got {children.shape}"
      )
  graphdefs, states = zip(*(nnx.split(m) for m in (student, teacher)))
  fn = _compiled(tuple(graphdefs), int(top_c), float(temperature), int(chunk))
  return fn(
      tuple(states),
      rollout.tokens,
      rollout.mask,
      teacher_tokens,
      teacher_mask,
      response,
      children,
  )
