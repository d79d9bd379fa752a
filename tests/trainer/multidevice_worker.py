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
"""Multi-device and multi-process training checks, run in their own processes.

python multidevice_worker.py mesh8 PAIR_DIR
    8 fake devices: one step's loss and update under fsdp=4 x tensor=2 and
    data=2 x fsdp=4 equal those on a 1-device mesh. Prints 'OK'.
python multidevice_worker.py train PAIR_DIR WORKDIR OUT.npz NPROC PID PORT
    trains the tiny config (4 global devices: NPROC processes with 4/NPROC
    fake devices each) and process 0 writes the final params to OUT.npz.
"""

import os
import sys

mode = sys.argv[1]
if mode == "mesh8":
  os.environ["XLA_FLAGS"] = (
      os.environ.get("XLA_FLAGS", "")
      + " --xla_force_host_platform_device_count=8"
  )
else:
  nproc = int(sys.argv[5])
  os.environ["XLA_FLAGS"] = (
      os.environ.get("XLA_FLAGS", "")
      + f" --xla_force_host_platform_device_count={4 // nproc}"
  )
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # pylint: disable=g-import-not-at-top
import numpy as np

from opd_jax import sharding, testing
from opd_jax.trainer import distributed, loop
from opd_jax.trainer.config import start_run


def _paths(pair_dir):
  return {r: os.path.join(pair_dir, r) for r in ("student", "teacher")}


def mesh8(pair_dir):
  assert jax.device_count() == 8
  results = {}
  for name, mesh_cfg in [
      ("one", dict(data=1, fsdp=1, tensor=1)),
      ("fsdp4_tp2", dict(data=1, fsdp=4, tensor=2)),
      ("dp2_fsdp4", dict(data=2, fsdp=4, tensor=1)),
  ]:
    c = testing.tiny_train_config(_paths(pair_dir), total_steps=1, batch_size=8)
    c.mesh.update(mesh_cfg)
    c.mesh.num_devices = 1 if name == "one" else 0
    trainer = loop.Trainer(start_run(c), os.path.join(pair_dir, f"run_{name}"))
    host = next(trainer.iterator)
    with jax.set_mesh(trainer.mesh):
      batch = trainer._batch(0, host)  # pylint: disable=protected-access
      state, metrics = trainer.step_fn(
          trainer.state, trainer.teacher_params, batch
      )
    del state
    results[name] = (
        float(metrics["loss/total"]),
        float(metrics["train/grad_norm"]),
        np.asarray(batch["tokens"]),
    )
    trainer.checkpointer.close()
    trainer.writer.close()
  # Adam's first update is about lr * sign(g), so parameters would amplify
  # float summation-order noise in near-zero gradients: compare the loss and
  # the gradient norm instead.
  loss1, gnorm1, tokens1 = results.pop("one")
  for name, (loss, gnorm, tokens) in results.items():
    np.testing.assert_array_equal(tokens, tokens1)  # same rollouts
    print(
        f"{name}: loss {loss:.7f} vs 1 device {loss1:.7f};"
        f" grad norm {gnorm:.7f} vs {gnorm1:.7f}"
    )
    assert abs(loss - loss1) <= 1e-5 * max(1.0, abs(loss1)), name
    assert abs(gnorm - gnorm1) <= 1e-4 * max(1.0, abs(gnorm1)), name
  print("OK")


def train(pair_dir, workdir, out, nproc, pid, port):
  if nproc > 1:
    distributed.initialize(f"127.0.0.1:{port}", nproc, pid)
  assert jax.device_count() == 4, jax.devices()
  c = testing.tiny_train_config(
      _paths(pair_dir), total_steps=3, checkpoint_every=2
  )
  trainer = loop.Trainer(start_run(c), workdir)
  trainer.run()
  params = jax.tree.map(
      lambda x: np.asarray(
          jax.experimental.multihost_utils.process_allgather(x, tiled=True)
      ),
      trainer.state.params,
  )
  if jax.process_index() == 0:
    flat = {
        sharding.path_str(p): v
        for p, v in jax.tree_util.tree_flatten_with_path(params)[0]
    }
    np.savez(out, **flat)
  print("OK")


if __name__ == "__main__":
  if mode == "mesh8":
    mesh8(sys.argv[2])
  else:
    train(
        sys.argv[2],
        sys.argv[3],
        sys.argv[4],
        int(sys.argv[5]),
        int(sys.argv[6]),
        int(sys.argv[7]),
    )
