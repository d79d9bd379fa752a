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
"""Runs in its own process with 8 fake CPU devices (see test_sharding.py).

Checks that the forward pass under two meshes equals the single-device
forward and that parameters and activations carry the intended shardings.
Prints 'OK' on success; any failure raises.
"""

import os
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


def main():
  assert jax.device_count() == 8, jax.devices()
  config = testing.tiny_config("qwen3", vocab_size=256)
  reference = testing.random_model(config, seed=0)
  path = os.path.join(tempfile.mkdtemp(), "model")
  save_hf(reference, path)
  tokens = np.random.default_rng(0).integers(0, 256, (8, 16))
  mask = np.ones_like(tokens, bool)
  mask[3, :5] = False
  ref = np.asarray(
      reference(jnp.asarray(tokens), attention_mask=jnp.asarray(mask)).logits
  )

  for mesh_config in (
      sharding.MeshConfig(data=1, fsdp=4, tensor=2),
      sharding.MeshConfig(data=2, fsdp=4, tensor=1),
  ):
    mesh = sharding.make_mesh(mesh_config)
    model = load_hf(path, mesh=mesh)
    state = nnx.state(model, nnx.Param)
    flat = {
        sharding.path_str(p): x
        for p, x in jax.tree_util.tree_flatten_with_path(state)[0]
    }
    want = {
        "embedder/embedding": P("tensor", "fsdp"),
        "layers/attn/q_proj/kernel": P(None, "fsdp", "tensor", None),
        "layers/attn/o_proj/kernel": P(None, "tensor", None, "fsdp"),
        "layers/mlp/down_proj/kernel": P(None, "tensor", "fsdp"),
        "lm_head/kernel": P("fsdp", "tensor"),
    }
    for name, spec in want.items():
      got = flat[name].sharding.spec
      assert got == spec, (name, got, spec)
      assert len(flat[name].sharding.device_set) == 8
    # Every parameter got a sharding from the rules, none is left on one
    # device, and large ones are really split: each device holds 1/n of
    # the array, n > 1 the product of the mesh axes its spec names.
    for name, x in flat.items():
      assert x.sharding.mesh.shape == mesh.shape, name
      axes = [
          a
          for dim in x.sharding.spec
          if dim is not None
          for a in (dim if isinstance(dim, tuple) else (dim,))
      ]
      split = int(np.prod([mesh.shape[a] for a in axes]))
      shard = x.addressable_shards[0].data
      assert shard.size * split == x.size, (name, shard.shape, x.shape)
      if x.ndim >= 2 and x.size >= 4096:
        assert split > 1, (name, x.shape, x.sharding.spec)
    split_sizes = {n: flat[n].addressable_shards[0].data.size for n in want}
    print(f"mesh {dict(mesh.shape)}: per-device sizes {split_sizes}")

    @nnx.jit
    def forward(model, tokens, mask):
      return model(tokens, attention_mask=mask).logits

    with jax.set_mesh(mesh):
      batch = sharding.global_batch(
          {"tokens": tokens.astype(np.int32), "mask": mask}, mesh
      )
      logits = forward(model, batch["tokens"], batch["mask"])
    batch_axes = logits.sharding.spec[0]
    batch_axes = batch_axes if isinstance(batch_axes, tuple) else (batch_axes,)
    assert set(batch_axes) == {"data", "fsdp"} & {
        a for a, s in mesh.shape.items() if s > 1
    }, logits.sharding
    # Real positions only: a padded query attends to no key, so its output
    # is undefined and never used (the reference runs the C++ attention
    # kernel, which writes zeros there; the meshes run dense attention).
    err = np.abs(np.asarray(logits) - ref)[mask].max()
    print(f"mesh {dict(mesh.shape)}: max |dlogit| vs 1 device = {err:.2e}")
    assert err <= 1e-5, err
  check_sampler_splits_rows()
  check_decode_weights_gathered_over_data_axes()
  check_head_pass_is_vocabulary_parallel()
  print("OK")


