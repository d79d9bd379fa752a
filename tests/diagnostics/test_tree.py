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
"""The targeted tree: node choice, success estimates, one question end to end."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from opd_jax import testing
from opd_jax.diagnostics import alignment, tree
from opd_jax.rollouts import Sampling, sample

_PROMPT = np.asarray([0, 1, 5, 7])
_PROMPT_MASK = np.asarray([False, True, True, True])


@pytest.fixture(scope="module")
def toy():
  """A tiny model over 12 ids with a far-from-uniform next-token law."""
  m = testing.random_model(testing.tiny_config("llama", vocab_size=12), seed=7)
  m.final_norm.scale[...] = m.final_norm.scale[...] * 10
  return m


def _even_third(responses):
  """Toy verifier: correct iff the third response token is even."""
  return [len(r) > 2 and r[2] % 2 == 0 for r in responses]


def test_depth_windows():
  assert [tree.depth_window(c) for c in range(8)] == [0, 1, 1, 2, 2, 2, 2, 3]


def test_budget_smaller_than_the_tree_is_an_error():
  with pytest.raises(ValueError, match=r"TreeConfig.budget: 40 .* = 64"):
    tree.TreeConfig(num_rollouts=16, top_c=4, continuations=8, budget=40)
  with pytest.raises(ValueError, match="TreeConfig.select"):
    tree.TreeConfig(select="entropy")


def test_choose_nodes_windows_budget_and_shared_prefixes():
  g, t = 4, 8
  response = np.tile(np.arange(10, 10 + t), (g, 1))
  response[1, 3:] += 20  # rollouts 0 and 1 share positions 0..3
  response[2, 1:] += 40
  response[3, 1:] += 60
  rmask = np.ones((g, t), bool)
  rmask[3, 5:] = False
  correct = np.asarray([True, False, False, True])
  score = np.random.default_rng(0).uniform(size=(g, t))
  children = np.stack(
      [response, response + 1, response + 2, response + 1], -1
  )  # the teacher's argmax duplicates a top token
  # Room for 4 nodes of 3 sampled children x 2 continuations; nodes at the
  # last position (window 3) have exact leaves only and cost nothing.
  config = tree.TreeConfig(
      num_rollouts=g,
      top_c=2,
      continuations=2,
      nodes_per_window=2,
      budget=g + 3 * 2 * 4,
  )
  nodes = tree.choose_nodes(response, rmask, correct, score, children, config)
  assert sum(n.cost(2) for n in nodes) == 3 * 2 * 4
  assert len(nodes) == 6 and sum(all(n.exact) for n in nodes) == 2
  per_window = {}
  for n in nodes:
    assert rmask[n.rollout, n.position]
    assert n.children == [int(x) for x in children[n.rollout, n.position, :3]]
    assert n.slots == [0, 1, 2]
    assert all(n.exact) == (n.position == t - 1)
    per_window[n.window] = per_window.get(n.window, 0) + 1
  assert max(per_window.values()) <= 2 and set(per_window) == {0, 1, 2, 3}
  prefixes = [tuple(response[n.rollout, : n.position]) for n in nodes]
  assert len(set(prefixes)) == len(prefixes)
  # Round-robin over outcomes: window 1 gets a node of each.
  assert {bool(correct[n.rollout]) for n in nodes if n.window == 1} == {
      True,
      False,
  }
  # Without the budget cap the per-window cap binds: 1 + 2 + 2 + 2 nodes.
  big = tree.TreeConfig(
      num_rollouts=g,
      top_c=2,
      continuations=2,
      nodes_per_window=2,
      budget=10_000,
  )
  assert (
      len(tree.choose_nodes(response, rmask, correct, score, children, big))
      == 7
  )


def test_success_estimates_match_exact_probabilities(toy):
  g, t, n_cont = 4, 3, 400
  rollout = sample(
      toy,
      jnp.tile(_PROMPT, (g, 1)),
      jnp.tile(_PROMPT_MASK, (g, 1)),
      jax.random.key(0),
      max_new_tokens=t,
      sampling=Sampling(temperature=1.0),
  )
  response = np.asarray(rollout.response)
  correct = np.asarray(_even_third(response.tolist()))
  first = int(response[0, 0])
  kids = [int(response[0, 1]), (int(response[0, 1]) + 1) % 12]
  nodes = [
      tree.Node(0, 1, 1, 0.0, kids, [0, 1], [False, False]),
      tree.Node(0, 2, 1, 0.0, [3, 4], [0, 1], [True, True]),
  ]
  config = tree.TreeConfig(
      num_rollouts=g,
      top_c=1,
      continuations=n_cont,
      budget=g + 3 * n_cont,
      max_new_tokens=t,
      batch_rows=2,
  )
  sampled = tree.grow(
      toy, nodes, rollout, correct, _even_third, config, jax.random.key(1)
  )
  assert sampled == 2 * n_cont
  real = _PROMPT[_PROMPT_MASK].tolist()
  for j, k in enumerate(kids):
    probs = np.asarray(
        jax.nn.softmax(toy(jnp.asarray([real + [first, k]])).logits[0, -1])
    )
    exact = probs[::2].sum()  # P(third token even | prefix, k)
    through = int(((response[:, 0] == first) & (response[:, 1] == k)).sum())
    assert nodes[0].visits[j] == n_cont + through
    est = nodes[0].successes[j] / nodes[0].visits[j]
    sigma = np.sqrt(exact * (1 - exact) / nodes[0].visits[j])
    assert abs(est - exact) < 4.5 * sigma + 1e-3, (k, est, exact)
  # At the length limit a child's leaf is the prefix plus the child: exact.
  assert nodes[1].visits == [1, 1]
  assert nodes[1].successes == [0, 1]  # third token 3 (odd), 4 (even)


@pytest.mark.slow
def test_one_question_end_to_end(toy):
  teacher = testing.random_model(
      testing.tiny_config("llama", vocab_size=12).replace(embed_dim=64), seed=8
  )
  config = tree.TreeConfig(
      num_rollouts=8,
      top_c=2,
      continuations=6,
      nodes_per_window=2,
      budget=8 + 4 * 6 * 4,
      max_new_tokens=4,
      batch_rows=4,
  )
  res = alignment.diagnose_question(
      toy,
      teacher,
      _PROMPT,
      _PROMPT_MASK,
      _even_third,
      config,
      jax.random.key(0),
      index=3,
  )
  assert res.index == 3 and res.rollouts <= config.budget
  assert 0 < len(res.nodes) <= 3 * 2  # 3 depth windows in 4 tokens
  json.dumps(res.nodes)  # JSON-ready: no NaN, no numpy scalars
  defined = 0
  real = _PROMPT[_PROMPT_MASK].tolist()
  for n in res.nodes:
    assert n["question"] == 3 and 0 <= n["depth"] < 1
    assert n["k_u"] == sum(n["in_k_u"]) >= 2
    for value in n["align"].values():
      assert value is None or -1 <= value <= 1
    defined += n["align"]["rkl"] is not None
    # The node's student probabilities are the student's conditional there.
    if n["position"] == 0:
      probs = np.asarray(jax.nn.softmax(toy(jnp.asarray([real])).logits[0, -1]))
      np.testing.assert_allclose(
          n["student_prob"], probs[n["children"]], rtol=1e-4
      )
  assert defined > 0, "the toy verifier should make some S_k differ"
