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
"""Qwen3-MoE: the grouped matmul, logits / greedy decoding / router loss
against `transformers`, and checkpoint round trips."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import hf_helpers
import scripts_worker  # tests/, on the path beside conftest.py
from opd_jax import testing
from opd_jax.models import load_hf, save_hf
from opd_jax.models import hf_io, moe
from opd_jax.models.grouped_matmul import grouped_matmul

# Never relax: float32 parity of two implementations of the same math (as
# test_hf_parity).
ATOL = 1e-4

# (top_k, norm_topk_prob, tied, num_layers, mlp_only_layers, sparse_step):
# top-k 1, 2 and 8 (all experts), norm on and off, tied and untied, dense
# layers interleaved by `mlp_only_layers` and by `decoder_sparse_step`.
CASES = [
    pytest.param(1, False, False, 2, (), 1, id="top1-untied"),
    pytest.param(2, True, True, 2, (), 1, id="top2-norm-tied"),
    pytest.param(8, True, False, 3, (1,), 1, id="top8-norm-dense1"),
    pytest.param(2, False, False, 4, (), 2, id="top2-sparse_step2"),
]


def _moe_config(top_k, norm, tied, layers, only, step):
  return testing.tiny_moe_config(
      top_k=top_k,
      norm_topk_prob=norm,
      tied=tied,
      num_layers=layers,
      mlp_only_layers=only,
      decoder_sparse_step=step,
  )


def _hf_moe(config, seed):
  """A random transformers Qwen3-MoE whose experts matter.

  transformers initialises the router and experts with std 0.02, which
  makes the routing nearly uniform and the experts' output tiny; larger
  weights make a wrong expert, weight or routing show in the logits.
  """
  torch = pytest.importorskip("torch")
  hf = hf_helpers.hf_model(config, seed=seed)
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in hf.named_parameters():
      if ".mlp.experts." in name:
        p.copy_(0.15 * torch.randn(p.shape, generator=gen))
      elif name.endswith(".mlp.gate.weight"):
        p.copy_(0.5 * torch.randn(p.shape, generator=gen))
  return hf


def _batch(vocab, b=3, t=20, seed=0):
  tokens = np.random.default_rng(seed).integers(3, vocab, (b, t))
  mask = np.ones(tokens.shape, bool)
  mask[1, :6] = False  # left padding
  mask[2, :11] = False
  return tokens, mask


@nnx.jit
def _forward(model, tokens, mask):
  out = model(tokens, attention_mask=mask)
  return out.logits, out.aux_loss


# -- the grouped matmul --------------------------------------------------------


@pytest.mark.parametrize(
    "sizes",
    [(7, 0, 20, 10, 0), (0, 0, 37, 0, 0), (1, 1, 1, 1, 33), (9, 9, 9, 9, 1)],
)
def test_grouped_matmul_is_the_per_group_product(sizes):
  """The CPU loop and its gradients, against float64, within the bound of
  float32 summation (testing.summation_bound, Higham 3.1)."""
  rng = np.random.default_rng(sum(sizes))
  m, k, n = sum(sizes), 12, 9
  x = rng.standard_normal((m, k)).astype(np.float32)
  w = rng.standard_normal((len(sizes), k, n)).astype(np.float32)
  dy = rng.standard_normal((m, n)).astype(np.float32)
  groups = np.repeat(np.arange(len(sizes)), sizes)
  gs = jnp.asarray(sizes, jnp.int32)
  y, vjp = jax.vjp(lambda x, w: grouped_matmul(x, w, gs), x, w)
  dx, dw = vjp(jnp.asarray(dy))
  x64, w64, dy64 = (a.astype(np.float64) for a in (x, w, dy))
  want = np.einsum("mk,mkn->mn", x64, w64[groups])
  bound = testing.summation_bound(x[:, None], w[groups], evaluations=1)
  assert (np.abs(np.asarray(y) - want) <= bound[:, 0]).all()
  want_dx = np.einsum("mn,mkn->mk", dy64, w64[groups])
  bound = testing.summation_bound(
      dy[:, None], np.swapaxes(w[groups], 1, 2), evaluations=1
  )
  assert (np.abs(np.asarray(dx) - want_dx) <= bound[:, 0]).all()
  for g in range(len(sizes)):
    rows = groups == g
    want_dw = x64[rows].T @ dy64[rows]
    bound = testing.summation_bound(x[rows].T, dy[rows], evaluations=1)
    assert (np.abs(np.asarray(dw[g]) - want_dw) <= bound).all(), g


def test_cpu_loop_does_the_routed_work_not_all_experts():
  """The tile loop visits only tiles that hold a group's rows: the rows it
  multiplies are the routed rows plus at most two partial tiles per
  non-empty group, far below E / k times the routed rows."""
  from opd_jax.models import grouped_matmul as gmm  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(3)
  for tokens, experts, k in ((4, 128, 8), (512, 16, 2), (2048, 128, 8)):
    ids = np.stack([rng.permutation(experts)[:k] for _ in range(tokens)])
    sizes = np.bincount(ids.reshape(-1), minlength=experts).astype(np.int32)
    m = tokens * k
    block = gmm.block_rows(m, experts)
    count = int(gmm._plan(jnp.asarray(sizes), m, block)[2])  # pylint: disable=protected-access
    tiles = -(-m // block)
    assert count <= tiles + (sizes > 0).sum() - 1
    assert count * block <= m + 2 * (sizes > 0).sum() * block
    if m >= 8 * experts:  # prefill-sized: close to the routed work
      assert count * block <= 1.6 * m, (count * block, m)


def test_ragged_dot_path_equals_the_cpu_loop():
  """The accelerator path (`jax.lax.ragged_dot`, here through its CPU
  lowering) computes what the CPU tile loop computes."""
  rng = np.random.default_rng(1)
  sizes = jnp.asarray([5, 0, 11, 4], jnp.int32)
  x = jnp.asarray(rng.standard_normal((20, 6)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((4, 6, 3)), jnp.float32)
  loop = grouped_matmul(x, w, sizes, platform="cpu")
  ragged = grouped_matmul(x, w, sizes, platform="gpu")
  bound = testing.summation_bound(
      np.asarray(x)[:, None], np.asarray(w)[np.repeat(np.arange(4), sizes)]
  )
  assert (np.abs(np.asarray(loop) - np.asarray(ragged)) <= bound[:, 0]).all()


def test_compiled_layer_holds_no_dispatch_tensor():
  """No [tokens, experts, .] array in the MoE layer's forward + backward.

  Sizes are chosen distinct (N = 26 tokens, N k = 52 copies, E = 8,
  D = 48, F_e = 24), so that a shape with a token axis, an expert axis and
  a feature axis is a dispatch tensor, such as the [E, N k, D] operand of
  jax.lax.ragged_dot's CPU lowering (the router's [N, E] logits are not).
  """
  config = testing.tiny_moe_config(num_experts=8, top_k=2)
  layer = moe.MoeMlp(config, dtype=jnp.float32, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(layer)
  x = jnp.ones((2, 13, config.embed_dim))

  def loss(params, x):
    y, stats = nnx.merge(graphdef, params)(x)
    return jnp.sum(y**2) + moe.balance_loss(stats)

  hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, x).compile()
  shapes = re.findall(r"[fs]\d+\[([\d,]+)\]", hlo.as_text())
  assert shapes
  for shape in {tuple(int(d) for d in s.split(",")) for s in shapes}:
    dims = set(shape)
    assert not (dims & {26, 52} and 8 in dims and dims & {48, 24}), shape


# -- parity with transformers --------------------------------------------------


@pytest.mark.parametrize("top_k,norm,tied,layers,only,step", CASES)
def test_logits_and_router_loss_match_transformers(
    tmp_path, top_k, norm, tied, layers, only, step
):
  torch = pytest.importorskip("torch")
  config = _moe_config(top_k, norm, tied, layers, only, step)
  hf = _hf_moe(config, seed=top_k + layers)
  model = load_hf(hf_helpers.save_hf_model(hf, str(tmp_path / "hf")))
  assert model.config == config
  assert (model.dense_layers is not None) == bool(only or step > 1)
  tokens, mask = _batch(config.vocab_size)
  logits, aux = _forward(model, jnp.asarray(tokens), jnp.asarray(mask))
  with torch.no_grad():
    ref = hf(
        torch.as_tensor(tokens),
        attention_mask=torch.as_tensor(mask.astype(np.int64)),
        output_router_logits=True,
    )
  # Real positions only (a padded query attends to nothing).
  err = np.abs(np.asarray(logits) - ref.logits.numpy())[mask].max()
  print(f"moe parity {config.experts_per_token=}: {err:.2e}")
  assert err <= ATOL
  # The routing really spreads over the experts (a test of the experts).
  experts = torch.cat(ref.router_logits).topk(top_k, -1).indices.unique()
  assert len(experts) == min(config.num_experts, 8)
  np.testing.assert_allclose(float(aux), float(ref.aux_loss), rtol=1e-6)


def test_router_loss_gradient_matches_transformers(tmp_path):
  """d aux / d (router, attention weights) through the whole model."""
  torch = pytest.importorskip("torch")
  config = _moe_config(2, False, False, 3, (1,), 1)
  hf = _hf_moe(config, seed=7)
  model = load_hf(hf_helpers.save_hf_model(hf, str(tmp_path / "hf")))
  tokens, mask = _batch(config.vocab_size, seed=4)
  out = hf(
      torch.as_tensor(tokens),
      attention_mask=torch.as_tensor(mask.astype(np.int64)),
      output_router_logits=True,
  )
  out.aux_loss.backward()

  @nnx.grad
  def grads(model):
    return model(jnp.asarray(tokens), attention_mask=jnp.asarray(mask)).aux_loss

  g = grads(model)
  router = np.asarray(g.layers.moe.router.kernel[...])  # [L_moe, D, E]
  q = np.asarray(g.layers.attn.q_proj.kernel[...])  # [L_moe, D, N, H]
  for j, i in enumerate((0, 2)):  # the MoE layers
    layer = hf.model.layers[i]
    want = layer.mlp.gate.weight.grad.numpy().T
    scale = np.abs(want).max()
    assert np.abs(router[j] - want).max() <= 1e-5 * scale + 1e-9
    want_q = layer.self_attn.q_proj.weight.grad.numpy().T.reshape(q[j].shape)
    assert np.abs(q[j] - want_q).max() <= 1e-5 * np.abs(want_q).max() + 1e-9


def test_load_balancing_loss_pure_function_matches_transformers():
  torch = pytest.importorskip("torch")
  from transformers.models.qwen3_moe import modeling_qwen3_moe  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  logits = rng.standard_normal((3, 10, 6)).astype(np.float32)
  where = rng.random(10) > 0.3
  for top_k in (1, 2, 6):
    for mask in (None, where):
      t = torch.tensor(logits, requires_grad=True)
      ref = modeling_qwen3_moe.load_balancing_loss_func(
          tuple(t),
          6,
          top_k,
          None if mask is None else torch.as_tensor(mask[None]),
      )
      ref.backward()
      got, grad = jax.value_and_grad(
          lambda x: moe.load_balancing_loss(x, top_k, where=mask)
      )(jnp.asarray(logits))
      np.testing.assert_allclose(float(got), float(ref.detach()), rtol=1e-6)
      np.testing.assert_allclose(
          np.asarray(grad), t.grad.numpy(), rtol=1e-5, atol=1e-7
      )


def test_greedy_decoding_matches_transformers_generate(tmp_path):
  """Our sampler (KV cache, split layers, the MoE decode path) at T = 0
  and transformers' greedy `generate`, token for token, left padding."""
  torch = pytest.importorskip("torch")
  from opd_jax.rollouts import Sampling, sample  # pylint: disable=g-import-not-at-top

  config = _moe_config(2, True, False, 3, (1,), 1).replace(
      eos_token_ids=(), pad_token_id=0
  )
  hf = _hf_moe(config, seed=3)
  model = load_hf(hf_helpers.save_hf_model(hf, str(tmp_path / "hf")))
  tokens, mask = _batch(config.vocab_size, t=8, seed=5)
  tokens = np.where(mask, tokens, 0)
  new = 10
  out = sample(
      model,
      jnp.asarray(tokens),
      jnp.asarray(mask),
      jax.random.key(0),
      max_new_tokens=new,
      sampling=Sampling(temperature=0.0),
  )
  with torch.no_grad():
    ref = hf.generate(
        torch.as_tensor(tokens),
        attention_mask=torch.as_tensor(mask.astype(np.int64)),
        max_new_tokens=new,
        min_new_tokens=new,
        do_sample=False,
        pad_token_id=0,
    )
  np.testing.assert_array_equal(
      np.asarray(out.response), ref[:, tokens.shape[1] :].numpy()
  )


