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
"""Tests of the per-token divergences against float64 references."""

import functools
import math

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
from jax.test_util import check_grads
import numpy as np
import pytest

from opd_jax import losses

B, T, V = 2, 3, 7


# ---- float64 numpy references -------------------------------------------


def _np_log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _np_kl(lp, lq):
  return (np.exp(lp) * (lp - lq)).sum(-1)


def _np_log_mix(lp, lq, w):
  return np.log(w * np.exp(lp) + (1 - w) * np.exp(lq))


def _np_divergence(name, zs, zt, tau=1.0, **kw):
  ls = _np_log_softmax(np.float64(zs) / tau)
  lt = _np_log_softmax(np.float64(zt) / tau)
  if name == "forward_kl":
    return _np_kl(lt, ls)
  if name == "reverse_kl":
    return _np_kl(ls, lt)
  if name == "generalized_jsd":
    beta = kw["beta"]
    if beta == 0:
      return _np_kl(lt, ls)
    if beta == 1:
      return _np_kl(ls, lt)
    lm = _np_log_mix(lt, ls, beta)
    return beta * _np_kl(lt, lm) + (1 - beta) * _np_kl(ls, lm)
  if name == "skew_forward_kl":
    return _np_kl(lt, _np_log_mix(lt, ls, kw["alpha"]))
  if name == "skew_reverse_kl":
    return _np_kl(ls, _np_log_mix(ls, lt, kw["alpha"]))
  if name == "total_variation":
    return 0.5 * np.abs(np.exp(ls) - np.exp(lt)).sum(-1)
  raise ValueError(name)


DIVERGENCES = (
    ("forward_kl", {}),
    ("reverse_kl", {}),
    ("generalized_jsd", {"beta": 0.5}),
    ("generalized_jsd", {"beta": 0.1}),
    ("generalized_jsd", {"beta": 0.0}),
    ("generalized_jsd", {"beta": 1.0}),
    ("skew_forward_kl", {"alpha": 0.1}),
    ("skew_reverse_kl", {"alpha": 0.3}),
    ("total_variation", {}),
)
NAMED = [
    dict(
        testcase_name=f"{n}_{'_'.join(f'{k}{v}' for k, v in kw.items())}",
        name=n,
        kw=kw,
    )
    for n, kw in DIVERGENCES
]


def _fn(name, kw):
  return functools.partial(getattr(losses, name), **kw)


def _logits(seed, scale=1.0, shape=(B, T, V)):
  rng = np.random.default_rng(seed)
  return [np.float32(scale * rng.standard_normal(shape)) for _ in range(2)]


