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
"""TOPD's jitted pre-update stage on tiny models, against its parts rebuilt."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from opd_jax import methods
from opd_jax import testing
from opd_jax.methods import topd_stage
from opd_jax.methods.topd_transport import window_ot_distance
from opd_jax.rollouts import Sampling, continue_from, sample
from opd_jax.trainer import stage
import topd_reference as ref

B, P, T, N, W = 3, 5, 12, 3, 6
EOS = (2,)

# Compiles the rollout sampler, the stage (two branch samplers) and the
# rebuilt parts eagerly: tens of seconds.
pytestmark = pytest.mark.slow


def _run_stage(method, student, teacher, rollout, key, **extra):
  """The jitted stage (`stage.compile_prepare`) on the rollout's batch
  (plus `extra` batch entries), as host arrays."""
  gs, ps = nnx.split(student)
  gt, pt = nnx.split(teacher)
  prepare = stage.compile_prepare(
      method, gs, gt, sampling=Sampling(), eos_ids=EOS, pad_id=0
  )
  batch = {
      "tokens": rollout.tokens,
      "mask": rollout.mask,
      "response_mask": rollout.response_mask,
      "sampler_logprobs": rollout.logprobs,
      **extra,
  }
  return jax.device_get(
      prepare(ps.to_pure_dict(), pt.to_pure_dict(), batch, key)
  )


@pytest.fixture(scope="module")
def run():
  student = testing.random_model(testing.tiny_config("qwen3"), seed=3)
  teacher = testing.random_model(testing.tiny_config("qwen3"), seed=4)
  rng = np.random.default_rng(0)
  prompt = rng.integers(3, 211, (B, P))
  prompt_mask = np.ones((B, P), bool)
  prompt_mask[1, :2] = False
  prompt = jnp.asarray(np.where(prompt_mask, prompt, 0), jnp.int32)
  rollout = sample(
      student,
      prompt,
      jnp.asarray(prompt_mask),
      jax.random.key(0),
      max_new_tokens=T,
      eos_ids=EOS,
  )
  method = methods.build_method(
      "topd",
      {"max_candidates": N, "window": W, "rho_loss": 0.5, "ot_quantile": 0.5},
  )
  key = jax.random.key(7)
  out = _run_stage(method, student, teacher, rollout, key)
  return dict(
      student=student,
      teacher=teacher,
      rollout=rollout,
      method=method,
      out=out,
      key=key,
  )


def test_shapes_are_the_announced_ones(run):
  want = run["method"].prepare_shapes(B, P, T)
  got = {k: (v.shape, v.dtype) for k, v in run["out"].items()}
  assert got == {k: (v.shape, v.dtype) for k, v in want.items()}


def test_candidates_are_the_top_reverse_kl_tokens(run):
  r = run["rollout"]
  t_ids, mask = np.asarray(r.tokens), np.asarray(r.mask)
  zs = run["student"](t_ids, attention_mask=mask).logits[:, P - 1 : -1]
  zt = run["teacher"](t_ids, attention_mask=mask).logits[:, P - 1 : -1]
  rmask = np.asarray(r.response_mask)
  rkl = np.where(rmask, ref.kl(zs, zt), 0.0)
  index, valid = ref.np_candidates(rkl, rmask, 0.5, N)
  out = run["out"]
  assert out[topd_stage.CAND_VALID].sum() > 0
  np.testing.assert_array_equal(out[topd_stage.CAND_VALID], valid)
  np.testing.assert_array_equal(
      np.where(valid, out[topd_stage.CAND_INDEX], -1),
      np.where(valid, index, -1),
  )
  np.testing.assert_allclose(
      np.where(valid, out[topd_stage.CAND_SCORE], 0.0),
      np.where(valid, np.take_along_axis(rkl, index, 1), 0.0),
      rtol=1e-4,
  )


def _rebuilt_windows(run, out, rollout, teacher_rollout):
  """The teacher's windows and the OT [B, N] rebuilt from the stage's cuts
  (the teacher branches from `teacher_rollout`, the student from
  `rollout`)."""
  valid = out[topd_stage.CAND_VALID]
  cut = jnp.asarray(np.where(valid, out[topd_stage.CAND_INDEX], -1))
  key_t, key_s = jax.random.split(run["key"])
  kw = dict(max_new_tokens=W, sampling=Sampling(), eos_ids=EOS, pad_id=0)
  tw = continue_from(run["teacher"], teacher_rollout, cut, key_t, **kw)
  sw = continue_from(run["student"], rollout, cut, key_s, **kw)
  table = run["student"].embedder.embedding[...]
  ot = np.asarray(
      window_ot_distance(
          table[tw.response],
          tw.response_mask,
          table[sw.response],
          sw.response_mask,
      )
  ).reshape(B, N)
  return tw, sw, ot


def test_windows_ot_and_segments_rebuilt(run):
  out, r = run["out"], run["rollout"]
  valid = out[topd_stage.CAND_VALID]
  tw, _, ot = _rebuilt_windows(run, out, r, r)
  np.testing.assert_allclose(
      out[topd_stage.OT], np.where(valid, ot, 0.0), atol=1e-5
  )
  high = valid & (ot > np.quantile(ot[valid], 0.5))
  np.testing.assert_array_equal(out[topd_stage.HIGH_OT], high)
  # Each divergent state is one segment row: its prefix, then the
  # teacher's window; the spare rows carry no window tokens.
  seg_ids, seg_win = out["segment/tokens"], out["segment/response_mask"]
  flat = np.flatnonzero(high.reshape(-1))
  assert seg_win.any(axis=1).sum() == len(flat)
  tokens = np.concatenate([tw.prompt, tw.response], axis=1)
  for row in range(seg_ids.shape[0]):
    if not seg_win[row].any():
      continue
    match = [i for i in flat if np.array_equal(tokens[i], seg_ids[row])]
    assert match, row
    np.testing.assert_array_equal(seg_win[row], tw.response_mask[match[0]])


@pytest.mark.parametrize("traj_window", ["teacher", "student"])
def test_a_teacher_context_scores_and_branches_the_teachers_sequence(
    run, traj_window
):
  # Under a teacher context the batch carries [teacher prompt | response]
  # (`teacher/tokens`): the teacher scores the candidates and samples its
  # windows after its own prompt; the student's side is unchanged. The
  # trajectory term's segments are the teacher's windows after each
  # model's own prefix.
  r = run["rollout"]
  pt = 7
  rng = np.random.default_rng(1)
  t_prompt = rng.integers(3, 211, (B, pt))
  t_prompt_mask = np.ones((B, pt), bool)
  t_prompt_mask[2, :3] = False
  t_prompt = jnp.asarray(np.where(t_prompt_mask, t_prompt, 0), jnp.int32)
  seen = r.replace(prompt=t_prompt, prompt_mask=jnp.asarray(t_prompt_mask))
  method = methods.build_method(
      "topd",
      {
          "max_candidates": N,
          "window": W,
          "rho_loss": 0.5,
          "ot_quantile": 0.5,
          "traj_window": traj_window,
      },
  )
  out = _run_stage(
      method,
      run["student"],
      run["teacher"],
      r,
      run["key"],
      **{"teacher/tokens": seen.tokens, "teacher/mask": seen.mask},
  )
  s_ids, s_mask = np.asarray(r.tokens), np.asarray(r.mask)
  t_ids, t_mask = np.asarray(seen.tokens), np.asarray(seen.mask)
  zs = run["student"](s_ids, attention_mask=s_mask).logits[:, P - 1 : -1]
  zt = run["teacher"](t_ids, attention_mask=t_mask).logits[:, pt - 1 : -1]
  rmask = np.asarray(r.response_mask)
  rkl = np.where(rmask, ref.kl(zs, zt), 0.0)
  index, valid = ref.np_candidates(rkl, rmask, 0.5, N)
  np.testing.assert_array_equal(out[topd_stage.CAND_VALID], valid)
  np.testing.assert_allclose(  # as in the test without a context
      np.where(valid, out[topd_stage.CAND_SCORE], 0.0),
      np.where(valid, np.take_along_axis(rkl, index, 1), 0.0),
      rtol=1e-4,
  )
  tw, sw, ot = _rebuilt_windows(run, out, r, seen)
  np.testing.assert_allclose(
      out[topd_stage.OT], np.where(valid, ot, 0.0), atol=1e-5
  )
  want = method.prepare_shapes(B, P, T, pt)
  assert {k: v.shape for k, v in out.items()} == {
      k: v.shape for k, v in want.items()
  }
  if traj_window == "student":  # the student's own windows: no segments
    assert "segment/tokens" not in out
    return
  high = out[topd_stage.HIGH_OT].reshape(-1)
  seg_win = out["segment/response_mask"]
  assert seg_win.any(axis=1).sum() == high.sum() > 0
  student_rows = np.concatenate([sw.prompt, tw.response], axis=1)
  teacher_rows = np.concatenate([tw.prompt, tw.response], axis=1)
  student_masks = np.concatenate([sw.prompt_mask, tw.response_mask], axis=1)
  teacher_masks = np.concatenate([tw.prompt_mask, tw.response_mask], axis=1)
  for row in range(seg_win.shape[0]):
    if not seg_win[row].any():
      continue
    # The same divergent state on both sides: [own prefix | its window].
    (i,) = [
        i
        for i in np.flatnonzero(high)
        if np.array_equal(teacher_rows[i], out["segment/teacher_tokens"][row])
    ]
    np.testing.assert_array_equal(out["segment/tokens"][row], student_rows[i])
    np.testing.assert_array_equal(out["segment/mask"][row], student_masks[i])
    np.testing.assert_array_equal(
        out["segment/teacher_mask"][row], teacher_masks[i]
    )
    assert out["segment/tokens"].shape[1] == P + T + W
    assert out["segment/teacher_tokens"].shape[1] == pt + T + W