# -- checkpoints -----------------------------------------------------------------


def test_save_load_round_trip_through_transformers(tmp_path):
  """save_hf writes per-expert tensors that transformers loads (same
  logits), in several shards; load_hf reads them back bit for bit."""
  torch = pytest.importorskip("torch")
  import transformers  # pylint: disable=g-import-not-at-top

  config = _moe_config(2, True, False, 3, (1,), 1)
  model = testing.random_model(config, seed=4)
  out = str(tmp_path / "out")
  save_hf(model, out, max_shard_bytes=40_000)
  names = hf_io.tensor_files(out)
  assert "model.layers.0.mlp.experts.7.down_proj.weight" in names
  assert "model.layers.1.mlp.gate_proj.weight" in names
  assert "model.layers.1.mlp.gate.weight" not in names
  hf = transformers.AutoModelForCausalLM.from_pretrained(
      out, dtype=torch.float32
  ).eval()
  tokens, mask = _batch(config.vocab_size, seed=6)
  ours, _ = _forward(model, jnp.asarray(tokens), jnp.asarray(mask))
  ref = hf_helpers.hf_logits(hf, tokens, mask)
  assert np.abs(np.asarray(ours) - ref)[mask].max() <= ATOL
  again = load_hf(out)
  for a, b in zip(
      jax.tree.leaves(nnx.state(again, nnx.Param)),
      jax.tree.leaves(nnx.state(model, nnx.Param)),
  ):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_fused_expert_layout_loads_like_the_per_expert_one(tmp_path):
  """transformers 5 keeps experts fused ([E, 2F, D] gate_up, [E, D, F]
  down) and writes them so with `save_original_format=False`: the same
  logits as transformers, and a student cut from such a teacher."""
  torch = pytest.importorskip("torch")
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top

  config = _moe_config(2, True, False, 3, (1,), 1)
  hf = _hf_moe(config, seed=5)
  path = str(tmp_path / "fused")
  hf.save_pretrained(path, save_original_format=False)
  with safe_open(f"{path}/model.safetensors", framework="numpy") as f:
    names = set(f.keys())
  assert "model.layers.0.mlp.experts.gate_up_proj" in names
  assert not any(".experts.0." in n for n in names)
  model = load_hf(path)
  tokens, mask = _batch(config.vocab_size)
  logits, _ = _forward(model, jnp.asarray(tokens), jnp.asarray(mask))
  with torch.no_grad():
    ref = hf(
        torch.as_tensor(tokens),
        attention_mask=torch.as_tensor(mask.astype(np.int64)),
    ).logits.numpy()
  assert np.abs(np.asarray(logits) - ref)[mask].max() <= ATOL
  # The per-expert layout gives the same parameters, bit for bit.
  per_expert = load_hf(hf_helpers.save_hf_model(hf, str(tmp_path / "split")))
  jax.tree.map(
      np.testing.assert_array_equal,
      nnx.state(model, nnx.Param),
      nnx.state(per_expert, nnx.Param),
  )
  # make_student cuts it (written in the per-expert layout).
  from opd_jax.models import cut  # pylint: disable=g-import-not-at-top

  student = str(tmp_path / "student")
  cut.cut_layers(path, student, (0, 2))
  # Layers 0 and 2 are the teacher's MoE stack, whole.
  jax.tree.map(
      np.testing.assert_array_equal,
      nnx.state(load_hf(student), nnx.Param)["layers"],
      nnx.state(per_expert, nnx.Param)["layers"],
  )


