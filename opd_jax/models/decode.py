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
"""The decode-loop form of a Transformer (`split_layers`) and its CPU paths.

Why this module exists: the sampler's decode loop (`rollouts.sampler`,
`rollouts.branching`) runs a few rows per step through the whole model,
and on one CPU device that is bound by reading the weights. There, the
model it decodes with differs from the one it trains:

- the layer stack is split into one Block per layer, sliced once before
  the `while_loop` instead of every step (on every backend);
- on a single CPU device (`sharding.single_device()`, with
  `kernels.cpu_kernels_enabled()`), each float32 or bfloat16 projection
  keeps its kernel as [out, in] rows for the C++ `kernels.rows_dot`, and
  one-token attention runs `kernels.decode_attention`;
- there, too, an untied head is kept as [V, D] rows and a head of few rows
  is the C++ `rows_dot` (up to 8 rows) or `decode_head`'s fused loop (up
  to 64), not XLA's dot.

`models.transformer` stays the model (one plain XLA head, the stacked
layers); everything above lives here, in `SplitTransformer`, a subclass
that travels through `nnx.split` / `nnx.merge` and jit like the model.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from opd_jax import kernels
from opd_jax import sharding
from opd_jax.models import layers
from opd_jax.models.attention import Attention
from opd_jax.models.transformer import Transformer, layer_runs

# Up to this many rows, a decoding model (`split_layers`) computes its
# logits with `decode_head`; up to _KERNEL_HEAD_ROWS rows of a float32 or
# bfloat16 head on CPU, with the C++ `kernels.rows_dot` (1.14x per rollout
# at B = 4 and 8; from 16 rows on it is slower than `decode_head`,
# BENCHMARKS.md).
_DECODE_HEAD_ROWS = 64
_KERNEL_HEAD_ROWS = 8


def decode_head(h: jax.Array, w: jax.Array) -> jax.Array:
  """Logits [M, V] float32 of a few hidden rows h [M, D] against w [V, D].

  logits[m, v] = sum_d h[m, d] w[v, d], written as a multiply-and-reduce
  over d that XLA fuses into one pass over w (each [D] row read once, dotted
  with all M rows), rather than as a `dot`. At decode sizes (M <= 64,
  V = 32000, D = 256) XLA:CPU's dot took 1.2-1.7x as long as this pass
  (measured, not explained; BENCHMARKS.md, "Decode products as fused
  loops"). The barrier keeps the producer of h (the final norm) out of the
  fusion, which would otherwise recompute it for every row of w.
  """
  h = jax.lax.optimization_barrier(h.astype(jnp.float32))
  return jnp.sum(w.astype(jnp.float32)[:, None, :] * h[None], axis=-1).T


class SplitTransformer(Transformer):
  """A Transformer with one Block per layer, for decode loops (`split_layers`).

  Computes what the model computes (to float rounding); only where the
  weights live and which products run differ.

  Attributes:
    layers: `nnx.List` of `num_layers` Blocks (the stacks' slices, in
      layer order; a MoE model's dense layers are among them).
    cpu_decode: True on one CPU device (`sharding.single_device()`): the
      C++ kernels and the fused few-row head are used.
    head_rows: with `cpu_decode` and an untied head, an `nnx.Cache` of the
      head kernel as [V, D] rows (absent otherwise).
  """

  def __init__(self, model: Transformer):  # pylint: disable=super-init-not-called
    # The model's own submodules, not new parameters: a merge of its split
    # is a fresh graph over the same arrays (shared, not copied, outside
    # jit), so changing the split model leaves `model` as it was.
    fresh = nnx.merge(*nnx.split(model))
    for name, value in vars(fresh).items():
      if not name.startswith("_"):
        setattr(self, name, value)
    self.layers = nnx.List(model._blocks())  # pylint: disable=protected-access
    self.dense_layers = None
    self.linear_layers = None
    # The C++ kernels and the fused decode head are single-device CPU
    # paths: elsewhere XLA's dots are the fast ones, and under a mesh of
    # several devices the partitioner would gather their operands (the
    # whole batch's KV cache every step; for the fused head, the [V, M, D]
    # product: 9.3 GiB per device at the TIP recipe's 1.7B student).
    self.cpu_decode = (
        jax.default_backend() == "cpu" and sharding.single_device()
    )
    if self.cpu_decode and kernels.cpu_kernels_enabled():
      for _, node in nnx.iter_graph(self.layers):
        if (
            isinstance(node, layers.Projection)
            and node.kernel[...].dtype in kernels.KERNEL_DTYPES
        ):
          node.attach_rows()
        if isinstance(node, Attention):
          node.use_decode_kernel()
    if self.cpu_decode and self.lm_head is not None:
      # Decoding multiplies a few rows by the whole head every step. XLA:CPU
      # runs that product about 1.4x faster with the head as [V, D] (each
      # logit one contiguous row) than as the kernel's [D, V] (measured in
      # BENCHMARKS.md); the transpose is made once per loop, not per step.
      self.head_rows = nnx.Cache(self.lm_head.kernel[...].T)

  def _layer_runs(self) -> list:
    """[(graphdef, stacked params)] per run: an uncached call restacks."""
    out, i = [], 0
    for _, start, stop in layer_runs(self.config):
      splits = [nnx.split(block) for block in self.layers[i : i + stop - start]]
      i += stop - start
      out.append((
          splits[0][0],
          jax.tree.map(lambda *xs: jnp.stack(xs), *[s for _, s in splits]),
      ))
    return out

  def _blocks(self) -> list:
    """The Blocks, already split."""
    return list(self.layers)

  def apply_head(self, hidden: jax.Array) -> jax.Array:
    """Logits [..., V] in float32 from hidden states [..., D].

    On one CPU device (`cpu_decode`) the head contracts with [V, D] rows
    (the embedding if tied, else `head_rows`): up to 8 rows through the
    C++ `kernels.rows_dot`, up to 64 through `decode_head`, more through
    XLA's dot. Elsewhere it is the model's own head.
    """
    if not self.cpu_decode:
      return super().apply_head(hidden)
    lead = hidden.shape[:-1]
    h = hidden.reshape(-1, hidden.shape[-1])
    if self.lm_head is None:
      w = self.embedder.embedding[...]
    else:
      w = layers.rows_of(self.head_rows[...], self.lm_head.kernel[...])
    if h.shape[0] <= _KERNEL_HEAD_ROWS and kernels.rows_dot_uses_kernel(
        h.dtype, w.dtype
    ):
      logits = kernels.rows_dot(h, w)
    elif h.shape[0] <= _DECODE_HEAD_ROWS:
      logits = decode_head(h, w)
    else:
      logits = jax.lax.dot_general(
          h,
          w.astype(h.dtype),
          (((1,), (1,)), ((), ())),
          preferred_element_type=jnp.float32,
      )
    return logits.reshape(*lead, -1)


def split_layers(model: Transformer) -> SplitTransformer:
  """`model` for decoding loops: its layer stack split into one Block each.

  With the stack, every cached call slices each layer's weights out of it,
  and inside a `while_loop` those slices are copies made every step.
  Splitting once before the loop makes them loop-invariant buffers. Arrays
  are shared, not copied, outside jit. A model already split is returned
  as it is.

  On CPU (`kernels.cpu_kernels_enabled()`), outside a mesh of several
  devices, each float32 or bfloat16 projection also keeps its kernel as
  [out, in] rows for `kernels.rows_dot`, which runs a decode step's
  few-row products about 2x faster than XLA:CPU's dot (the copies double
  the trunk's weights while the split model lives), one-token attention
  runs `kernels.decode_attention`, a head of up to 64 rows is
  `decode_head`'s fused loop and an untied head is kept as [V, D] rows.
  Elsewhere (accelerators, a mesh of several devices) decoding runs XLA's
  dots.

  Examples:
    >>> from opd_jax import testing
    >>> model = testing.random_model(testing.tiny_config("qwen2"), seed=0)
    >>> split = split_layers(model)
    >>> len(split.layers) == model.config.num_layers
    True
    >>> split_layers(split) is split
    True
  """
  if isinstance(model, SplitTransformer):
    return model
  return SplitTransformer(model)
