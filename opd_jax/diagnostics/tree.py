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
"""The targeted rollout tree: choose branching nodes, branch children, count successes."""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from opd_jax.models import Transformer
from opd_jax.rollouts import Rollout, Sampling, continue_from

# Grades one question's responses (token ids, EOS included or not) -> correct?
Grader = Callable[[Sequence[Sequence[int]]], Sequence[bool]]
SELECT_BY = ("grad_norm", "prob_gap")


@dataclasses.dataclass(frozen=True)
class TreeConfig:
  """How the tree of one question is grown.

  Attributes:
    num_rollouts: G student rollouts per question (they count in `budget`).
    top_c: C, the student's most likely tokens branched at a node, besides
      the rollout's own token and the teacher's argmax.
    continuations: N student continuations sampled after each child.
    nodes_per_window: M, at most this many nodes per depth window.
    min_visits: a child enters the visited set K_u with at least this many
      graded leaves below it (leaves that need no sampling, after EOS or at
      the length limit, are exact and always enter).
    budget: rollouts per question, the G rollouts and every continuation.
    select: rank nodes by the norm of the reverse-KL logit gradient
      ('grad_norm') or by max_k |pT(k) - pS(k)| ('prob_gap').
    temperature: sampling temperature, also of the distributions compared.
    max_new_tokens: T, the response length of rollouts and leaves.
    batch_rows: children per continuation call (a static shape).
  """

  num_rollouts: int = 16
  top_c: int = 4
  continuations: int = 8
  nodes_per_window: int = 4
  min_visits: int = 4
  budget: int = 512
  select: str = "grad_norm"
  temperature: float = 1.0
  max_new_tokens: int = 24
  batch_rows: int = 8

  def __post_init__(self):
    for name in (
        "num_rollouts",
        "top_c",
        "continuations",
        "nodes_per_window",
        "min_visits",
        "batch_rows",
    ):
      if getattr(self, name) < 1:
        raise ValueError(
            f"TreeConfig.{name}: expected >= 1, got {getattr(self, name)}"
        )
    if self.max_new_tokens < 2:
      raise ValueError(
          f"TreeConfig.max_new_tokens: expected >= 2, got {self.max_new_tokens}"
      )
    if self.select not in SELECT_BY:
      raise ValueError(
          f"TreeConfig.select: expected one of {SELECT_BY}, got {self.select!r}"
      )
    if not self.temperature > 0:
      raise ValueError(
          f"TreeConfig.temperature: expected > 0, got {self.temperature}"
      )
    if self.budget < self.min_budget:
      raise ValueError(
          f"TreeConfig.budget: {self.budget} rollouts is smaller than the tree"
          f" needs: {self.num_rollouts} rollouts + one node of up to"
          f" {self.top_c + 2} children x {self.continuations} continuations"
          f" = {self.min_budget}"
      )

  @property
  def min_budget(self) -> int:
    """The G rollouts plus the largest node."""
    return self.num_rollouts + (self.top_c + 2) * self.continuations


def depth_window(position: int) -> int:
  """i such that position + 1 lies in [2^i, 2^(i+1)) (METHODS §6(d)3)."""
  return int(math.floor(math.log2(position + 1)))


@dataclasses.dataclass
class Node:
  """One branching node: the prefix of rollout `rollout` before `position`.

  Attributes:
    rollout: g, the rollout the node was chosen on.
    position: c, response tokens in the prefix.
    window: its depth window.
    score: the selection score.
    children: distinct candidate next tokens, the rollout's own first.
    slots: index of each child in the scoring pass's C + 2 candidates.
    exact: per child, True when its leaf needs no sampling.
    visits: per child, graded leaves below it.
    successes: per child, correct leaves among them.
  """

  rollout: int
  position: int
  window: int
  score: float
  children: list[int]
  slots: list[int]
  exact: list[bool]
  visits: list[int] = dataclasses.field(default_factory=list)
  successes: list[int] = dataclasses.field(default_factory=list)

  def cost(self, continuations: int) -> int:
    return continuations * sum(not e for e in self.exact)