def test_bad_checkpoints_name_the_tensor(tmp_path):
  """A missing expert tensor or a router of the wrong shape: one error
  naming the tensor, before anything is read or compiled."""
  from safetensors.numpy import load_file, save_file  # pylint: disable=g-import-not-at-top

  config = _moe_config(2, True, False, 2, (), 1)
  path = str(tmp_path / "ckpt")
  save_hf(testing.random_model(config, seed=0), path)
  file = f"{path}/model.safetensors"
  tensors = load_file(file)
  missing = dict(tensors)
  del missing["model.layers.1.mlp.experts.3.up_proj.weight"]
  save_file(missing, file)
  with pytest.raises(
      hf_io.CheckpointError, match=r"experts\.3\.up_proj\.weight"
  ):
    load_hf(path)
  wrong = dict(tensors)
  wrong["model.layers.0.mlp.gate.weight"] = np.zeros((7, 48), np.float32)
  save_file(wrong, file)
  with pytest.raises(
      hf_io.CheckpointError, match=r"mlp\.gate\.weight has shape \[7, 48\]"
  ):
    load_hf(path)


@pytest.mark.slow
def test_eight_fake_devices_with_experts_split_match_one_device():
  """tests/moe_sharding_worker.py in its own process (8 CPU devices).

  On both meshes (fsdp 4 x tensor 2, data 2 x fsdp 4) the experts run in a
  ring over 'fsdp': logits, load-balancing loss and gradients equal one
  device's, and the compiled step all-gathers neither an expert kernel nor
  an 'fsdp' group's tokens (the ring's ppermutes move them).
  """
  out = scripts_worker.run_device_worker("moe_sharding_worker.py", timeout=900)
  for mesh in ("'fsdp': 4, 'tensor': 2", "'data': 2, 'fsdp': 4"):
    assert mesh in out, out


