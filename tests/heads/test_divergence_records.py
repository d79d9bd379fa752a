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
"""The one `Divergence` record per divergence, and WORKSPACE's recipe."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from opd_jax import heads
from opd_jax import losses
from opd_jax import methods
from opd_jax.methods import common


def _inputs(seed=0, b=3, t=7, d=5, v=13):
  rng = np.random.default_rng(seed)
  arr = lambda *s: jnp.asarray(rng.standard_normal(s) * 2, jnp.float32)
  mask = np.ones((b, t), bool)
  mask[1, t - 3 :] = False
  return methods.StepInputs(
      student_hidden=arr(b, t, d),
      student_head=arr(d, v),
      teacher_hidden=arr(b, t, d + 1),
      teacher_head=arr(d + 1, v),
      ids=jnp.asarray(rng.integers(0, v, (b, t)), jnp.int32),
      mask=jnp.asarray(mask),
      sampler_logprobs=jnp.zeros((b, t)),
      key=jax.random.key(seed),
  )


def test_every_record_is_whole():
  shorts = [d.short for d in heads.DIVERGENCES.values()]
  assert len(set(shorts)) == len(shorts)
  loss_pass = {f.name for f in dataclasses.fields(common.LossPass)}
  stats = set(heads.TokenStats._fields)
  inputs = _inputs()
  zs = inputs.student_hidden @ inputs.student_head
  zt = inputs.teacher_hidden @ inputs.teacher_head
  for name, d in heads.DIVERGENCES.items():
    assert d.name == name and heads.divergence_record(name) is d
    assert {field for field, _ in d.params} <= loss_pass, name
    assert d.token_stat is None or d.token_stat in stats, name
    p = common.LossPass(divergence=name, jsd_beta=0.3, skew_alpha=0.2)
    want = d.fn(zs, zt, where=inputs.mask, **d.kwargs(p))
    got = p.token_divergence(inputs)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=name)
    if d.token_stat:  # a stats pass scores tokens by it, under its name
      np.testing.assert_allclose(
          common.axis_divergence(p.token_stats(inputs), d.name),
          want,
          rtol=1e-5,
          atol=1e-6,
          err_msg=name,
      )
  assert common.token_scores() == (
      "reverse_kl",
      "forward_kl",
      "jsd",
      "sampled_logratio",
  )
  with pytest.raises(ValueError, match="divergence must be one of"):
    heads.divergence_record("kl")


def test_a_record_added_here_is_a_loss_every_method_can_name(monkeypatch):
  # WORKSPACE's recipe: one record (here with an existing loss-pass field as
  # its parameter) and the methods take it, its metric key included.
  def scaled_rkl(zs, zt, *, scale, **kw):
    return scale * losses.reverse_kl(zs, zt, **kw)

  monkeypatch.setitem(
      heads.DIVERGENCES,
      "scaled_rkl",
      heads.Divergence(
          "scaled_rkl", "srkl", scaled_rkl, params=(("skew_alpha", "scale"),)
      ),
  )
  inputs = _inputs(1)
  for name in ("tip", "dear", "rkl"):
    new = methods.build_method(
        name, {"loss_pass": {"divergence": "scaled_rkl", "skew_alpha": 0.25}}
    )
    plain = methods.build_method(
        name, {"loss_pass": {"divergence": "reverse_kl"}}
    )
    loss, metrics = new.loss(inputs)
    want, _ = plain.loss(inputs)
    np.testing.assert_allclose(loss, 0.25 * want, rtol=1e-6, err_msg=name)
    assert "loss/srkl" in metrics and "loss/rkl" not in metrics, name
  with pytest.raises(ValueError, match="config.tip.loss_pass.divergence"):
    methods.build_method("tip", {"loss_pass": {"divergence": "no_such"}})
