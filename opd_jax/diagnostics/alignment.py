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
"""Gradient alignment of "Unmasking On-Policy Distillation" (docs/methods.md §6).

For one question: G student rollouts, a targeted tree of branching nodes
(`tree`), success estimates S_k(u) of each node's children from graded
leaves, and at each node the cosine between the ideal logit direction
g_j = q_j (S_j - S̄) and each distillation objective's update direction
(`directions`), on the visited set K_u. Several teacher configurations
(`TeacherSetup`: an external teacher, the student's own weights under a
privileged context, ...) are measured on the same rollouts, nodes, children
and success estimates, so their alignments are paired node by node.
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


@dataclasses.dataclass(frozen=True)
class TeacherSetup:
  """One teacher configuration: a model and, optionally, its own prompt.

  Attributes:
    name: how the report names it ('teacher', 'self:solution', ...).
    model: the scoring model (the student itself for a self-teacher).
    prompts: int [Q, Pt] left-padded teacher prompts, one per question (a
      privileged context), or None: the teacher scores the student's
      sequence. `diagnose_question` takes one row, [Pt].
    prompt_mask: bool, the shape of `prompts`.
  """

  name: str
  model: Transformer
  prompts: np.ndarray | None = None
  prompt_mask: np.ndarray | None = None


@dataclasses.dataclass
class QuestionResult:
  """One question's tree.

  Attributes:
    index: the question's index.
    accuracy: fraction of the G rollouts graded correct.
    rollouts: rollouts spent (G + continuations).
    nodes: one dict per node (see `analyse_nodes`), under the first teacher
      configuration.
    by_teacher: {configuration name: its node dicts}, the same nodes in the
      same order under each configuration (the first's are `nodes`).
  """

  index: int
  accuracy: float
  rollouts: int
  nodes: list[dict[str, Any]]
  by_teacher: dict[str, list[dict[str, Any]]] = dataclasses.field(
      default_factory=dict
  )


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


def _setups(teacher) -> list[TeacherSetup]:
  """A lone model as the one configuration 'teacher'; names checked."""
  if isinstance(teacher, Transformer):
    return [TeacherSetup("teacher", teacher)]
  setups = list(teacher)
  names = [t.name for t in setups]
  if not setups or len(set(names)) != len(names):
    raise ValueError(
        "diagnose: expected at least one teacher configuration with distinct"
        f" names, got {names}"
    )
  return setups


def _score(student, setup, rollout, config, children=None):
  """`score_positions` of one configuration as numpy arrays."""
  g = rollout.response.shape[0]
  prompt = mask = None
  if setup.prompts is not None:
    prompt = jnp.tile(jnp.asarray(setup.prompts, jnp.int32)[None], (g, 1))
    mask = jnp.tile(jnp.asarray(setup.prompt_mask, bool)[None], (g, 1))
  stats = scoring.score_positions(
      student,
      setup.model,
      rollout,
      top_c=config.top_c,
      temperature=config.temperature,
      teacher_prompt=prompt,
      teacher_prompt_mask=mask,
      children=children,
  )
  return {
      f.name: np.asarray(getattr(stats, f.name))
      for f in dataclasses.fields(stats)
  }


def diagnose_question(
    student: Transformer,
    teacher: Transformer | Sequence[TeacherSetup],
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

  The first teacher configuration chooses the nodes and their children
  (its argmax among them); every configuration scores those same children
  on the same rollouts, so alignments are paired node by node.

  Args:
    student: the student (samples the rollouts and every continuation).
    teacher: the teacher (scores only), or several `TeacherSetup`s whose
      prompts are this question's row [Pt].
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
  setups = _setups(teacher)
  stats = _score(student, setups[0], rollout, config)
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
  by_teacher = {
      setups[0].name: _records(
          index, nodes, stats, response, rmask, correct, config
      )
  }
  for setup in setups[1:]:
    other = _score(student, setup, rollout, config, stats["children"])
    by_teacher[setup.name] = _records(
        index, nodes, other, response, rmask, correct, config
    )
  return QuestionResult(
      index=index,
      accuracy=float(correct.mean()),
      rollouts=g + sampled,
      nodes=by_teacher[setups[0].name],
      by_teacher=by_teacher,
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
    teacher: Transformer | Sequence[TeacherSetup],
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
  """`diagnose_question` for each row of prompts [Q, P] with its grader.

  `teacher` is one model or several `TeacherSetup`s (prompts [Q, Pt] each,
  or None), measured on the same trees.
  """
  setups = _setups(teacher)
  for t in setups:
    if student.config.vocab_size != t.model.config.vocab_size:
      raise ValueError(
          f"diagnose: teacher {t.name!r}'s vocabulary differs from the"
          f" student's: {t.model.config.vocab_size} vs"
          f" {student.config.vocab_size}"
      )
    if t.prompts is not None and np.shape(t.prompts)[0] != len(prompts):
      raise ValueError(
          f"diagnose: teacher {t.name!r} has {np.shape(t.prompts)[0]} prompts"
          f" for {len(prompts)} questions"
      )
  if len(prompts) != len(graders) or len(prompts) == 0:
    raise ValueError(
        "diagnose: expected one grader per question and at least one"
        f" question, got {len(prompts)} prompts and {len(graders)} graders"
    )
  results = []
  for q, (p, m, grade) in enumerate(zip(prompts, prompt_mask, graders)):
    per_question = [
        t
        if t.prompts is None
        else dataclasses.replace(
            t, prompts=t.prompts[q], prompt_mask=t.prompt_mask[q]
        )
        for t in setups
    ]
    r = diagnose_question(
        student,
        per_question,
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
