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
"""Tests for TSD-KD's objective: the EM and indirect terms and their sum."""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from opd_jax import losses
from opd_jax import selection
from opd_jax.methods import tsd_kd
from tsd_kd_reference import B, K, T
from tsd_kd_reference import inputs as _inputs
from tsd_kd_reference import np_em_quantile as _np_em_quantile
from tsd_kd_reference import np_opener_groups as _np_opener_groups


class EntropyMinLossTest(absltest.TestCase):

  def test_loss_value_and_gradient(self):
    hs, _, mask, _ = _inputs(2)
    in_set = np.asarray(selection.entropy_min_set(hs, mask))
    total, count = tsd_kd.entropy_min_loss(hs, mask)
    self.assertAlmostEqual(float(total), hs[in_set].sum(), places=3)
    self.assertEqual(float(count), in_set.sum())
    grad = jax.grad(lambda h: tsd_kd.entropy_min_loss(h, mask)[0])(
        jnp.asarray(hs)
    )
    np.testing.assert_array_equal(grad, in_set.astype(np.float32))


class IndirectLossTest(absltest.TestCase):

  def test_indirect_loss_reduces_over_opener(self):
    rng = np.random.default_rng(4)
    zs = rng.normal(size=(B, T, K)).astype(np.float32)
    zt = rng.normal(size=(B, T, K)).astype(np.float32)
    hs, _, mask, _ = _inputs(4)
    opener = selection.opener_mask(hs, mask)
    total, count = tsd_kd.indirect_loss(zs, zt, opener)
    nll = np.asarray(losses.plackett_luce_nll(zs, zt))
    self.assertAlmostEqual(float(total), nll[np.asarray(opener)].sum(), 3)
    self.assertEqual(float(count), np.asarray(opener).sum())
    grad = jax.grad(lambda z: tsd_kd.indirect_loss(z, zt, opener)[0])(
        jnp.asarray(zs)
    )
    self.assertTrue(np.all(np.asarray(grad)[~np.asarray(opener)] == 0))


class ObjectiveTest(absltest.TestCase):

  def _pieces(self, seed, t=T):
    hs, ht, mask, _ = _inputs(seed, t=t)
    rng = np.random.default_rng(seed + 100)
    return dict(
        student_entropy=hs,
        teacher_entropy=ht,
        direct_divergence=rng.random((B, t)).astype(np.float32),
        student_candidate_logits=rng.normal(size=(B, t, K)).astype(np.float32),
        teacher_candidate_logits=rng.normal(size=(B, t, K)).astype(np.float32),
        mask=mask,
    )

  def test_value_matches_the_pieces(self):
    p = self._pieces(0)
    loss, terms = tsd_kd.tsd_kd_objective(**p)
    mask = p["mask"]
    gate = np.asarray(
        selection.confidence_gate(p["student_entropy"], p["teacher_entropy"])
    )
    direct = (gate * p["direct_divergence"])[mask].mean()
    opener = selection.opener_mask(p["student_entropy"], mask)
    ind = tsd_kd.indirect_loss(
        p["student_candidate_logits"], p["teacher_candidate_logits"], opener
    )
    em = tsd_kd.entropy_min_loss(p["student_entropy"], mask)
    want = 0.1 * ind[0] / ind[1] + direct + em[0] / em[1]
    self.assertAlmostEqual(float(loss), float(want), places=4)
    self.assertEqual(set(terms), {"indirect", "direct", "em"})
    # The EM weight scales the EM term alone.
    loss3, terms3 = tsd_kd.tsd_kd_objective(**p, em_weight=3.0)
    self.assertAlmostEqual(
        float(loss3), float(want + 2.0 * em[0] / em[1]), places=4
    )
    for k in terms:
      np.testing.assert_array_equal(terms3[k], terms[k])
    loss0, _ = tsd_kd.tsd_kd_objective(**p, em_weight=0.0)
    self.assertAlmostEqual(float(loss0), float(want - em[0] / em[1]), 4)

  def test_code_reading_uses_its_sets(self):
    p = self._pieces(2)
    hs, mask = p["student_entropy"], p["mask"]
    _, terms = tsd_kd.tsd_kd_objective(
        **p,
        opener_group_rows=2,
        em_ratio=0.9,
        em_rule="quantile",
        em_group_rows=2,
        pl_code_compat=True,
    )
    em_set = _np_em_quantile(hs, mask, 0.9, 2)
    opener = _np_opener_groups(hs, mask, 0.1, 2)
    self.assertAlmostEqual(float(terms["em"][0]), hs[em_set].sum(), places=3)
    self.assertEqual(float(terms["em"][1]), em_set.sum())
    nll = np.asarray(
        losses.plackett_luce_nll(
            p["student_candidate_logits"],
            p["teacher_candidate_logits"],
            code_compat=True,
        )
    )
    self.assertAlmostEqual(float(terms["indirect"][0]), nll[opener].sum(), 3)
    self.assertEqual(float(terms["indirect"][1]), opener.sum())

  def test_gradients_are_finite_and_masked(self):
    p = self._pieces(1)
    mask = p.pop("mask")
    diff = ("student_entropy", "direct_divergence", "student_candidate_logits")
    grads = jax.grad(lambda d: tsd_kd.tsd_kd_objective(mask=mask, **p, **d)[0])(
        {k: jnp.asarray(p.pop(k)) for k in diff}
    )
    for name, g in grads.items():
      g = np.asarray(g)
      self.assertTrue(np.all(np.isfinite(g)), name)
      self.assertTrue(np.all(g[~mask] == 0), name)

  def test_padding_invariance_and_single_compile(self):
    traces = []

    def fn(p):
      traces.append(1)
      hs, mask = p["student_entropy"], p["mask"]
      return (
          tsd_kd.tsd_kd_objective(**p)[0],
          tsd_kd.tsd_kd_objective(
              **p,
              opener_group_rows=3,
              em_ratio=0.9,
              em_rule="quantile",
              em_group_rows=3,
              pl_code_compat=True,
          )[0],
          selection.opener_mask(hs, mask),
          selection.opener_mask(hs, mask, batch_flat=True),
          selection.opener_mask(hs, mask, group_rows=3),
          selection.entropy_min_set(hs, mask),
          selection.entropy_min_set(
              hs, mask, ratio=0.9, rule="quantile", group_rows=3
          ),
          selection.confidence_gate(hs, p["teacher_entropy"]) * mask,
      )

    jitted = jax.jit(fn)
    rng = np.random.default_rng(9)
    for seed in range(2):
      short = self._pieces(seed)
      long = {}
      for k, v in short.items():
        pad = [(0, 0), (0, T)] + [(0, 0)] * (v.ndim - 2)
        fill = False if v.dtype == bool else 0
        long[k] = np.pad(v, pad, constant_values=fill)
        if v.dtype != bool:
          long[k][:, T:] = rng.random(long[k][:, T:].shape) * 5
      out_s, out_l = jitted(short), jitted(long)
      self.assertAlmostEqual(float(out_s[0]), float(out_l[0]), places=5)
      self.assertAlmostEqual(float(out_s[1]), float(out_l[1]), places=5)
      for a, b in zip(out_s[2:], out_l[2:]):
        np.testing.assert_array_equal(np.asarray(b)[:, :T], a)
        np.testing.assert_array_equal(np.asarray(b)[:, T:], 0)
    self.assertLen(traces, 2)  # One trace per shape, none per new value.


if __name__ == "__main__":
  absltest.main()