class DivergenceTest(parameterized.TestCase):

  @parameterized.named_parameters(*NAMED)
  def test_matches_float64_reference(self, name, kw):
    fn = _fn(name, kw)
    for scale, tau in ((1.0, 1.0), (3.0, 0.7), (50.0, 1.0)):
      zs, zt = _logits(0, scale)
      # Near one-hot: a single dominant logit per row.
      zs[..., 0] += scale * 2
      got = fn(zs, zt, temperature=tau)
      self.assertEqual(got.shape, (B, T))
      self.assertEqual(got.dtype, jnp.float32)
      want = _np_divergence(name, zs, zt, tau, **kw)
      np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale)

  def test_hand_computed_two_tokens(self):
    zs = jnp.array([0.0, 0.0])  # p_S = (1/2, 1/2)
    zt = jnp.array([math.log(3.0), 0.0])  # p_T = (3/4, 1/4)
    fkl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    rkl = 0.5 * math.log(2 / 3) + 0.5 * math.log(2.0)
    m = (0.625, 0.375)
    jsd = 0.5 * (0.75 * math.log(0.75 / m[0]) + 0.25 * math.log(0.25 / m[1]))
    jsd += 0.5 * (0.5 * math.log(0.5 / m[0]) + 0.5 * math.log(0.5 / m[1]))
    # skew FKL, alpha = 0.5: M = (5/8, 3/8) as for the JSD.
    sfkl = 0.75 * math.log(0.75 / m[0]) + 0.25 * math.log(0.25 / m[1])
    np.testing.assert_allclose(losses.forward_kl(zs, zt), fkl, rtol=1e-6)
    np.testing.assert_allclose(losses.reverse_kl(zs, zt), rkl, rtol=1e-6)
    np.testing.assert_allclose(losses.generalized_jsd(zs, zt), jsd, rtol=1e-5)
    np.testing.assert_allclose(
        losses.skew_forward_kl(zs, zt, alpha=0.5), sfkl, rtol=1e-5
    )
    np.testing.assert_allclose(losses.total_variation(zs, zt), 0.25, rtol=1e-6)
    np.testing.assert_allclose(
        losses.entropy(zt),
        -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)),
        rtol=1e-6,
    )

  def test_hand_computed_three_tokens_temperature(self):
    # tau = 2 turns logits (2 log 2, 0, 0) into p = (1/2, 1/4, 1/4).
    zs = jnp.array([2 * math.log(2.0), 0.0, 0.0])
    zt = jnp.zeros(3)  # uniform
    rkl = 0.5 * math.log(1.5) + 2 * 0.25 * math.log(0.75)
    np.testing.assert_allclose(
        losses.reverse_kl(zs, zt, temperature=2.0), rkl, rtol=1e-6
    )
    np.testing.assert_allclose(
        losses.total_variation(zs, zt, temperature=2.0), 1 / 6, rtol=1e-6
    )

  @parameterized.named_parameters(*NAMED)
  def test_self_divergence_is_zero(self, name, kw):
    z, _ = _logits(1, 5.0)
    np.testing.assert_allclose(_fn(name, kw)(z, z), 0.0, atol=1e-6)

  def test_jsd_endpoints_are_the_kls_exactly(self):
    zs, zt = _logits(2, 3.0)
    np.testing.assert_array_equal(
        losses.generalized_jsd(zs, zt, beta=0.0), losses.forward_kl(zs, zt)
    )
    np.testing.assert_array_equal(
        losses.generalized_jsd(zs, zt, beta=1.0), losses.reverse_kl(zs, zt)
    )
    np.testing.assert_array_equal(
        losses.skew_forward_kl(zs, zt, alpha=0.0), losses.forward_kl(zs, zt)
    )
    np.testing.assert_array_equal(
        losses.skew_reverse_kl(zs, zt, alpha=0.0), losses.reverse_kl(zs, zt)
    )

  @parameterized.named_parameters(*NAMED)
  def test_check_grads(self, name, kw):
    fn = _fn(name, kw)
    zs, zt = _logits(3)
    f = lambda a, b: fn(a, b, temperature=0.9)
    check_grads(
        f, (zs, zt), order=1, modes=["rev"], eps=1e-2, atol=2e-2, rtol=2e-2
    )
    with jax.enable_x64(True):
      check_grads(
          f,
          (np.float64(zs), np.float64(zt)),
          order=1,
          modes=["rev"],
          eps=1e-5,
          atol=1e-6,
          rtol=1e-6,
      )

  def test_logit_gradient_identities(self):
    # The identities are algebra, so they are checked in float64, where
    # summation order moves a value by ~V * 1.1e-16 of the terms (|ell| and
    # the probabilities are O(10) and O(1) here): 1e-12 leaves 100x room,
    # and a wrong term would show at 1e-3. In float32 the same check used
    # 56% of a 1e-6 bound on one CPU, too close to hold on every CPU.
    with jax.enable_x64(True):
      zs, zt = (np.float64(z) for z in _logits(4, 2.0))
      ps, pt = jax.nn.softmax(zs), jax.nn.softmax(zt)
      ell = jax.nn.log_softmax(zs) - jax.nn.log_softmax(zt)
      want_rkl = ps * (ell - jnp.sum(ps * ell, -1, keepdims=True))
      got_rkl = jax.grad(lambda z: losses.reverse_kl(z, zt).sum())(zs)
      assert got_rkl.dtype == np.float64
      np.testing.assert_allclose(got_rkl, want_rkl, rtol=0, atol=1e-12)
      got_fkl = jax.grad(lambda z: losses.forward_kl(z, zt).sum())(zs)
      np.testing.assert_allclose(got_fkl, ps - pt, rtol=0, atol=1e-12)
    # The teacher gets a gradient too unless the caller stops it; the
    # identity above is for the student side.

  @parameterized.named_parameters(*NAMED)
  def test_masked_positions_are_finite_with_inf_and_huge_logits(self, name, kw):
    fn = _fn(name, kw)
    zs, zt = _logits(5)
    where = np.ones((B, T), bool)
    where[0, 1] = where[1, 2] = False
    zs[0, 1] = -np.inf
    zt[0, 1] = 1e30
    zs[1, 2] = 1e30
    zt[1, 2, :3] = -np.inf
    loss = lambda a, b: jnp.sum(fn(a, b, where=where))
    value = fn(zs, zt, where=where)
    grads = jax.grad(loss, argnums=(0, 1))(zs, zt)
    self.assertTrue(np.isfinite(value).all())
    self.assertEqual(float(value[0, 1]), 0.0)
    for g in grads:
      self.assertTrue(np.isfinite(g).all())
      self.assertEqual(float(jnp.abs(g[0, 1]).sum()), 0.0)

  @parameterized.named_parameters(*NAMED)
  def test_where_equals_slicing_and_padding_invariance(self, name, kw):
    fn = _fn(name, kw)
    zs, zt = _logits(6, 2.0, shape=(B, 5, V))
    where = np.array([[1, 1, 1, 0, 0], [1, 0, 1, 1, 0]], bool)
    got = fn(zs, zt, where=where)
    want = fn(zs[where], zt[where])
    np.testing.assert_allclose(got[where], want, rtol=1e-6)
    np.testing.assert_array_equal(got[~where], 0.0)
    # Padding T with garbage at masked positions changes nothing.
    pad = np.full((B, 3, V), 1e30, np.float32)
    got_pad = fn(
        np.concatenate([zs, pad], 1),
        np.concatenate([zt, -pad], 1),
        where=np.concatenate([where, np.zeros((B, 3), bool)], 1),
    )
    np.testing.assert_array_equal(got_pad[:, :5], got)

  @parameterized.named_parameters(*NAMED)
  def test_jit_equals_eager(self, name, kw):
    fn = _fn(name, kw)
    zs, zt = _logits(7)
    np.testing.assert_allclose(
        jax.jit(fn)(zs, zt), fn(zs, zt), rtol=1e-6, atol=1e-7
    )

  @parameterized.named_parameters(*NAMED)
  def test_bfloat16_inputs_give_float32(self, name, kw):
    fn = _fn(name, kw)
    zs, zt = _logits(8, 2.0)
    zs16, zt16 = jnp.bfloat16(zs), jnp.bfloat16(zt)
    got = fn(zs16, zt16)
    self.assertEqual(got.dtype, jnp.float32)
    # Compared at the rounded inputs: the loss itself runs in float32.
    want = fn(jnp.float32(zs16), jnp.float32(zt16))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(got, fn(zs, zt), rtol=0.1, atol=0.02)

  def test_vocab_padding_with_minus_inf(self):
    # Both models put -inf on padded vocabulary entries: the divergence
    # equals the one on the unpadded vocabulary, with finite gradients.
    zs, zt = _logits(9)
    pad = np.full((B, T, 3), -np.inf, np.float32)
    zs_p, zt_p = np.concatenate([zs, pad], -1), np.concatenate([zt, pad], -1)
    for name, kw in DIVERGENCES:
      fn = _fn(name, kw)
      np.testing.assert_allclose(
          fn(zs_p, zt_p), fn(zs, zt), rtol=1e-5, atol=1e-7, err_msg=name
      )
      g = jax.grad(lambda a: fn(a, zt_p).sum())(zs_p)
      self.assertTrue(np.isfinite(g).all(), name)

  def test_axis_argument(self):
    zs, zt = _logits(10)
    np.testing.assert_allclose(
        losses.reverse_kl(
            np.moveaxis(zs, -1, 0), np.moveaxis(zt, -1, 0), axis=0
        ),
        losses.reverse_kl(zs, zt),
        rtol=1e-6,
    )

  def test_entropy_and_token_logprobs(self):
    z, _ = _logits(11, 3.0)
    lp = _np_log_softmax(np.float64(z) / 0.8)
    np.testing.assert_allclose(
        losses.entropy(z, temperature=0.8),
        -(np.exp(lp) * lp).sum(-1),
        rtol=1e-5,
    )
    ids = np.random.default_rng(0).integers(0, V, (B, T))
    np.testing.assert_allclose(
        losses.token_logprobs(z, ids, temperature=0.8),
        np.take_along_axis(lp, ids[..., None], -1)[..., 0],
        rtol=1e-5,
    )

  def test_sampled_kl_estimators(self):
    lps = np.array([[-1.0, -2.0, -np.inf]], np.float32)
    lpt = np.array([[-1.5, -1.0, -np.inf]], np.float32)
    where = np.array([[True, True, False]])
    log_r = np.array([-0.5, 1.0])
    want = {
        "k1": -log_r,
        "k2": 0.5 * log_r**2,
        "k3": np.expm1(log_r) - log_r,
    }
    for est, w in want.items():
      got = losses.sampled_kl(lps, lpt, estimator=est, where=where)
      np.testing.assert_allclose(got[0, :2], w, rtol=1e-6)
      self.assertEqual(float(got[0, 2]), 0.0)
      g = jax.grad(
          lambda a: losses.sampled_kl(a, lpt, estimator=est, where=where).sum()
      )(lps)
      self.assertTrue(np.isfinite(g).all())

  def test_sampled_k3_is_unbiased_for_reverse_kl(self):
    zs, zt = _logits(12, 1.0, shape=(V,))
    ps = np.exp(_np_log_softmax(np.float64(zs)))
    lps = _np_log_softmax(np.float64(zs))
    lpt = _np_log_softmax(np.float64(zt))
    # Exact expectation over y ~ p_S of each unbiased estimator.
    for est in ("k1", "k3"):
      per_y = losses.sampled_kl(lps, lpt, estimator=est)
      np.testing.assert_allclose(
          np.sum(ps * per_y), _np_kl(lps, lpt), rtol=1e-5
      )

  def test_input_validation(self):
    zs, zt = _logits(13)
    with self.assertRaisesRegex(ValueError, "same shape"):
      losses.reverse_kl(zs, zt[:, :2])
    with self.assertRaisesRegex(TypeError, "student_logits"):
      losses.reverse_kl(np.int32(zs), zt)
    with self.assertRaisesRegex(ValueError, "beta"):
      losses.generalized_jsd(zs, zt, beta=1.5)
    with self.assertRaisesRegex(ValueError, "where"):
      losses.forward_kl(zs, zt, where=np.ones((B, T + 1), bool))
    with self.assertRaisesRegex(ValueError, "temperature"):
      losses.forward_kl(zs, zt, temperature=0.0)
    with self.assertRaisesRegex(ValueError, "estimator"):
      losses.sampled_kl(zs[..., 0], zt[..., 0], estimator="k4")
    with self.assertRaisesRegex(TypeError, "ids"):
      losses.token_logprobs(zs, np.zeros((B, T), np.float32))