def test_router_sums_over_row_groups_give_the_whole_batch_loss():
  """A student trained in micro-batches (`map_row_groups_with_sums`) adds
  the load-balancing loss of the whole batch, not a mean of parts."""
  from opd_jax.models import response  # pylint: disable=g-import-not-at-top

  config = testing.tiny_moe_config(num_layers=3, mlp_only_layers=(1,))
  model = testing.random_model(config, seed=2)
  tokens, mask = _batch(config.vocab_size, b=4, t=12, seed=8)
  tokens, mask = jnp.asarray(tokens), jnp.asarray(mask)
  whole = model(tokens, attention_mask=mask)
  one = lambda x, m: response.response_hidden_and_router(model, x, m, 5)
  hidden, stats = jax.jit(
      lambda x, m: response.map_row_groups_with_sums(one, 2, x, m)
  )(tokens, mask)
  np.testing.assert_allclose(
      float(moe.balance_loss(stats)), float(whole.aux_loss), rtol=1e-6
  )
  np.testing.assert_allclose(
      np.asarray(hidden), np.asarray(whole.hidden[:, 6:-1]), atol=1e-6
  )


def test_student_cut_from_a_moe_teacher_keeps_each_layer_kind(tmp_path):
  """make_student's cut of a MoE teacher: kept layers keep their experts
  or their dense MLP; transformers and opd_jax read the same student."""
  torch = pytest.importorskip("torch")
  import transformers  # pylint: disable=g-import-not-at-top
  from opd_jax.models import cut  # pylint: disable=g-import-not-at-top

  config = _moe_config(2, True, False, 4, (), 2)  # dense, MoE, dense, MoE
  teacher = str(tmp_path / "teacher")
  save_hf(testing.random_model(config, seed=9), teacher)
  out = str(tmp_path / "student")
  written = cut.cut_layers(teacher, out, (1, 2, 3))
  assert written["mlp_only_layers"] == [1]
  assert written["decoder_sparse_step"] == 1
  student = load_hf(out)
  assert student.config.moe_layer_mask() == (True, False, True)
  hf = transformers.AutoModelForCausalLM.from_pretrained(
      out, dtype=torch.float32
  ).eval()
  tokens, mask = _batch(config.vocab_size, seed=10)
  ours, _ = _forward(student, jnp.asarray(tokens), jnp.asarray(mask))
  ref = hf_helpers.hf_logits(hf, tokens, mask)
  assert np.abs(np.asarray(ours) - ref)[mask].max() <= ATOL
