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
"""Mesh, partition rules and activation constraints (multi-device in a subprocess)."""

import jax
import pytest
from flax import nnx
import scripts_worker  # tests/, on the path beside conftest.py
from jax.sharding import PartitionSpec as P

from opd_jax import sharding
from opd_jax.models import PRESETS, Transformer, preset


class _FakeMesh:
  shape = {"data": 2, "fsdp": 4, "tensor": 2}


@pytest.mark.parametrize(
    "name", ["qwen3_0p6b", "qwen2p5_1p5b", "llama3p1_8b", "qwen3_30b_a3b"]
)
def test_every_parameter_has_a_rule(name):
  config = preset(name)
  model = nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0)))
  specs = sharding.param_specs(nnx.state(model, nnx.Param), _FakeMesh())
  leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, P))
  assert leaves and all(isinstance(s, P) for s in leaves)


def test_unmatched_parameter_is_an_error():
  with pytest.raises(ValueError, match="No partition rule matches"):
    sharding.spec_for_path("layers/attn/rotary/table", (4, 4))


def test_fit_spec_drops_axes_that_do_not_divide():
  mesh = _FakeMesh()
  assert sharding.fit_spec(P("tensor", "fsdp"), (151936, 1024), mesh) == P(
      "tensor", "fsdp"
  )
  assert sharding.fit_spec(P("tensor", "fsdp"), (211, 48), mesh) == P(
      None, "fsdp"
  )
  assert sharding.fit_spec(P(("data", "fsdp"), None), (2, 5), mesh) == P(
      "data", None
  )
  assert sharding.fit_spec(P(("data", "fsdp"), None), (16, 5), mesh) == P(
      ("data", "fsdp"), None
  )


@pytest.mark.parametrize(
    "cfg,n,shape",
    [
        (sharding.MeshConfig(), 8, (1, 8, 1)),
        (sharding.MeshConfig(data=2, fsdp=-1, tensor=2), 8, (2, 2, 2)),
        (sharding.MeshConfig(data=1, fsdp=4, tensor=2), 8, (1, 4, 2)),
    ],
)
def test_mesh_config_shape(cfg, n, shape):
  assert cfg.shape(n) == shape


def test_mesh_config_errors():
  with pytest.raises(ValueError, match="not divisible"):
    sharding.MeshConfig(data=3).shape(8)
  with pytest.raises(ValueError, match="multiply to 4"):
    sharding.MeshConfig(data=2, fsdp=2, tensor=1).shape(8)
  with pytest.raises(ValueError, match="at most one axis"):
    sharding.MeshConfig(data=-1, fsdp=-1).shape(8)


def test_shard_is_noop_without_mesh():
  x = jax.numpy.ones((4, 3))
  assert sharding.shard(x, P("data")) is x


def test_eight_fake_devices_match_one_device():
  scripts_worker.run_device_worker("sharding_worker.py", timeout=600)
