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
"""The accelerator backends' numbers on CPU: splash in Pallas' interpreter,
cuDNN's row reordering through XLA's reference of the same call.

Both against `dense_attention`, forward and gradients, with left pads,
right pads (after a response) and holes in the key mask, grouped queries.
Splash also under a 4-device mesh (its shard_map). (That they lower for
their platforms is `test_lowering.py`.)
"""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from opd_jax.models import sequence_attention as sa

B, T, K, G, H = 2, 150, 2, 2, 32  # T pads to 256 in splash (two blocks)


def _inputs():
  keys = jax.random.split(jax.random.key(0), 4)
  q = jax.random.normal(keys[0], (B, T, K, G, H))
  k = jax.random.normal(keys[1], (B, T, K, H))
  v = jax.random.normal(keys[2], (B, T, K, H))
  pos = jnp.arange(T)
  mask = jnp.stack([
      (pos >= 17) & (pos < 140),  # left pads, a response, pads after it
      (pos >= 5) & (pos % 7 != 3),  # left pads, then holes
  ])
  # Cotangents on real queries only: a pad's output is not defined.
  w = jax.random.normal(keys[3], q.shape) * mask[:, :, None, None, None]
  return q, k, v, mask, w


def _value_and_grads(attend, q, k, v, mask, w):
  loss = lambda q, k, v: jnp.sum(attend(q, k, v, mask, scale=H**-0.5) * w)
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(q, k, v)


def _check(attend, atol):
  q, k, v, mask, w = _inputs()
  out = jax.jit(lambda *a: attend(*a, scale=H**-0.5))(q, k, v, mask)
  ref = sa.dense_attention(q, k, v, mask, scale=H**-0.5)
  real = np.asarray(mask)
  np.testing.assert_allclose(out[real], ref[real], atol=atol)
  value, grads = _value_and_grads(attend, q, k, v, mask, w)
  ref_value, ref_grads = _value_and_grads(sa.dense_attention, q, k, v, mask, w)
  np.testing.assert_allclose(value, ref_value, rtol=1e-5)
  for name, g, r in zip("qkv", grads, ref_grads):
    np.testing.assert_allclose(g, r, atol=atol, err_msg=f"d{name}")
  return out, ref


def test_splash_in_the_interpreter_equals_dense():
  out, ref = _check(
      lambda *a, **kw: sa.splash_attention(*a, **kw, interpret=True), 2e-5
  )
  # Exact for every query with a key before it, pads after a response too.
  np.testing.assert_allclose(out[0, 17:], ref[0, 17:], atol=2e-5)


def test_cudnn_reordering_through_xla_equals_dense():
  out, ref = _check(
      lambda *a, **kw: sa.cudnn_attention(*a, **kw, implementation="xla"), 2e-5
  )
  # The pads after a response attend to the whole response, as in dense.
  np.testing.assert_allclose(out[0, 140:], ref[0, 140:], atol=2e-5)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_cudnn_attention_keeps_the_callers_dtype(dtype):
  q, k, v, mask, _ = _inputs()
  out = jax.eval_shape(
      lambda q, k, v: sa.cudnn_attention(
          q, k, v, mask, scale=H**-0.5, implementation="xla"
      ),
      q.astype(dtype),
      k.astype(dtype),
      v.astype(dtype),
  )
  assert out.shape == q.shape and out.dtype == dtype


_MESH_CHECK = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
from opd_jax.models import sequence_attention as sa
b, t, k, g, h = 4, 150, 2, 2, 32
keys = jax.random.split(jax.random.key(0), 3)
q = jax.random.normal(keys[0], (b, t, k, g, h))
kv = [jax.random.normal(x, (b, t, k, h)) for x in keys[1:]]
pos = jnp.arange(t)
mask = (pos[None] >= jnp.array([[0], [5], [17], [40]])) & (pos[None] < 140)
ref = sa.dense_attention(q, *kv, mask, scale=h**-0.5)
mesh = jax.make_mesh(
    (2, 1, 2), ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3
)
with jax.set_mesh(mesh):
  rows = NamedSharding(mesh, P(("data", "fsdp"), None, "tensor"))
  args = [jax.device_put(x, rows) for x in (q, *kv)]
  f = jax.jit(
      lambda *a: sa.splash_attention(*a, scale=h**-0.5, interpret=True)
  )
  assert "sdy.manual_computation" in f.lower(*args, mask).as_text()
  out = f(*args, mask)
real = np.asarray(mask)
np.testing.assert_allclose(np.asarray(out)[real], np.asarray(ref)[real], atol=2e-5)
print("ok")
"""


@pytest.mark.slow
def test_splash_under_a_mesh_equals_dense():
  # 4 fake devices (own process): rows over data, kv heads over tensor, one
  # shard_map'ed kernel per device.
  env = dict(
      os.environ,
      XLA_FLAGS=(
          os.environ.get("XLA_FLAGS", "")
          + " --xla_force_host_platform_device_count=4"
      ),
      JAX_PLATFORMS="cpu",
  )
  proc = subprocess.run(
      [sys.executable, "-c", _MESH_CHECK],
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]
