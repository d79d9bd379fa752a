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
"""Runs in its own process with 8 fake CPU devices (see test_moe.py).

A Qwen3-MoE with a dense layer between MoE layers, loaded onto two meshes
with its experts split over 'fsdp' (and their width over 'tensor'): the
logits, the load-balancing loss and the gradient of a loss through both
equal one device's within float32 summation order, and the compiled step
never all-gathers an expert kernel (expert parallelism: the tokens move)
nor an 'fsdp' group's tokens (they go around a ring of ppermutes).
Prints 'OK' on success.
"""

import os
import re
import sys
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_force_host_platform_device_count=8"
)
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import PartitionSpec as P

from opd_jax import sharding, testing
from opd_jax.models import load_hf, save_hf


@nnx.jit
def _step(model, tokens, mask):
  """(logits, aux loss, d loss / d params) of a loss through both."""

  def loss(model):
    out = model(tokens, attention_mask=mask)
    real = jnp.where(mask[..., None], out.logits, 0.0)
    return jnp.mean(real**2) + 0.1 * out.aux_loss, out

  (_, out), grads = nnx.value_and_grad(loss, has_aux=True)(model)
  return out.logits, out.aux_loss, grads


def _flat(state):
  return {
      sharding.path_str(p): x
      for p, x in jax.tree_util.tree_flatten_with_path(state)[0]
  }


def _check_exchange(hlo, config, mesh, num_tokens):
  """The compiled step moves tokens around a ring, not experts or groups.

  No all-gather of a layer's expert kernels ([E, D, F_e / tensor] or
  [E, F_e / tensor, D]: the experts run where they are stored), none of an
  'fsdp' group's tokens or their routing ([fsdp, n, D], [fsdp * n, k], ...:
  a device holds one peer's block at a time), and the ring's ppermutes
  (collective-permutes) are there.
  """
  gathered = [
      tuple(int(d) for d in dims.split(","))
      for dims in re.findall(r"= \w+\[([\d,]+)\]\S* all-gather\(", hlo)
  ]
  f_local = config.moe_mlp_dim // mesh.shape["tensor"]
  d, k, e = config.embed_dim, config.experts_per_token, config.num_experts
  for kernel in ((e, d, f_local), (e, f_local, d)):
    assert not any(g[-3:] == kernel for g in gathered), (kernel, gathered)
  fsdp = mesh.shape["fsdp"]
  n = num_tokens // (mesh.shape["data"] * fsdp)  # one device's tokens
  group = [
      g
      for g in gathered
      if g[-1] in (d, k) and int(np.prod(g[:-1])) == fsdp * n
  ]
  assert not group, ("all-gather of the fsdp group's tokens", group)
  assert re.search(r" collective-permute(-start)?\(", hlo), "no ring"


def main():
  assert jax.device_count() == 8, jax.devices()
  config = testing.tiny_moe_config(
      num_experts=8, top_k=2, num_layers=3, mlp_only_layers=(1,)
  ).replace(vocab_size=256)
  reference = testing.random_model(config, seed=0)
  path = os.path.join(tempfile.mkdtemp(), "model")
  save_hf(reference, path)
  # 160 tokens: an 'fsdp' group's 80 or 160 rows are no parameter's dim,
  # so an all-gather of that many rows of D (or k) is the tokens'.
  tokens = np.random.default_rng(0).integers(0, 256, (8, 20)).astype(np.int32)
  mask = np.ones_like(tokens, bool)
  mask[3, :5] = False
  ref_logits, ref_aux, ref_grads = _step(
      reference, jnp.asarray(tokens), jnp.asarray(mask)
  )
  ref_grads = {k: np.asarray(v) for k, v in _flat(ref_grads).items()}

  for mesh_config in (
      sharding.MeshConfig(data=1, fsdp=4, tensor=2),
      sharding.MeshConfig(data=2, fsdp=4, tensor=1),
  ):
    mesh = sharding.make_mesh(mesh_config)
    model = load_hf(path, mesh=mesh)
    flat = _flat(nnx.state(model, nnx.Param))
    want = {
        "layers/moe/gate_proj": P(None, "fsdp", None, "tensor"),
        "layers/moe/down_proj": P(None, "fsdp", "tensor", None),
        "layers/moe/router/kernel": P(None, "fsdp", None),
        "dense_layers/mlp/gate_proj/kernel": P(None, "fsdp", "tensor"),
    }
    for name, spec in want.items():
      got = flat[name].sharding.spec
      assert sharding.fit_spec(spec, flat[name].shape, mesh) == got, (
          name,
          got,
      )
    experts = flat["layers/moe/up_proj"]
    # Each device stores E / fsdp experts (and F_e / tensor of each).
    split = mesh.shape["fsdp"] * mesh.shape["tensor"]
    assert experts.addressable_shards[0].data.size * split == experts.size
    np.testing.assert_array_equal(
        np.asarray(experts), np.asarray(reference.layers.moe.up_proj[...])
    )
    with jax.set_mesh(mesh):
      batch = sharding.global_batch({"tokens": tokens, "mask": mask}, mesh)
      logits, aux, grads = _step(model, batch["tokens"], batch["mask"])
      hlo = _step.lower(model, batch["tokens"], batch["mask"]).compile()
    _check_exchange(hlo.as_text(), config, mesh, tokens.size)
    err = np.abs(np.asarray(logits) - np.asarray(ref_logits))[mask].max()
    aux_err = abs(float(aux) - float(ref_aux))
    print(
        f"mesh {dict(mesh.shape)}: max |dlogit| {err:.2e}, |daux| {aux_err:.2e}"
    )
    assert err <= 1e-5, err
    assert aux_err <= 1e-6 * float(ref_aux), aux_err
    for name, g in _flat(grads).items():
      want_g = ref_grads[name]
      gerr = np.abs(np.asarray(g) - want_g).max()
      assert gerr <= 1e-5 * np.abs(want_g).max() + 1e-9, (name, gerr)
  print("OK")


if __name__ == "__main__":
  sys.exit(main())
