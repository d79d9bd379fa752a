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
import dataclasses
import json
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


# -- the training step and the sampler, as the trainer builds them ----------


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
  """config.json of a tiny Qwen3 student and teacher (all `plan_run` reads)."""
  from opd_jax import testing  # pylint: disable=g-import-not-at-top
  from opd_jax.models import to_hf_config  # pylint: disable=g-import-not-at-top

  root = tmp_path_factory.mktemp("pair")
  student = testing.tiny_config("qwen3", vocab_size=96)
  paths = {}
  for role, config in (
      ("student", student),
      ("teacher", student.replace(embed_dim=64, mlp_dim=128)),
  ):
    path = root / role
    path.mkdir()
    (path / "config.json").write_text(json.dumps(to_hf_config(config)))
    paths[role] = str(path)
  return paths


def _plan(paths, implementation):
  from opd_jax.trainer import plan_run, to_run_config  # pylint: disable=g-import-not-at-top
  from opd_jax.trainer.config import default_config  # pylint: disable=g-import-not-at-top

  c = default_config()
  c.student, c.teacher = paths["student"], paths["teacher"]
  c.batch_size, c.max_prompt_len, c.max_new_tokens = 2, 8, 200
  c.compute_dtype = "bfloat16"
  c.mesh.num_devices = 1
  plan = plan_run(to_run_config(c))
  # The platform's explicit backend in both models, as `config.attention`
  # sets it.
  return dataclasses.replace(
      plan,
      student_config=plan.student_config.replace(attention=implementation),
      teacher_config=plan.teacher_config.replace(attention=implementation),
  )


def _abstract_models(plan):
  from opd_jax.trainer.plan import split_abstract  # pylint: disable=g-import-not-at-top

  return {
      r: split_abstract(plan.abstract_model(r)) for r in ("student", "teacher")
  }


@pytest.mark.parametrize("platform", sorted(TARGETS))
def test_training_step_lowers(platform, tiny_pair, monkeypatch):
  from opd_jax import sharding  # pylint: disable=g-import-not-at-top

  with _on(platform, monkeypatch):
    plan = _plan(tiny_pair, TARGETS[platform][0])
    models = _abstract_models(plan)
    (sgraph, params), (tgraph, teacher) = models["student"], models["teacher"]
    state = plan.abstract_state(params)
    batch = plan.abstract_batch()
    with jax.set_mesh(plan.mesh):
      fn, state_sh, teacher_sh, batch_sh = plan.compile_step(
          state,
          teacher,
          batch,
          student_graphdef=sgraph,
          teacher_graphdef=tgraph,
      )
      abstract = sharding.with_shardings
      text = (
          fn.trace(
              abstract(state, state_sh),
              abstract(teacher, teacher_sh),
              abstract(batch, {k: batch_sh[k] for k in batch}),
          )
          .lower(lowering_platforms=(platform,))
          .as_text()
      )
  # Student and teacher forward, the student's backward.
  assert FORWARD[platform] in text
  for name in BACKWARD[platform]:
    assert name in text, f"{name} not in the {platform} step"
  length = plan.run.data.max_prompt_len + plan.run.data.max_new_tokens  # 208
  assert not _square(text, length) and not _square(text, 256), "[T, T]"


@pytest.mark.parametrize("platform", sorted(TARGETS))
def test_sampler_lowers(platform, tiny_pair, monkeypatch):
  from opd_jax import sharding  # pylint: disable=g-import-not-at-top
  from opd_jax.rollouts import sampler  # pylint: disable=g-import-not-at-top

  with _on(platform, monkeypatch):
    plan = _plan(tiny_pair, TARGETS[platform][0])
    graphdef, state = _abstract_models(plan)["student"]
    d = plan.run.data
    with jax.set_mesh(plan.mesh):
      fn = sampler.jitted_sampler(
          (graphdef,),
          (1.0,),
          plan.sampling,
          d.max_new_tokens,
          tuple(plan.student_config.eos_token_ids),
          0,
          plan.compute_dtype,
      )
      rows = NamedSharding(plan.mesh, sharding.batch_spec(2))
      shardings = sharding.param_shardings(state, plan.mesh)
      text = (
          fn.trace(
              (sharding.with_shardings(state, shardings),),
              (jax.ShapeDtypeStruct((2, 8), jnp.int32, sharding=rows),),
              (jax.ShapeDtypeStruct((2, 8), jnp.bool_, sharding=rows),),
              jax.ShapeDtypeStruct((2,), jnp.uint32),
          )
          .lower(lowering_platforms=(platform,))
          .as_text()
      )
  assert FORWARD[platform] in text, "the prefill's kernel"
  assert "stablehlo.while" in text, "the decode loop"
  for name in _CPU_KERNELS:
    assert name not in text, f"the CPU kernel {name} in a {platform} sampler"
