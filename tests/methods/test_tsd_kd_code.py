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
"""TSD-KD's code-faithful reading against a numpy port of the released code.

`_released_loss` transcribes `DistillTrainer.generalized_jsd_loss` and
`indirect_kd_loss` of kmswin1/TSD-KD (one micro-batch, no padding, K = 10,
temperature 1) line by line into float64 numpy.
"""

import dataclasses

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from opd_jax import methods
from opd_jax.methods import tsd_kd

B, T, D, V = 4, 9, 6, 23


def _log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _released_loss(zs, zt, beta=0.9, c=0.1, alpha=0.1, k=10):
  """The released code's loss on one micro-batch without padding."""
  ls, lt = _log_softmax(zs), _log_softmax(zt)
  mix = np.logaddexp(ls + np.log(1 - beta), lt + np.log(beta))
  ps, pt = np.exp(ls), np.exp(lt)
  hs, ht = -(ps * ls).sum(-1), -(pt * lt).sum(-1)
  weight = 1 / (1 + np.exp(-(hs - ht)))
  flat = hs.reshape(-1)  # entropies[mask]: row-major, all valid
  threshold = np.quantile(flat, c)
  entropy_mask = hs >= threshold
  cum = np.cumsum(flat / flat.sum())
  d_token_len = int(np.argmax(cum >= c))
  # indirect_kd_loss on [:, :d_token_len]
  top = np.argsort(-zs[:, :d_token_len], axis=-1, kind="stable")[..., :k]
  s_top = np.take_along_axis(zs[:, :d_token_len], top, -1)
  t_top = np.take_along_axis(zt[:, :d_token_len], top, -1)
  order = np.argsort(-t_top, axis=-1, kind="stable")
  s_sorted = np.take_along_axis(s_top, order, -1)
  s_sorted = s_sorted - s_sorted.mean(-1, keepdims=True)
  log_cumsum = np.logaddexp.accumulate(s_sorted, axis=-1)
  topk = -(s_sorted - log_cumsum).sum(-1)
  topk_loss = topk.sum() / (topk.size + 1e-8) if topk.size else 0.0
  kl_t = (pt * (lt - mix)).sum(-1)
  kl_s = (ps * (ls - mix)).sum(-1)
  jsd = (beta * kl_t + (1 - beta) * kl_s) * weight
  loss = jsd.sum() / jsd.size
  loss += (hs * entropy_mask).sum() / entropy_mask.sum()
  loss += alpha * topk_loss
  return loss, d_token_len, entropy_mask


def _inputs(seed):
  rng = np.random.default_rng(seed)
  arr = lambda *s: rng.standard_normal(s).astype(np.float32)
  return methods.StepInputs(
      student_hidden=jnp.asarray(arr(B, T, D)),
      student_head=jnp.asarray(arr(D, V)),
      teacher_hidden=jnp.asarray(arr(B, T, D + 1)),
      teacher_head=jnp.asarray(arr(D + 1, V)),
      ids=jnp.zeros((B, T), jnp.int32),
      mask=jnp.ones((B, T), bool),
      sampler_logprobs=jnp.zeros((B, T)),
      key=jax.random.key(seed),
  )


class CodeFaithfulTest(parameterized.TestCase):

  @parameterized.parameters(0, 1, 2)
  def test_one_micro_batch_equals_the_released_code(self, seed):
    inputs = _inputs(seed)
    cfg = {**tsd_kd.CODE_FAITHFUL, "opener_group_rows": B, "em_group_rows": B}
    m = methods.build_method("tsd_kd", {**cfg, "chunk_size": 4})
    loss, metrics = m.loss(inputs)
    f64 = lambda x: np.asarray(x, np.float64)
    zs = f64(inputs.student_hidden) @ f64(inputs.student_head)
    zt = f64(inputs.teacher_hidden) @ f64(inputs.teacher_head)
    want, n_star, em_set = _released_loss(zs, zt)
    np.testing.assert_allclose(float(loss), want, rtol=2e-5)
    counts = lambda key: round(float(metrics[key]) * B * T)
    self.assertEqual(counts("select/opener_frac"), n_star * B)
    self.assertEqual(counts("select/em_frac"), em_set.sum())
    self.assertGreater(em_set.mean(), 0.85)

  def test_code_faithful_preset_and_defaults(self):
    self.assertEqual(
        tsd_kd.CODE_FAITHFUL,
        dict(
            em_ratio=0.9,
            em_rule="quantile",
            em_group_rows=4,
            pl_code_compat=True,
            opener_group_rows=4,
        ),
    )
    m = methods.build_method("tsd_kd", {})
    self.assertEqual(
        (m.em_weight, m.em_rule, m.em_ratio, m.em_group_rows),
        (1.0, "top", 0.1, 0),
    )
    self.assertEqual((m.opener_group_rows, m.opener_batch_flat), (0, False))
    self.assertFalse(m.pl_code_compat)

  def test_em_weight_scales_the_em_term(self):
    inputs = _inputs(3)
    loss1, m1 = methods.build_method("tsd_kd", {}).loss(inputs)
    loss4, m4 = methods.build_method("tsd_kd", {"em_weight": 4.0}).loss(inputs)
    np.testing.assert_allclose(
        float(loss4), float(loss1 + 3.0 * m1["loss/em"]), rtol=1e-5
    )
    np.testing.assert_allclose(m4["loss/em"], m1["loss/em"], rtol=1e-6)
    grad = lambda w: jax.grad(
        lambda h: methods.build_method("tsd_kd", {"em_weight": w}).loss(
            dataclasses.replace(inputs, student_hidden=h)
        )[0]
    )(inputs.student_hidden)
    no_em = methods.build_method("tsd_kd", {"em_ratio": 0.0})
    want = jax.grad(
        lambda h: no_em.loss(dataclasses.replace(inputs, student_hidden=h))[0]
    )(inputs.student_hidden)
    np.testing.assert_allclose(grad(0.0), want, rtol=1e-5, atol=1e-7)

  @parameterized.parameters(
      ("em_weight", -0.5, r"config\.tsd_kd\.em_weight must be in \[0"),
      ("em_rule", "percentile", r"config\.tsd_kd\.em_rule must be one of"),
      ("opener_group_rows", -1, r"config\.tsd_kd\.opener_group_rows"),
      ("em_group_rows", 2.5, r"config\.tsd_kd\.em_group_rows"),
  )
  def test_bad_fields_name_themselves(self, field, value, pattern):
    with self.assertRaisesRegex(ValueError, pattern):
      methods.build_method("tsd_kd", {field: value})

  def test_conflicting_fields_are_refused(self):
    with self.assertRaisesRegex(ValueError, r"opener_batch_flat=True"):
      methods.build_method(
          "tsd_kd", {"opener_group_rows": 4, "opener_batch_flat": True}
      )
    with self.assertRaisesRegex(ValueError, r"needs config\.tsd_kd\.em_rule"):
      methods.build_method("tsd_kd", {"em_group_rows": 4})


if __name__ == "__main__":
  absltest.main()