def _trl_generalized_jsd_loss(
    torch, student_logits, teacher_logits, labels, beta, temperature
):
  """TRL GKDTrainer.generalized_jsd_loss, rewritten from its definition."""
  f = torch.nn.functional
  student_log_probs = f.log_softmax(student_logits / temperature, dim=-1)
  teacher_log_probs = f.log_softmax(teacher_logits / temperature, dim=-1)
  if beta == 0:
    jsd = f.kl_div(
        student_log_probs, teacher_log_probs, reduction="none", log_target=True
    )
  elif beta == 1:
    jsd = f.kl_div(
        teacher_log_probs, student_log_probs, reduction="none", log_target=True
    )
  else:
    beta_t = torch.tensor(beta, dtype=student_log_probs.dtype)
    mixture_log_probs = torch.logsumexp(
        torch.stack([
            student_log_probs + torch.log(1 - beta_t),
            teacher_log_probs + torch.log(beta_t),
        ]),
        dim=0,
    )
    kl_teacher = f.kl_div(
        mixture_log_probs, teacher_log_probs, reduction="none", log_target=True
    )
    kl_student = f.kl_div(
        mixture_log_probs, student_log_probs, reduction="none", log_target=True
    )
    jsd = beta_t * kl_teacher + (1 - beta_t) * kl_student
  mask = labels != -100
  jsd = jsd[mask]
  return jsd.sum() / mask.sum()  # "batchmean" over valid labels


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_matches_trl_generalized_jsd_loss(beta):
  torch = pytest.importorskip("torch")
  zs, zt = _logits(14, 3.0)
  labels = np.ones((B, T), np.int64)
  labels[0, -1] = labels[1, 0] = -100
  want = _trl_generalized_jsd_loss(
      torch,
      torch.from_numpy(np.float64(zs)),
      torch.from_numpy(np.float64(zt)),
      torch.from_numpy(labels),
      beta,
      0.9,
  ).item()
  where = labels != -100
  per_token = losses.generalized_jsd(
      zs, zt, beta=beta, temperature=0.9, where=where
  )
  got = losses.token_mean(per_token, where).value()
  np.testing.assert_allclose(got, want, rtol=1e-5)


if __name__ == "__main__":
  absltest.main()
