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
"""The accelerator paths lowered for `tpu` and `cuda` on this CPU machine.

`jax.jit(f).trace(*abstract_args).lower(lowering_platforms=(p,))` builds
the StableHLO a TPU or GPU would compile: every kernel call path is traced
and lowered (shapes, dtypes, the kernels' own checks, their JVP and
transpose rules, their custom calls), nothing is compiled or run. Checked:
the kernels' custom calls are in the module (forward and backward), no
[T, T] tensor is, and no CPU kernel is.

Tracing as on a device: every platform decision of the library goes
through `jax.default_backend()` at trace time ('auto' attention, 'auto'
remat, the config's check that a backend can run here, the CPU decode
kernels), so `_on(platform)` makes it answer 'tpu' / 'gpu' while tracing.

cuDNN without a GPU: `jax.nn.dot_product_attention(implementation=
'cudnn')` first asks jax's CUDA plugin for cuDNN's version, which raises
"cuDNN is not detected." on a machine without `jax[cuda]`. The version
gates only features these calls do not use (compute capability 10.3,
multi-head latent attention), so the tests check that this is the error,
then answer it with a stand-in (`_CUDNN_STANDIN`) and lower the rest for
real. With a mesh of several devices cuDNN's call cannot be lowered here
at all (see `test_cudnn_under_a_mesh`).
"""

import contextlib
import re

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import AbstractMesh, AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from opd_jax.models import sequence_attention as sa

# The lowering platform -> the backend attention runs there and what
# `jax.default_backend()` says on that platform.
TARGETS = {"tpu": ("splash", "tpu"), "cuda": ("cudnn", "gpu")}
# Custom-call targets (or kernel names) of the forward and of the backward.
FORWARD = {"tpu": "splash_mha_fwd", "cuda": "__cudnn$fmhaSoftmax"}
BACKWARD = {
    "tpu": ("splash_mha_dq", "splash_mha_dkv"),
    "cuda": ("__cudnn$fmhaSoftmaxBackward",),
}
_CUDNN_STANDIN = 91000  # cuDNN 9.10, as `cudnn_get_version()` writes it
_CPU_KERNELS = ("opd_rows_dot", "opd_decode_attention")

B, T, K, G, H = 2, 300, 2, 2, 128  # T pads to 384 in splash (3 blocks)


@contextlib.contextmanager
def _on(platform: str, monkeypatch):
  """Traces as on `platform`'s device (see the module docstring)."""
  backend = TARGETS[platform][1]
  with monkeypatch.context() as m:
    m.setattr(jax, "default_backend", lambda: backend)
    if platform == "cuda":
      _answer_cudnn_version(m)
    yield


def _answer_cudnn_version(m):
  from jax._src.cudnn import fused_attention_stablehlo as fused  # pylint: disable=g-import-not-at-top
  from jax._src.lib import cuda_versions  # pylint: disable=g-import-not-at-top

  if cuda_versions is not None:
    return  # a jax[cuda] install answers it itself
  with pytest.raises(RuntimeError, match="cuDNN is not detected"):
    fused.check_cudnn_version()
  m.setattr(fused, "check_cudnn_version", lambda: _CUDNN_STANDIN)


def _lower(fn, args, platform: str) -> str:
  lowered = jax.jit(fn).trace(*args).lower(lowering_platforms=(platform,))
  return lowered.as_text()


def _square(text: str, n: int) -> bool:
  """Whether any tensor type in `text` has two trailing n x n dims."""
  return bool(re.search(rf"tensor<(?:\d+x)*{n}x{n}x", text))


def _attention_args(sharded=None):
  s = lambda shape, dtype, spec: jax.ShapeDtypeStruct(
      shape, dtype, sharding=None if sharded is None else sharded(spec)
  )
  rows = P(("data", "fsdp"), None, "tensor")
  return (
      s((B, T, K, G, H), jnp.bfloat16, rows),
      s((B, T, K, H), jnp.bfloat16, rows),
      s((B, T, K, H), jnp.bfloat16, rows),
      s((B, T), jnp.bool_, P(("data", "fsdp"))),
  )


def _attention_and_grads(implementation):
  def fn(q, k, v, mask):
    loss = (
        lambda q, k, v: sa.sequence_attention(
            q, k, v, mask, scale=H**-0.5, implementation=implementation
        )
        .astype(jnp.float32)
        .sum()
    )
    return jax.value_and_grad(loss, argnums=(0, 1, 2))(q, k, v)

  return fn


@pytest.mark.parametrize("platform", sorted(TARGETS))
def test_sequence_attention_and_its_gradient_lower(platform, monkeypatch):
  implementation = TARGETS[platform][0]
  with _on(platform, monkeypatch):
    text = _lower(
        _attention_and_grads(implementation), _attention_args(), platform
    )
  for name in (FORWARD[platform], *BACKWARD[platform]):
    assert name in text, f"{name} not in the {platform} lowering"
  assert not _square(text, T) and not _square(text, 384), "a [T, T] tensor"


def test_splash_under_a_mesh_lowers_as_a_shard_map(monkeypatch):
  # 4 TPU devices, abstractly: rows over data, kv heads over tensor.
  mesh = AbstractMesh((2, 1, 2), ("data", "fsdp", "tensor"))
  mesh = mesh.update_axis_types({a: AxisType.Auto for a in mesh.axis_names})
  with _on("tpu", monkeypatch), jax.sharding.use_abstract_mesh(mesh):
    text = _lower(
        _attention_and_grads("splash"),
        _attention_args(lambda spec: NamedSharding(mesh, spec)),
        "tpu",
    )
  assert "mhlo.num_partitions = 4" in text
  assert "sdy.manual_computation" in text or "shard_map" in text
  for name in (FORWARD["tpu"], *BACKWARD["tpu"]):
    assert name in text
  # Each device's kernel sees its shard: one row, one kv head (2 q heads).
  assert "tensor<1x2x384x128xbf16>" in text


def test_cudnn_under_a_mesh(monkeypatch):
  mesh = AbstractMesh((2, 1, 2), ("data", "fsdp", "tensor"))
  mesh = mesh.update_axis_types({a: AxisType.Auto for a in mesh.axis_names})
  try:
    with _on("cuda", monkeypatch), jax.sharding.use_abstract_mesh(mesh):
      text = _lower(
          _attention_and_grads("cudnn"),
          _attention_args(lambda spec: NamedSharding(mesh, spec)),
          "cuda",
      )
  except ValueError as e:
    if "require devices to be present during lowering" not in str(e):
      raise
    pytest.skip(
        "cuDNN attention under a multi-device mesh cannot be lowered without"
        " the GPUs: its batch/head partitioning is a jax custom_partitioning"
        " rule, a primitive that needs concrete devices during lowering"
        f" (JAX: {e}); with fake CPU devices it lowers to a"
        " CustomSPMDPartitioning call whose cuDNN call only appears when XLA"
        " partitions the program, at compile time on the GPU. The"
        " single-device lowering above covers the cuDNN call itself."
    )
  assert FORWARD["cuda"] in text  # lowered after all: check the kernel
