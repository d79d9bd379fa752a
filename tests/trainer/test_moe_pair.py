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
"""A Qwen3-MoE student and teacher through the paths a dense pair takes.

The MoE layer's parity, routing and sharding are tests/models/test_moe.py's;
here the pair goes where issue 39 asks it to: TOPD's staged branches (the
sampler continuing MoE rollouts), the token map written during training,
mixture rollouts (both models sampling), and the diagnostics' tree.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from opd_jax import testing
from opd_jax.trainer import loop
from opd_jax.trainer.config import start_run

REPO = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
  return testing.tiny_distillation_pair(
      str(tmp_path_factory.mktemp("moe_pair")), moe=True
  )


def _train_rows(c, workdir):
  loop.train_and_evaluate(start_run(c), str(workdir))
  with open(workdir / "metrics.jsonl", encoding="utf-8") as f:
    return [r for r in map(json.loads, f) if "loss/total" in r]


def test_topd_branches_and_a_token_map_with_moe_models(pair, tmp_path):
  c = testing.tiny_train_config(
      pair, method="topd", total_steps=2, token_map_every=2
  )
  c.topd.window = 8
  rows = _train_rows(c, tmp_path / "run")
  assert [r["step"] for r in rows] == [1, 2]
  for r in rows:
    assert np.isfinite(r["loss/total"]) and np.isfinite(r["loss/traj"])
    # The MoE student's load-balancing term: E * sum_e f_e P_e >= 1.
    assert r["loss/router_aux"] >= 1.0 - 1e-6
  assert sum(r["topd/candidates"] for r in rows) > 0  # branches were drawn
  page = tmp_path / "run" / "plots" / "token_map_000002.html"
  assert '<option value="topd_false_alarm"' in page.read_text()


def test_mixture_rollouts_with_moe_models(pair, tmp_path):
  c = testing.tiny_train_config(
      pair,
      method="gkd",
      total_steps=2,
      rollout_source="mixture",
      mixture_alpha=0.5,
  )
  rows = _train_rows(c, tmp_path / "run")
  assert [r["step"] for r in rows] == [1, 2]
  assert all(np.isfinite(r["loss/total"]) for r in rows)
  assert all(r["rollout/len_mean"] > 0 for r in rows)


@pytest.mark.slow
def test_diagnose_scores_a_tree_of_moe_rollouts(pair, tmp_path):
  out = tmp_path / "report"
  proc = subprocess.run(
      [
          sys.executable,
          os.path.join(REPO, "scripts", "diagnose.py"),
          f"--student={pair['student']}",
          f"--teacher={pair['teacher']}",
          "--num_questions=2",
          f"--out={out}",
          "--num_rollouts=4",
          "--top_c=2",
          "--continuations=4",
          "--nodes_per_window=1",
          "--budget=40",
          "--max_new_tokens=12",
      ],
      cwd=tmp_path,
      env=dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu"),
      capture_output=True,
      text=True,
      timeout=900,
      check=False,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(out / "nodes.json", encoding="utf-8") as f:
    data = json.load(f)
  assert len(data["questions"]) == 2 and data["nodes"]
  # Each node's children's probabilities under the MoE teacher.
  probs = [p for n in data["nodes"] for p in n["teacher_prob"]]
  assert probs and all(0.0 <= p <= 1.0 for p in probs)