def _candidate(g, c, children_row, score, eos, t) -> Node:
  """A node with its distinct children (slot order; the taken token first)."""
  kids, slots = [], []
  for slot, k in enumerate(children_row):
    if int(k) not in kids:
      kids.append(int(k))
      slots.append(slot)
  exact = [k in eos or c + 1 == t for k in kids]
  return Node(g, c, depth_window(c), float(score), kids, slots, exact)


def choose_nodes(
    response: np.ndarray,
    response_mask: np.ndarray,
    correct: np.ndarray,
    score: np.ndarray,
    children: np.ndarray,
    config: TreeConfig,
    eos_ids: Sequence[int] = (),
) -> list[Node]:
  """The targeted nodes of one question within its budget.

  Depth is split into windows [2^i, 2^(i+1)) of position + 1. Within each
  window the candidates (every response position of every rollout; a
  prefix shared by several rollouts counts once) are ranked by `score`.
  Nodes are taken round-robin over (window, rollout correct?) groups, best
  first, so every depth and both outcomes get a share of the budget; a
  window holds at most `nodes_per_window` nodes, and a node whose
  continuations no longer fit in the budget is skipped.

  Args:
    response: int [G, T]; response_mask: bool [G, T].
    correct: bool [G], each rollout's grade.
    score: float [G, T] selection score.
    children: int [G, T, C + 2] candidate children.
    config: the tree's knobs.
    eos_ids: ids that end a response.

  Returns:
    The chosen nodes, in choice order.
  """
  g_count, t = response.shape
  eos = {int(e) for e in eos_ids}
  groups: dict[tuple[int, bool], list[tuple[int, int]]] = {}
  seen = set()
  order = np.argsort(
      -np.where(response_mask, score, -np.inf), axis=None, kind="stable"
  )
  for flat in order:
    g, c = divmod(int(flat), t)
    if not response_mask[g, c]:
      continue
    key = tuple(response[g, :c].tolist())
    if key in seen:  # the same prefix on another rollout: the same node.
      continue
    seen.add(key)
    groups.setdefault((depth_window(c), bool(correct[g])), []).append((g, c))
  spent, per_window, chosen = config.num_rollouts, {}, []
  while True:
    added = False
    for w, cls in sorted(groups):
      queue = groups[(w, cls)]
      while queue and per_window.get(w, 0) < config.nodes_per_window:
        g, c = queue.pop(0)
        node = _candidate(g, c, children[g, c], score[g, c], eos, t)
        cost = node.cost(config.continuations)
        if spent + cost <= config.budget:
          spent += cost
          per_window[w] = per_window.get(w, 0) + 1
          chosen.append(node)
          added = True
          break
    if not added:
      return chosen


def _leaf_rows(nodes, response, t, pad_id):
  """One row per (node, sampled child): the prefix plus the forced child."""
  rows = [
      (i, j)
      for i, n in enumerate(nodes)
      for j, e in enumerate(n.exact)
      if not e
  ]
  ids = np.full((len(rows), t), pad_id, np.int32)
  mask = np.zeros((len(rows), t), bool)
  for r, (i, j) in enumerate(rows):
    n = nodes[i]
    ids[r, : n.position] = response[n.rollout, : n.position]
    ids[r, n.position] = n.children[j]
    mask[r, : n.position + 1] = True
  return rows, ids, mask


