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
"""TOPD's loss, NDS mask, trajectory term and stage helpers vs float64 numpy."""

import re

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from opd_jax import losses
from opd_jax import methods
from opd_jax.methods import topd_stage
import topd_reference as ref

B, T, D, V, CHUNK = 3, 10, 6, 17, 4


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  arr = lambda *s: jnp.asarray(rng.standard_normal(s), jnp.float32)
  mask = np.ones((B, T), bool)
  mask[1, T - 3 :] = False
  mask[2, T // 2 :] = False
  return methods.StepInputs(
      student_hidden=arr(B, T, D),
      student_head=arr(D, V),
      teacher_hidden=arr(B, T, D + 1),
      teacher_head=arr(D + 1, V),
      ids=jnp.asarray(rng.integers(0, V, (B, T)), jnp.int32),
      mask=jnp.asarray(mask),
      sampler_logprobs=jnp.zeros((B, T)),
      key=jax.random.key(seed),
  )


def _logits(inputs):
  zs = np.asarray(inputs.student_hidden) @ np.asarray(inputs.student_head)
  zt = np.asarray(inputs.teacher_hidden) @ np.asarray(inputs.teacher_head)
  return zs, zt


def _segment_logits(inputs):
  seg = inputs.segment
  return (
      np.asarray(seg.student_hidden) @ np.asarray(inputs.student_head),
      np.asarray(seg.teacher_hidden) @ np.asarray(inputs.teacher_head),
  )


class ConfigTest(parameterized.TestCase):

  @parameterized.parameters(
      ("rho_loss", 0.0, r"\(0, 1\]"),
      ("rho_loss", 1.5, r"\(0, 1\]"),
      ("max_candidates", 0, ">= 1"),
      ("window", 0, ">= 1"),
      ("ot_quantile", -0.1, r"\[0, 1\]"),
      ("ot_quantile", 1.2, r"\[0, 1\]"),
      ("lambda_traj", -1.0, r"\[0, inf\]"),
      ("w_low", 1.5, r"\[0, 1\]"),
      ("ot_epsilon", 0.0, r"\(0"),
      ("ot_iterations", 0, ">= 1"),
      ("traj_window", "both", "student"),
      ("traj_divergence", "kl", "forward"),
      ("score_divergence", "l2", "reverse_kl"),
      ("loss_pass.divergence", "kl", "reverse"),
  )
  def test_bad_field_is_named(self, field, value, allowed):
    *block, leaf = field.split(".")
    args = {block[0]: {leaf: value}} if block else {leaf: value}
    with self.assertRaisesRegex(
        ValueError, rf"config\.topd\.{re.escape(field)} .*{allowed}"
    ):
      methods.build_method("topd", args)

  def test_more_candidates_than_tokens(self):
    m = methods.build_method("topd", {"max_candidates": T + 1})
    with self.assertRaisesRegex(
        ValueError, rf"config\.topd\.max_candidates .*T = {T}.*{T + 1}"
    ):
      m.prepare_shapes(2, 5, T)
    with self.assertRaisesRegex(ValueError, r"config\.topd\.max_candidates"):
      m.loss(ref.synthetic_stage(_inputs()))

  def test_loss_without_the_stage_outputs(self):
    m = methods.build_method("topd")
    with self.assertRaisesRegex(ValueError, r"topd.*prepare\(\)"):
      m.loss(_inputs())
    with self.assertRaisesRegex(ValueError, r"topd.*segment"):
      m.loss(ref.synthetic_stage(_inputs()).replace(segment=None))

  def test_staged_and_shapes(self):
    m = methods.build_method("topd")
    self.assertTrue(methods.has_stage(m))
    self.assertFalse(methods.has_stage(methods.build_method("tip")))
    shapes = m.prepare_shapes(4, 6, 12)
    self.assertEqual(shapes[topd_stage.CAND_INDEX].shape, (4, 8))
    # 32 candidates, q = 0.8: at most ceil(31 * 0.2) = 7 exceed it.
    self.assertEqual(shapes["segment/tokens"].shape, (7, 6 + 12 + 50))
    self.assertEqual(shapes["segment/response_mask"].shape, (7, 50))
    nds_only = methods.build_method("topd", {"lambda_traj": 0.0})
    self.assertNotIn("segment/tokens", nds_only.prepare_shapes(4, 6, 12))
    student = methods.build_method("topd", {"traj_window": "student"})
    self.assertNotIn("segment/tokens", student.prepare_shapes(4, 6, 12))


class StageHelpersTest(parameterized.TestCase):

  @parameterized.parameters((0.2, 3), (0.5, 4), (1.0, 10))
  def test_candidates_match_numpy(self, rho, n):
    rng = np.random.default_rng(0)
    score = rng.integers(0, 4, (5, T)).astype(np.float32)  # many ties
    mask = np.arange(T)[None] < np.array([10, 7, 3, 0, 5])[:, None]
    index, valid = topd_stage.pick_candidates(score, mask, rho, n)
    want_index, want_valid = ref.np_candidates(score, mask, rho, n)
    np.testing.assert_array_equal(valid, want_valid)
    np.testing.assert_array_equal(
        np.where(valid, index, -1), np.where(want_valid, want_index, -1)
    )

  def test_high_ot_matches_numpy_quantile(self):
    rng = np.random.default_rng(1)
    ot = rng.uniform(size=(4, 5)).astype(np.float32)
    valid = rng.uniform(size=(4, 5)) < 0.7
    for q in (0.0, 0.5, 0.8, 1.0):
      got = topd_stage.high_ot(ot, valid, q)
      want = valid & (ot > np.quantile(ot[valid], q))
      np.testing.assert_array_equal(got, want)

  def test_trajectory_budget_holds_every_divergent_state(self):
    rng = np.random.default_rng(2)
    for n in range(1, 41):
      for q in (0.0, 0.3, 0.5, 0.8, 0.95, 1.0):
        m = topd_stage.trajectory_budget(n, q)
        for _ in range(5):
          x = rng.integers(0, 3, rng.integers(1, n + 1)).astype(float)
          self.assertLessEqual(int((x > np.quantile(x, q)).sum()), m)
    self.assertEqual(topd_stage.trajectory_budget(32, 0.8), 7)
    self.assertEqual(topd_stage.trajectory_budget(1, 0.8), 1)

  def test_trajectory_rows_take_the_divergent_ones(self):
    ot = jnp.asarray([0.1, 0.9, 0.5, 0.7, 0.3])
    high = jnp.asarray([False, True, False, True, False])
    rows, valid = topd_stage.trajectory_rows(ot, high, 3)
    np.testing.assert_array_equal(rows[:2], [1, 3])
    np.testing.assert_array_equal(valid, [True, True, False])

  def test_suppression_mask(self):
    index = jnp.asarray([[3, 1, 0], [2, 4, 0]])
    valid = jnp.asarray([[True, True, False], [True, True, True]])
    high = jnp.asarray([[True, False, False], [False, False, True]])
    got = topd_stage.suppression_mask(index, valid, high, 5)
    want = np.zeros((2, 5), bool)
    want[0, 1] = want[1, 2] = want[1, 4] = True
    np.testing.assert_array_equal(got, want)


class LossTest(parameterized.TestCase):

  @parameterized.parameters(
      dict(),  # w_low = 0, lambda = 1, teacher windows
      dict(w_low=0.5, lambda_traj=0.3, chunk=CHUNK),
      dict(w_low=1.0),  # trajectory only
      dict(lambda_traj=0.0),  # NDS only
      dict(traj_window="student", window=3, chunk=CHUNK),
  )
  def test_matches_float64_numpy(self, chunk=None, **cfg):
    inputs = ref.synthetic_stage(_inputs(3), seed=4)
    m = methods.build_method(
        "topd", {"loss_pass": {"chunk_size": chunk}, **cfg}
    )
    loss, metrics = m.loss(inputs)
    ex = {k: np.asarray(v) for k, v in inputs.extras.items()}
    mask = np.asarray(inputs.mask)
    weights = ref.np_nds_weights(
        mask,
        ex[topd_stage.CAND_INDEX],
        ex[topd_stage.CAND_VALID],
        ex[topd_stage.HIGH_OT],
        m.w_low,
    )
    np.testing.assert_allclose(m.nds_weights(inputs), weights)
    zs, zt = _logits(inputs)
    opd = ref.np_opd_term(zs, zt, weights)
    if m.traj_window == "teacher":
      traj = ref.np_teacher_window_term(
          *_segment_logits(inputs), np.asarray(inputs.segment.mask)
      )
    else:
      traj = ref.np_student_window_term(
          zs,
          zt,
          mask,
          ex[topd_stage.CAND_INDEX],
          ex[topd_stage.HIGH_OT],
          m.window,
      )
    self.assertGreater(traj, 0.0)
    np.testing.assert_allclose(metrics["loss/rkl"], opd, rtol=1e-5)
    np.testing.assert_allclose(loss, opd + m.lambda_traj * traj, rtol=1e-5)
    if m.lambda_traj:
      np.testing.assert_allclose(metrics["loss/traj"], traj, rtol=1e-5)
    else:
      self.assertNotIn("loss/traj", metrics)
    np.testing.assert_allclose(metrics["select/count"], (weights > 0).sum())

  def test_suppression_changes_the_loss(self):
    inputs = ref.synthetic_stage(_inputs(5), seed=6)
    masked = methods.build_method("topd", {"lambda_traj": 0.0})
    plain = methods.build_method("topd", {"lambda_traj": 0.0, "w_low": 1.0})
    zs, zt = _logits(inputs)
    plain_want = losses.token_mean(
        losses.reverse_kl(zs, zt), inputs.mask
    ).value()
    np.testing.assert_allclose(plain.loss(inputs)[0], plain_want, rtol=1e-5)
    self.assertNotAlmostEqual(
        float(masked.loss(inputs)[0]), float(plain_want), places=4
    )

  @parameterized.parameters("teacher", "student")
  def test_the_pointwise_clip_reaches_both_terms(self, traj_window):
    # TOPD's loss goes through its loss pass, like every loss-pass method's:
    # each token's divergence is clipped at StepInputs.divergence_clip.
    inputs = ref.synthetic_stage(_inputs(9), seed=10)
    m = methods.build_method(
        "topd", {"w_low": 1.0, "lambda_traj": 1.0, "traj_window": traj_window}
    )
    self.assertTrue(methods.has_loss_pass(m))
    clip = 1e-3  # below every token's divergence: each adds exactly `clip`
    _, metrics = m.loss(inputs.replace(divergence_clip=clip))
    mask = np.asarray(inputs.mask)
    np.testing.assert_allclose(metrics["loss/rkl"], clip, rtol=1e-5)
    ex = {k: np.asarray(v) for k, v in inputs.extras.items()}
    if traj_window == "teacher":
      want = clip  # a mean over each window, then over the windows
    else:
      weights = topd_stage.student_window_weights(
          ex[topd_stage.CAND_INDEX], ex[topd_stage.HIGH_OT], mask, m.window
      )
      want = clip * float(np.asarray(weights).sum())
    np.testing.assert_allclose(metrics["loss/traj"], want, rtol=1e-5)

  def test_gradient_equals_dense_reference(self):
    inputs = ref.synthetic_stage(_inputs(7), seed=8)
    m = methods.build_method(
        "topd",
        {"loss_pass": {"chunk_size": CHUNK}, "w_low": 0.25, "lambda_traj": 0.7},
    )
    weights = m.nds_weights(inputs)
    seg = inputs.segment

    def loss(hs, seg_hs, w):
      got = m.loss(
          inputs.replace(
              student_hidden=hs,
              student_head=w,
              segment=seg.replace(student_hidden=seg_hs),
          )
      )
      return got[0]

    def dense(hs, seg_hs, w):
      opd = losses.reverse_kl(
          hs @ w, inputs.teacher_hidden @ inputs.teacher_head
      )
      opd = jnp.sum(weights * opd) / jnp.sum(weights)
      fkl = losses.forward_kl(
          seg_hs @ w, seg.teacher_hidden @ inputs.teacher_head, where=seg.mask
      )
      rows = fkl.sum(1) / seg.mask.sum(1)
      return opd + 0.7 * rows.mean()

    args = (inputs.student_hidden, seg.student_hidden, inputs.student_head)
    got = jax.grad(loss, argnums=(0, 1, 2))(*args)
    want = jax.grad(dense, argnums=(0, 1, 2))(*args)
    for g, w in zip(got, want):
      np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)

  def test_stage_metrics(self):
    inputs = ref.synthetic_stage(_inputs(9), seed=10)
    _, metrics = methods.build_method("topd").loss(inputs)
    ex = {k: np.asarray(v) for k, v in inputs.extras.items()}
    valid, high = ex[topd_stage.CAND_VALID], ex[topd_stage.HIGH_OT]
    ot, score = ex[topd_stage.OT][valid], ex[topd_stage.CAND_SCORE][valid]
    self.assertEqual(float(metrics["topd/candidates"]), valid.sum())
    self.assertEqual(float(metrics["topd/divergent"]), high.sum())
    np.testing.assert_allclose(
        metrics["topd/false_alarm_frac"], (valid & ~high).sum() / valid.sum()
    )
    for q in (10, 50, 90):
      np.testing.assert_allclose(
          metrics[f"topd/ot_q{q}"], np.quantile(ot, q / 100), rtol=1e-6
      )
    np.testing.assert_allclose(
        metrics["topd/loss_ot_corr"], np.corrcoef(score, ot)[0, 1], rtol=1e-5
    )
    self.assertEqual(float(metrics["topd/traj_rows"]), 2.0)


if __name__ == "__main__":
  absltest.main()
