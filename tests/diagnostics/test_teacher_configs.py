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
"""Several teacher configurations (own prompts, self) on the same alignment trees."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from opd_jax import testing
from opd_jax.diagnostics import alignment, report, scoring, stats, tree
from opd_jax.diagnostics.directions import OBJECTIVES
from opd_jax.rollouts import Sampling, sample

_PROMPT = np.asarray([0, 1, 5, 7])
_PROMPT_MASK = np.asarray([False, True, True, True])
# The teacher's own prompt: longer than the student's, left-padded too.
_T_PROMPT = np.asarray([0, 0, 1, 9, 4, 3, 5, 7])
_T_MASK = np.asarray([False, False, True, True, True, True, True, True])
_CONFIG = tree.TreeConfig(
    num_rollouts=8,
    top_c=2,
    continuations=6,
    nodes_per_window=2,
    budget=8 + 4 * 6 * 4,
    max_new_tokens=4,
    batch_rows=4,
)


@pytest.fixture(scope="module")
def models():
  cfg = testing.tiny_config("llama", vocab_size=12)
  student = testing.random_model(cfg, seed=7)
  student.final_norm.scale[...] = student.final_norm.scale[...] * 10
  teacher = testing.random_model(cfg.replace(embed_dim=64), seed=8)
  return student, teacher


def _even_third(responses):
  return [len(r) > 2 and r[2] % 2 == 0 for r in responses]


def _rollout(student, g=4, t=4):
  return sample(
      student,
      jnp.tile(jnp.asarray(_PROMPT, jnp.int32)[None], (g, 1)),
      jnp.tile(jnp.asarray(_PROMPT_MASK)[None], (g, 1)),
      jax.random.key(1),
      max_new_tokens=t,
      sampling=Sampling(temperature=1.0),
  )


def test_teacher_scores_its_own_prompt_then_the_response(models):
  student, teacher = models
  r = _rollout(student)
  g = r.response.shape[0]
  tp = jnp.tile(jnp.asarray(_T_PROMPT, jnp.int32)[None], (g, 1))
  tm = jnp.tile(jnp.asarray(_T_MASK)[None], (g, 1))
  stats_ = scoring.score_positions(
      student, teacher, r, top_c=2, teacher_prompt=tp, teacher_prompt_mask=tm
  )
  # A direct forward of [teacher prompt | response] through the teacher.
  tokens = jnp.concatenate([tp, r.response.astype(jnp.int32)], 1)
  mask = jnp.concatenate([tm, r.response_mask], 1)
  pt, t = tp.shape[1], r.response.shape[1]
  logits = teacher(tokens, attention_mask=mask).logits[:, pt - 1 : pt - 1 + t]
  want = jnp.take_along_axis(
      jax.nn.log_softmax(logits, -1), stats_.children, -1
  )
  valid = np.asarray(r.response_mask)
  np.testing.assert_allclose(
      np.asarray(stats_.teacher_log_probs)[valid],
      np.asarray(want)[valid],
      rtol=1e-5,
      atol=1e-5,
  )
  # The student's side does not see the teacher's prompt.
  plain = scoring.score_positions(student, teacher, r, top_c=2)
  np.testing.assert_array_equal(
      np.asarray(stats_.student_log_probs)[valid][:, :3],
      np.asarray(plain.student_log_probs)[valid][:, :3],
  )
  # The student's own prompt as the teacher's is exactly the plain pass.
  same = scoring.score_positions(
      student,
      teacher,
      r,
      top_c=2,
      teacher_prompt=r.prompt,
      teacher_prompt_mask=r.prompt_mask,
  )
  for f in ("children", "teacher_log_probs", "kl", "rkl_norm"):
    np.testing.assert_array_equal(
        np.asarray(getattr(same, f))[valid],
        np.asarray(getattr(plain, f))[valid],
    )


def test_given_children_are_scored_as_given(models):
  student, teacher = models
  r = _rollout(student)
  plain = scoring.score_positions(student, teacher, r, top_c=2)
  kids = np.asarray(plain.children)[..., ::-1].copy()
  out = scoring.score_positions(student, student, r, top_c=2, children=kids)
  np.testing.assert_array_equal(np.asarray(out.children), kids)
  # The student as its own teacher: both sides give the same numbers.
  np.testing.assert_allclose(
      np.asarray(out.teacher_log_probs),
      np.asarray(out.student_log_probs),
      rtol=1e-6,
      atol=1e-6,
  )
  with pytest.raises(ValueError, match="children must be"):
    scoring.score_positions(
        student, teacher, r, top_c=2, children=kids[..., 1:]
    )


def test_configurations_share_the_tree(models):
  student, teacher = models
  setups = [
      alignment.TeacherSetup("teacher", teacher),
      alignment.TeacherSetup("self:ctx", student, _T_PROMPT, _T_MASK),
      # The first configuration again under another name: same numbers.
      alignment.TeacherSetup("again", teacher),
  ]
  res = alignment.diagnose_question(
      student,
      setups,
      _PROMPT,
      _PROMPT_MASK,
      _even_third,
      _CONFIG,
      jax.random.key(0),
  )
  assert list(res.by_teacher) == ["teacher", "self:ctx", "again"]
  assert res.nodes is res.by_teacher["teacher"] and res.nodes
  json.dumps(res.by_teacher)
  keys = ("rollout", "position", "children", "visits", "successes", "in_k_u")
  for name in ("self:ctx", "again"):
    for a, b in zip(res.nodes, res.by_teacher[name]):
      assert all(a[k] == b[k] for k in keys)
      assert a["student_prob"] == b["student_prob"]
  assert res.by_teacher["again"] == res.nodes
  # The self-teacher's probabilities are the student's under the context.
  n = next(n for n in res.by_teacher["self:ctx"] if n["position"] == 0)
  real = _T_PROMPT[_T_MASK].tolist()
  probs = np.asarray(jax.nn.softmax(student(jnp.asarray([real])).logits[0, -1]))
  np.testing.assert_allclose(n["teacher_prob"], probs[n["children"]], rtol=1e-4)
  paired = stats.compare_teachers(res.by_teacher)
  for obj in OBJECTIVES:
    same = paired["again"][obj]
    assert same["mean_difference"] in (0.0, None) and same["wilcoxon_p"] is None


def test_diagnose_checks_the_configurations(models):
  student, teacher = models
  prompts, masks = _PROMPT[None], _PROMPT_MASK[None]
  dup = [alignment.TeacherSetup("a", teacher)] * 2
  with pytest.raises(ValueError, match="distinct names"):
    alignment.diagnose(
        student, dup, prompts, masks, [_even_third], _CONFIG, jax.random.key(0)
    )
  rows = alignment.TeacherSetup(
      "self:ctx", student, np.stack([_T_PROMPT] * 2), np.stack([_T_MASK] * 2)
  )
  with pytest.raises(ValueError, match="2 prompts for 1 questions"):
    alignment.diagnose(
        student,
        [rows],
        prompts,
        masks,
        [_even_third],
        _CONFIG,
        jax.random.key(0),
    )


def _nodes(shift, seed):
  rng = np.random.default_rng(seed)
  out = []
  for i in range(30):
    a = float(np.clip(rng.normal(shift, 0.2), -1, 1))
    out.append({
        "question": i // 10,
        "rollout": i % 4,
        "position": i % 5,
        "depth": (i % 5) / 6,
        "window": (i % 5).bit_length() // 2,
        "rollout_correct": i % 3 == 0,
        "ideal_norm": 1.0,
        "teacher_advantage": 0.1,
        "kl": 0.5,
        "l2": 0.2,
        "cos": float(i % 7) / 7,
        "align": {o: a for o in OBJECTIVES},
    })
  return out


def test_teacher_report_side_by_side(tmp_path):
  by_teacher = {"teacher": _nodes(0.0, 0), "self:solution": _nodes(0.5, 1)}
  questions = [{"accuracy": 0.25, "rollouts": 40, "nodes": 10}] * 3
  out = tmp_path / "report"
  summaries = report.write_teacher_report(
      str(out), by_teacher, questions, {"student": "s"}
  )
  assert list(summaries) == ["teacher", "self:solution"]
  with open(out / "summary.json") as f:
    data = json.load(f)
  assert list(data["teachers"]) == ["teacher", "self:solution"]
  d = data["paired"]["self:solution"]["rkl"]
  assert d["nodes"] == 30 and d["mean_difference"] > 0.3
  assert d["wilcoxon_p"] < 1e-3
  text = (out / report.REPORT).read_text()
  assert text.startswith("# Gradient alignment (Unmasking OPD) by teacher")
  assert "| self:solution | rkl | 30 |" in text
  for i, name in enumerate(by_teacher):
    sub = out / report.teacher_dir(i, name)
    assert (sub / report.REPORT).is_file() and (sub / "nodes.json").is_file()
    assert f"({report.teacher_dir(i, name)}/{report.REPORT})" in text
  assert report.teacher_dir(1, "self:solution") == os.path.join(
      "teachers", "1-self_solution"
  )
  # One configuration: the single report's layout, as before.
  one = tmp_path / "one"
  report.write_teacher_report(
      str(one), {"teacher": _nodes(0, 0)}, questions, {}
  )
  assert not (one / "teachers").exists() and (one / "nodes.json").is_file()