def _sample_leaves(
    student, ids, mask, rollout, config, key, *, eos_ids, pad_id
) -> list[list[int]]:
  """N continuations of each forced-child row, as full responses (<= T).

  Rows go `batch_rows` at a time (padded with invalid cuts) so that every
  call has the same static shapes.
  """
  t, n_cont, width = ids.shape[1], config.continuations, config.batch_rows
  leaves: list[list[int]] = []
  for start in range(0, len(ids), width):
    stop = min(start + width, len(ids))
    pad = ((0, width - (stop - start)), (0, 0))
    cut = np.where(
        np.arange(width) < stop - start,
        np.pad(mask[start:stop], pad).sum(1),
        -1,
    )
    batch = Rollout(
        prompt=jnp.repeat(rollout.prompt[:1], width, axis=0),
        prompt_mask=jnp.repeat(rollout.prompt_mask[:1], width, axis=0),
        response=jnp.asarray(
            np.pad(ids[start:stop], pad, constant_values=pad_id)
        ),
        response_mask=jnp.asarray(np.pad(mask[start:stop], pad)),
        logprobs=jnp.zeros((width, t)),
    )
    out = continue_from(
        student,
        batch,
        jnp.asarray(np.repeat(cut[:, None], n_cont, 1), jnp.int32),
        jax.random.fold_in(key, start),
        max_new_tokens=t - 1,
        sampling=Sampling(temperature=config.temperature),
        eos_ids=eos_ids,
        pad_id=pad_id,
    )
    cont, cmask = np.asarray(out.response), np.asarray(out.response_mask)
    for r in range(stop - start):
      prefix = ids[start + r][mask[start + r]].tolist()
      for row in range(r * n_cont, (r + 1) * n_cont):
        leaves.append(
            prefix + cont[row][cmask[row]].tolist()[: t - len(prefix)]
        )
  return leaves


def grow(
    student: Transformer,
    nodes: list[Node],
    rollout: Rollout,
    correct: np.ndarray,
    grade: Grader,
    config: TreeConfig,
    key: jax.Array,
    *,
    eos_ids: Sequence[int] = (),
    pad_id: int = 0,
) -> int:
  """Branches every node's children and fills their visits and successes.

  A sampled child k of node u gets N student continuations after
  prefix + k, each graded as a full response (cut to the rollout length
  T). The G rollouts that pass through (u, k) are unbiased samples of the
  same continuation distribution and count too. An exact child (k is EOS,
  or u is at the length limit) has one deterministic leaf.

  Args:
    student: the sampling model.
    nodes: from `choose_nodes`; updated in place.
    rollout: the question's G rollouts (one prompt repeated).
    correct: bool [G] their grades.
    grade: the question's grader.
    config: the tree's knobs.
    key: PRNG key.
    eos_ids, pad_id: as in `sample`.

  Returns:
    The number of continuations sampled.
  """
  response = np.asarray(rollout.response)
  rmask = np.asarray(rollout.response_mask)
  n_cont = config.continuations
  rows, ids, mask = _leaf_rows(nodes, response, response.shape[1], pad_id)
  leaves = _sample_leaves(
      student, ids, mask, rollout, config, key, eos_ids=eos_ids, pad_id=pad_id
  )
  exact_leaves = [
      (i, j) for i, n in enumerate(nodes) for j, e in enumerate(n.exact) if e
  ]
  for i, j in exact_leaves:
    n = nodes[i]
    leaves.append(response[n.rollout, : n.position].tolist() + [n.children[j]])
  grades = list(grade(leaves)) if leaves else []
  if len(grades) != len(leaves):
    raise ValueError(
        f"grade returned {len(grades)} grades for {len(leaves)} responses"
    )
  for n in nodes:
    n.visits, n.successes = [0] * len(n.children), [0] * len(n.children)
  sampled = len(rows) * n_cont
  for r, (i, j) in enumerate(rows):
    ok = grades[r * n_cont : (r + 1) * n_cont]
    nodes[i].visits[j] += n_cont
    nodes[i].successes[j] += int(sum(ok))
  for (i, j), ok in zip(exact_leaves, grades[sampled:]):
    nodes[i].visits[j], nodes[i].successes[j] = 1, int(ok)
  _add_rollouts_through(nodes, response, rmask, correct)
  return sampled


def _add_rollouts_through(nodes, response, rmask, correct):
  """Counts the G rollouts passing through each sampled child."""
  for n in nodes:
    c = n.position
    for j, k in enumerate(n.children):
      if n.exact[j]:
        continue
      through = (
          rmask[:, c]
          & (response[:, c] == k)
          & np.all(response[:, :c] == response[n.rollout, :c], axis=1)
      )
      n.visits[j] += int(through.sum())
      n.successes[j] += int((through & correct).sum())
