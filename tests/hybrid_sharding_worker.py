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
"""Runs in its own process with 8 fake CPU devices (see test_qwen3_5.py).

One TIP training step of a tiny Qwen3.5 (Gated DeltaNet + gated attention)
student against a tiny Qwen3.5 teacher, through the trainer's own jitted
step (explicit shardings, donation), on a 1-device mesh and on a
data=2 x fsdp=2 x tensor=2 mesh: the same rollouts, the same loss and the same
gradient of every parameter within float32 summation order. The optimizer
is replaced by one that keeps the gradient as its state, so the gradients
are read exactly. Prints 'OK' on success.
"""

import os
import shutil
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
import optax
from jax.sharding import PartitionSpec as P

from opd_jax import sharding, testing
from opd_jax.trainer import loop
from opd_jax.trainer import plan as plan_lib
from opd_jax.trainer.config import start_run


def _keep_gradient():
  """An optax transformation whose state is the last gradient (no update)."""

  def update(grads, state, params=None):
    del state, params
    return jax.tree.map(jnp.zeros_like, grads), grads

  return optax.GradientTransformation(
      lambda params: jax.tree.map(jnp.zeros_like, params), update
  )


def _hybrid_pair(directory):
  """A tiny Qwen3.5 student and teacher with the task tokenizer."""
  from opd_jax.data import tokenizer as task_tokenizer  # pylint: disable=g-import-not-at-top
  from opd_jax.models import save_hf  # pylint: disable=g-import-not-at-top

  tok_dir = task_tokenizer.build_task_tokenizer(
      os.path.join(directory, "tokenizer"), "arithmetic"
  )
  tok = task_tokenizer.load_task_tokenizer(tok_dir)
  special = dict(
      bos_token_id=tok.bos_token_id,
      eos_token_ids=(tok.eos_token_id,),
      pad_token_id=tok.pad_token_id,
  )
  student = testing.tiny_qwen3_5_config(vocab=80, chunk=8).replace(**special)
  teacher = testing.tiny_qwen3_5_config(
      ("linear_attention", "full_attention"), vocab=80, chunk=8
  ).replace(embed_dim=64, mlp_dim=128, **special)
  paths = {}
  for role, config, seed in (("student", student, 0), ("teacher", teacher, 1)):
    path = os.path.join(directory, role)
    save_hf(testing.random_model(config, seed=seed), path)
    for name in os.listdir(tok_dir):
      shutil.copy(os.path.join(tok_dir, name), path)
    paths[role] = path
  return paths


def _flat(tree):
  return {
      sharding.path_str(p): np.asarray(x)
      for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]
  }


def _step(paths, workdir, mesh_cfg):
  c = testing.tiny_train_config(paths, total_steps=1, batch_size=8)
  c.mesh.update(mesh_cfg)
  c.mesh.num_devices = 1 if mesh_cfg["fsdp"] * mesh_cfg["tensor"] == 1 else 0
  trainer = loop.Trainer(start_run(c), workdir)
  host = next(trainer.iterator)
  specs = {}
  with jax.set_mesh(trainer.mesh):
    batch = trainer._batch(0, host)  # pylint: disable=protected-access
    for p, x in jax.tree_util.tree_flatten_with_path(trainer.state.params)[0]:
      specs[sharding.path_str(p)] = x.sharding.spec
    state, metrics = trainer.step_fn(
        trainer.state, trainer.teacher_params, batch
    )
  out = (
      float(metrics["loss/total"]),
      _flat(state.opt_state),
      np.asarray(batch["tokens"]),
      specs,
      dict(trainer.mesh.shape),
  )
  trainer.checkpointer.close()
  trainer.writer.close()
  return out


def main():
  assert jax.device_count() == 8, jax.devices()
  original = plan_lib.optimizer_from_config
  plan_lib.optimizer_from_config = lambda o: (
      _keep_gradient(),
      original(o)[1],
  )
  directory = tempfile.mkdtemp()
  paths = _hybrid_pair(directory)
  runs = {}
  for name, mesh_cfg in [
      ("one", dict(data=1, fsdp=1, tensor=1)),
      ("dp2_fsdp2_tp2", dict(data=2, fsdp=2, tensor=2)),
  ]:
    runs[name] = _step(paths, os.path.join(directory, name), mesh_cfg)
  loss1, grads1, tokens1, _, _ = runs.pop("one")
  for name, (loss, grads, tokens, specs, shape) in runs.items():
    np.testing.assert_array_equal(tokens, tokens1)  # the same rollouts
    # The linear-attention weights are split as their rules say.
    assert specs["linear_layers/linear_attn/out_proj/kernel"] == P(
        None, "tensor", None, "fsdp"
    ), specs
    assert specs["linear_layers/linear_attn/in_proj_z/kernel"] == P(
        None, "fsdp", "tensor", None
    ), specs
    # Float32 summation order: the loss and every gradient entry are sums
    # over the batch's n = B x T positions, which the mesh splits over
    # 'data' x 'fsdp' (partial sums, then an all-reduce) and, inside each
    # position, over 'tensor' (heads). Two float32 evaluations of an n-term
    # sum in different orders differ by at most 2 gamma_n times the sum of
    # the terms' magnitudes (testing.summation_bound); here relative to
    # each tensor's largest gradient (and to the loss).
    bound = 2 * testing.gamma(tokens.size)
    worst = {}
    for path, g1 in grads1.items():
      g = grads[path]
      assert g.shape == g1.shape, path
      worst[path] = float(np.abs(g - g1).max() / max(np.abs(g1).max(), 1e-30))
    top = max(worst, key=worst.get)
    print(
        f"{name} {shape}: loss {loss:.8f} vs 1 device {loss1:.8f}"
        f" (|d| {abs(loss - loss1):.2e}); worst gradient {top}:"
        f" max |dg| / max |g| = {worst[top]:.2e} (bound {bound:.2e})"
    )
    assert abs(loss - loss1) <= bound * abs(loss1), (loss, loss1)
    bad = {p: w for p, w in worst.items() if not w <= bound}
    assert not bad, bad
  print("OK")


if __name__ == "__main__":
  sys.exit(main())