def check_head_pass_is_vocabulary_parallel():
  """Under an 8-device FSDP mesh the head pass splits the vocabulary: the
  same statistics (top-k included) and loss gradients as without a mesh,
  and no device ever holds a whole [D, V] head (the partitioned program
  has no array of that shape, in any dtype)."""
  from opd_jax import heads  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(1)
  b, n, ds, dt, v, k = 8, 12, 16, 24, 256, 4

  def normal(*shape, scale=1.0):
    return (scale * rng.normal(size=shape)).astype(np.float32)

  args = (
      normal(b, n, ds),
      normal(ds, v, scale=0.5),
      normal(b, n, dt),
      normal(dt, v, scale=0.5),
  )
  ids = rng.integers(0, v, (b, n)).astype(np.int32)
  index = np.sort(rng.choice(n, (b, k)), axis=1).astype(np.int32)
  weights = np.ones((b, k), np.float32)

  def scores(hs, ws, ht, wt, ids):
    return heads.token_stats(hs, ws, ht, wt, ids, chunk_size=4, top_k=3)

  def grads(hs, ws, ht, wt, index, weights):
    def loss(hs, ws):
      return heads.selective_divergence_loss(
          hs, ws, ht, wt, index, weights, chunk_size=2
      ).value()

    return jax.value_and_grad(loss, argnums=(0, 1))(hs, ws)

  want_scores = jax.jit(scores)(*args, ids)
  want_grads = jax.jit(grads)(*args, index, weights)

  mesh = sharding.make_mesh(sharding.MeshConfig(data=1, fsdp=8, tensor=1))
  # As stored: hidden states split by rows, heads along D (the lm_head
  # rule); the gradients leave with the inputs' shardings.
  rows = jax.NamedSharding(mesh, P("fsdp"))
  along_d = jax.NamedSharding(mesh, P("fsdp", None))
  in_shardings = (rows, along_d, rows, along_d)
  placed = [jax.device_put(x, s) for x, s in zip(args, in_shardings)]
  with jax.set_mesh(mesh):
    score_fn = jax.jit(scores, in_shardings=(*in_shardings, rows))
    grad_fn = jax.jit(
        grads,
        in_shardings=(*in_shardings, rows, rows),
        out_shardings=(None, (rows, along_d)),
    )
    got_scores = score_fn(*placed, ids)
    got_grads = grad_fn(*placed, index, weights)
    for fn, fn_args in (
        (score_fn, (*placed, ids)),
        (grad_fn, (*placed, index, weights)),
    ):
      hlo = fn.lower(*fn_args).compile().as_text()
      for d in (ds, dt):
        for shape in (f"[{d},{v}]", f"[{v},{d}]"):
          assert shape not in hlo, f"a whole head {shape} on one device"

  def close(got, want, name):
    # float32 sums over V split into 8 partial sums: bounded relative to
    # the values' size.
    got, want = np.asarray(got), np.asarray(want)
    bound = 1e-5 * np.maximum(1.0, np.abs(want))
    assert np.all(np.abs(got - want) <= bound), (name, got, want)

  for name in want_scores._fields:
    w, g = getattr(want_scores, name), getattr(got_scores, name)
    if name == "student_topk_ids":
      np.testing.assert_array_equal(g, w)
    elif w is not None:
      close(g, w, name)
  close(got_grads[0], want_grads[0], "loss")
  close(got_grads[1][0], want_grads[1][0], "d loss / d student hidden")
  close(got_grads[1][1], want_grads[1][1], "d loss / d student head")
  print("head pass: vocabulary-parallel under fsdp=8, same values")


def check_decode_weights_gathered_over_data_axes():
  """`gather_data_parallel` drops fsdp (and data) from every weight's
  sharding and keeps tensor parallelism, with the values unchanged."""
  mesh = sharding.make_mesh(sharding.MeshConfig(data=1, fsdp=4, tensor=2))
  model = testing.random_model(testing.tiny_config("qwen3"))
  state = nnx.state(model)
  sharded = jax.device_put(state, sharding.param_shardings(state, mesh))
  with jax.set_mesh(mesh):
    gathered = jax.jit(lambda s: sharding.gather_data_parallel(s, mesh))(
        sharded
    )
  specs = {}
  for path, x in jax.tree_util.tree_leaves_with_path(gathered):
    name = sharding.path_str(path)
    axes = {
        a
        for part in x.sharding.spec
        for a in (part if isinstance(part, tuple) else (part,))
        if a is not None
    }
    assert not axes & {"data", "fsdp"}, (name, x.sharding.spec)
    specs[name] = axes
  before = jax.tree.leaves(sharded)
  assert all(
      np.array_equal(a, b) for a, b in zip(before, jax.tree.leaves(gathered))
  )
  # q_proj [L, D, H, Hd] is split by heads over `tensor`: kept.
  assert specs["layers/attn/q_proj/kernel"] == {"tensor"}, specs
  print("decode weights: fsdp gathered, tensor kept")


def check_sampler_splits_rows():
  """The compiled sampler holds 1/8 of the batch per device on 8 devices:
  per-device temporaries at B = 64 stay near one device's at B = 8 (the
  single-device C++ decode kernels, whose operands XLA would gather, are
  not used under the mesh)."""
  from opd_jax.trainer import memory  # pylint: disable=g-import-not-at-top
  from opd_jax.trainer.config import to_run_config  # pylint: disable=g-import-not-at-top
  from opd_jax.trainer.plan import plan_run, split_abstract  # pylint: disable=g-import-not-at-top

  paths = testing.tiny_distillation_pair(tempfile.mkdtemp())
  temps = {}
  for devices, batch in ((1, 8), (8, 64)):
    c = testing.tiny_train_config(paths)
    c.batch_size, c.max_prompt_len, c.max_new_tokens = batch, 32, 256
    c.mesh.num_devices = devices
    plan = plan_run(to_run_config(c))
    sg, params = split_abstract(plan.abstract_model("student"))
    tg, teacher = split_abstract(plan.abstract_model("teacher"))
    temps[devices] = memory.sampler_memory(
        plan, {"student": (sg, params), "teacher": (tg, teacher)}
    ).temp_bytes
  print(f"sampler temporaries per device: {temps}")
  assert temps[8] <= 1.5 * temps[1], temps


if __name__ == "__main__":
  sys.exit(main())
