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
"""Gradient alignment of "Unmasking On-Policy Distillation" (METHODS.md §6).

For one question: G student rollouts, a targeted tree of branching nodes
(`tree`), success estimates S_k(u) of each node's children from graded
leaves, and at each node the cosine between the ideal logit direction
g_j = q_j (S_j - S̄) and each distillation objective's update direction
(`directions`), on the visited set K_u.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from opd_jax.diagnostics import directions, scoring, tree
from opd_jax.models import Transformer
from opd_jax.rollouts import Sampling, sample


@dataclasses.dataclass
class QuestionResult:
  """One question's tree.

  Attributes:
    index: the question's index.
    accuracy: fraction of the G rollouts graded correct.
    rollouts: rollouts spent (G + continuations).
    nodes: one dict per node (see `analyse_nodes`).
  """

  index: int
  accuracy: float
  rollouts: int
  nodes: list[dict[str, Any]]


def _float(x) -> float | None:
  x = float(x)
  return x if math.isfinite(x) else None


def node_arrays(
    nodes: Sequence[tree.Node],
    stats: dict[str, np.ndarray],
    response_mask: np.ndarray,
    min_visits: int,
) -> dict:
  """The [N, K] node tensors of METHODS §6(e) from grown nodes.

  Args:
    nodes: grown nodes (visits and successes filled).
    stats: `PositionStats` fields as numpy [G, T, ...].
    response_mask: bool [G, T].
    min_visits: the visit threshold of K_u.

  Returns:
    Dict of numpy arrays: `student_log_probs`, `teacher_log_probs`,
    `success`, `visits` [N, K]; `valid` (K_u), `taken` bool [N, K];
    `future_return` [N].
  """
  n, k = len(nodes), stats["children"].shape[-1]
  ls = np.zeros((n, k), np.float32)
  lt = np.zeros((n, k), np.float32)
  success = np.zeros((n, k), np.float32)
  visits = np.zeros((n, k), np.int64)
  valid = np.zeros((n, k), bool)
  taken = np.zeros((n, k), bool)
  future = np.zeros((n,), np.float32)
  ratio = np.where(response_mask, stats["log_ratio"], 0.0)
  for i, node in enumerate(nodes):
    g, c, m = node.rollout, node.position, len(node.children)
    ls[i, :m] = stats["student_log_probs"][g, c, node.slots]
    lt[i, :m] = stats["teacher_log_probs"][g, c, node.slots]
    visits[i, :m] = node.visits
    success[i, :m] = np.asarray(node.successes) / np.maximum(node.visits, 1)
    valid[i, :m] = (np.asarray(node.visits) >= min_visits) | np.asarray(
        node.exact
    )
    taken[i, 0] = True  # child 0 is the rollout's own token.
    future[i] = ratio[g, c + 1 :].sum()
  return dict(
      student_log_probs=ls,
      teacher_log_probs=lt,
      success=success,
      visits=visits,
      valid=valid,
      taken=taken,
      future_return=future,
  )


def analyse_nodes(arrays: dict) -> dict[str, np.ndarray]:
  """Alignment and node success of every node from `node_arrays`.

  Returns:
    Dict of numpy [N] arrays: `align/<objective>` (NaN where undefined:
    |K_u| < 2, all S_k equal, or the taken token outside K_u for the
    sampled objectives), `ideal_norm`, `node_success`,
    `teacher_advantage`, `k_u` (|K_u|).
  """
  ls = jnp.asarray(arrays["student_log_probs"])
  lt = jnp.asarray(arrays["teacher_log_probs"])
  s, valid = jnp.asarray(arrays["success"]), jnp.asarray(arrays["valid"])
  ideal = directions.ideal_direction(ls, s, valid)
  dirs = directions.directions(
      ls,
      lt,
      jnp.asarray(arrays["taken"]),
      valid,
      jnp.asarray(arrays["future_return"]),
  )
  out = {
      f"align/{name}": directions.cosine(ideal, d) for name, d in dirs.items()
  }
  out["ideal_norm"] = jnp.linalg.norm(ideal, axis=-1)
  out["node_success"] = directions.node_success(ls, s, valid)
  out["teacher_advantage"] = directions.teacher_advantage(ls, lt, s, valid)
  out["k_u"] = valid.sum(-1)
  return {name: np.asarray(v) for name, v in out.items()}


def diagnose_question(
    student: Transformer,
    teacher: Transformer,
    prompt: np.ndarray,
    prompt_mask: np.ndarray,
    grade: tree.Grader,
    config: tree.TreeConfig,
    key: jax.Array,
    *,
    index: int = 0,
    eos_ids: Sequence[int] = (),
    pad_id: int = 0,
) -> QuestionResult:
  """Grows one question's tree and measures alignment at every node.

  Args:
    student: the student (samples the rollouts and every continuation).
    teacher: the teacher (scores only).
    prompt: int [P] the left-padded question prompt; prompt_mask: bool [P].
    grade: grades this question's responses (lists of token ids).
    config: the tree's knobs.
    key: PRNG key.
    index: the question's index (recorded in each node).
    eos_ids, pad_id: as in `sample`.

  Returns:
    A `QuestionResult`.
  """
  g = config.num_rollouts
  k_roll, k_tree = jax.random.split(key)
  rollout = sample(
      student,
      jnp.tile(jnp.asarray(prompt, jnp.int32)[None], (g, 1)),
      jnp.tile(jnp.asarray(prompt_mask, bool)[None], (g, 1)),
      k_roll,
      max_new_tokens=config.max_new_tokens,
      sampling=Sampling(temperature=config.temperature),
      eos_ids=eos_ids,
      pad_id=pad_id,
  )
  response = np.asarray(rollout.response)
  rmask = np.asarray(rollout.response_mask)
  correct = np.asarray(
      list(grade([r[m].tolist() for r, m in zip(response, rmask)])), bool
  )
  stats = scoring.score_positions(
      student,
      teacher,
      rollout,
      top_c=config.top_c,
      temperature=config.temperature,
  )
  stats = {
      f.name: np.asarray(getattr(stats, f.name))
      for f in dataclasses.fields(stats)
  }
  score = stats["rkl_norm" if config.select == "grad_norm" else "gap"]
  nodes = tree.choose_nodes(
      response, rmask, correct, score, stats["children"], config, eos_ids
  )
  sampled = tree.grow(
      student,
      nodes,
      rollout,
      correct,
      grade,
      config,
      k_tree,
      eos_ids=eos_ids,
      pad_id=pad_id,
  )
  records = _records(index, nodes, stats, response, rmask, correct, config)
  return QuestionResult(
      index=index,
      accuracy=float(correct.mean()),
      rollouts=g + sampled,
      nodes=records,
  )


def _records(index, nodes, stats, response, rmask, correct, config):
  """One JSON-ready dict per node."""
  if not nodes:
    return []
  arrays = node_arrays(nodes, stats, rmask, config.min_visits)
  res = analyse_nodes(arrays)
  lengths = rmask.sum(1)
  records = []
  for i, n in enumerate(nodes):
    g, c = n.rollout, n.position
    through = rmask[:, c] & np.all(response[:, :c] == response[g, :c], axis=1)
    m = len(n.children)
    records.append({
        "question": index,
        "rollout": g,
        "position": c,
        "depth": c / float(lengths[g]),
        "window": n.window,
        "rollout_correct": bool(correct[g]),
        "through": int(through.sum()),
        "through_correct": int((through & correct).sum()),
        "score": n.score,
        "children": n.children,
        "exact": n.exact,
        "visits": n.visits,
        "successes": n.successes,
        "in_k_u": arrays["valid"][i, :m].tolist(),
        "student_prob": np.exp(arrays["student_log_probs"][i, :m]).tolist(),
        "teacher_prob": np.exp(arrays["teacher_log_probs"][i, :m]).tolist(),
        "k_u": int(res["k_u"][i]),
        "node_success": _float(res["node_success"][i]),
        "teacher_advantage": _float(res["teacher_advantage"][i]),
        "ideal_norm": _float(res["ideal_norm"][i]),
        "align": {
            o: _float(res[f"align/{o}"][i]) for o in directions.OBJECTIVES
        },
        **{
            s: _float(stats[s][g, c])
            for s in ("kl", "l2", "cos", "gap", "rkl_norm")
        },
    })
  return records


def diagnose(
    student: Transformer,
    teacher: Transformer,
    prompts: np.ndarray,
    prompt_mask: np.ndarray,
    graders: Sequence[tree.Grader],
    config: tree.TreeConfig,
    key: jax.Array,
    *,
    eos_ids: Sequence[int] = (),
    pad_id: int = 0,
    progress: Callable[[QuestionResult], None] | None = None,
) -> list[QuestionResult]:
  """`diagnose_question` for each row of prompts [Q, P] with its grader."""
  if student.config.vocab_size != teacher.config.vocab_size:
    raise ValueError(
        "diagnose: the teacher's vocabulary differs from the student's:"
        f" {teacher.config.vocab_size} vs {student.config.vocab_size}"
    )
  if len(prompts) != len(graders) or len(prompts) == 0:
    raise ValueError(
        "diagnose: expected one grader per question and at least one"
        f" question, got {len(prompts)} prompts and {len(graders)} graders"
    )
  results = []
  for q, (p, m, grade) in enumerate(zip(prompts, prompt_mask, graders)):
    r = diagnose_question(
        student,
        teacher,
        p,
        m,
        grade,
        config,
        jax.random.fold_in(key, q),
        index=q,
        eos_ids=eos_ids,
        pad_id=pad_id,
    )
    results.append(r)
    if progress is not None:
      progress(r)
  return results
