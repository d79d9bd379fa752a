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
"""The Qwen3-MoE routed-expert block and the router's load-balancing loss.

Dropless: every token goes to its top-k experts. The token copies are
sorted by expert and each projection is one `grouped_matmul` over the
sorted rows, so the work is the routed experts' (k of E per token) and no
[tokens, experts, D] dispatch tensor is formed.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from jax.sharding import PartitionSpec as P

from opd_jax import sharding
from opd_jax.models import layers
from opd_jax.models.config import ModelConfig
from opd_jax.models.grouped_matmul import grouped_matmul


class RouterStats(NamedTuple):
  """Sums over the real tokens of one or more MoE layers, for the loss.

  Attributes:
    counts: [E] float32, top-k assignments to each expert.
    probs: [E] float32, router probabilities of each expert.
    rows: [] float32, (layer, token) pairs summed over.
  """

  counts: jax.Array
  probs: jax.Array
  rows: jax.Array

  def __add__(self, other: "RouterStats") -> "RouterStats":  # type: ignore[override]
    return RouterStats(*(a + b for a, b in zip(self, other)))


def route(
    router_logits: jax.Array, top_k: int, norm_topk_prob: bool
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Softmax top-k routing, as transformers' `Qwen3MoeTopKRouter`.

  p = softmax(logits) in float32; the k largest p_e are the token's experts
  and, with `norm_topk_prob`, their weights are p_e / sum_topk p.

  Args:
    router_logits: [N, E].
    top_k: k, 1 <= k <= E.
    norm_topk_prob: renormalise the k weights to sum to one.

  Returns:
    (probs [N, E] float32, weights [N, k] float32, experts int32 [N, k]).
  """
  acc = jnp.promote_types(router_logits.dtype, jnp.float32)  # f64 stays
  probs = jax.nn.softmax(router_logits.astype(acc), axis=-1)
  weights, experts = jax.lax.top_k(probs, top_k)
  if norm_topk_prob:
    weights = weights / jnp.sum(weights, axis=-1, keepdims=True)
  return probs, weights, experts.astype(jnp.int32)


def router_stats(probs, experts, where=None) -> RouterStats:
  """RouterStats of one layer: probs [N, E], experts [N, k], where [N]."""
  num_experts = probs.shape[-1]
  w = (
      jnp.ones(probs.shape[:1], probs.dtype)
      if where is None
      else where.astype(probs.dtype)
  )
  # A [N * k] scatter-add (transformers' histc / scatter_add_), not a
  # one-hot [N, k, E].
  counts = (
      jnp.zeros((num_experts,), probs.dtype)
      .at[experts.reshape(-1)]
      .add(jnp.repeat(w, experts.shape[-1]))
  )
  probs_sum = jnp.sum(probs * w[:, None], axis=0)
  return RouterStats(counts, probs_sum, jnp.sum(w))


def balance_loss(stats: RouterStats) -> jax.Array:
  """Switch-Transformer load-balancing loss from summed RouterStats.

  .. math::
    \\mathcal{L} = E \\sum_e f_e P_e, \\quad f_e = \\frac{c_e}{R},\\;
    P_e = \\frac{\\sum p_e}{R}

  with c_e the top-k assignments to expert e and R the (layer, token)
  rows, summed over all MoE layers before the product: transformers'
  `load_balancing_loss_func` (f sums to k; a uniform router gives k).

  Returns:
    [] float32. Only P carries a gradient (the top-k counts are steps).
  """
  rows = jnp.maximum(stats.rows, 1.0)
  e = stats.counts.shape[-1]
  return e * jnp.sum((stats.counts / rows) * (stats.probs / rows))


def load_balancing_loss(
    router_logits: jax.Array, top_k: int, *, where: jax.Array | None = None
) -> jax.Array:
  """The load-balancing loss of router logits [L, N, E] (where: [N] bool).

  A pure-function form of `balance_loss` for all layers' logits at once
  (the model accumulates RouterStats layer by layer instead).
  """
  stats = None
  for layer_logits in router_logits:
    probs, _, experts = route(layer_logits, top_k, False)
    s = router_stats(probs, experts, where)
    stats = s if stats is None else stats + s
  return balance_loss(stats)


def routed_swiglu(x, experts, weights, gate, up, down) -> jax.Array:
  """sum_j weights[n, j] * expert_{experts[n, j]}(x[n]), dropless.

  Each token's k copies are sorted by expert (stable), every projection is
  one grouped matmul over the N * k sorted rows, and the outputs go back
  to their tokens by the inverse permutation.

  Args:
    x: [N, D].
    experts: int32 [N, k].
    weights: [N, k] routing weights.
    gate, up: [E, D, F] expert kernels; down: [E, F, D].

  Returns:
    [N, D] in x's dtype (the k-term sum in float32).
  """
  # Every expert is local: the copies sort into all E groups.
  y = local_experts_swiglu(x, experts, weights, gate, up, down, first=0)
  return y.astype(x.dtype)


def local_experts_swiglu(x, experts, weights, gate, up, down, first):
  """The part of `routed_swiglu` done by experts `first .. first + E_l - 1`.

  Each token's k copies are sorted by local expert (stable), every
  projection is one grouped matmul over the sorted rows, and the outputs
  go back to their tokens by the inverse permutation. Copies routed
  elsewhere sort past the local groups, where the grouped matmul neither
  computes nor writes them (rows past the groups' sum are zero), so a
  device does only its own experts' rows.

  Args:
    x, experts, weights: as `routed_swiglu` (global expert ids).
    gate, up: [E_l, D, F] this device's experts; down: [E_l, F, D].
    first: the global id of local expert 0 (traced).

  Returns:
    [N, D] float32 (at least): sum over the token's local experts of
    weight * expert(x); the caller sums it over the experts' owners.
  """
  n, k = experts.shape
  e_l = gate.shape[0]
  local = experts.reshape(-1) - first
  flat = jnp.where((local >= 0) & (local < e_l), local, e_l)
  order = jnp.argsort(flat, stable=True)
  sizes = jnp.bincount(flat, length=e_l + 1)[:e_l].astype(jnp.int32)
  xs = jnp.take(x, order // k, axis=0)
  h = jax.nn.silu(grouped_matmul(xs, gate, sizes)) * grouped_matmul(
      xs, up, sizes
  )
  ys = grouped_matmul(h, down, sizes)  # zero past the local rows
  y = jnp.zeros_like(ys).at[order].set(ys, unique_indices=True)
  y = y.reshape(n, k, -1)
  acc = jnp.promote_types(x.dtype, jnp.float32)
  # transformers scales each expert's output in the model dtype.
  return jnp.sum((y * weights.astype(x.dtype)[..., None]).astype(acc), axis=1)


def expert_parallel(mesh, num_experts: int) -> bool:
  """Whether the experts run where they are stored (split over 'fsdp')."""
  fsdp = mesh.shape["fsdp"]
  return fsdp > 1 and num_experts % fsdp == 0


def ring_routed_swiglu(x, experts, weights, gate, up, down, *, fsdp: int):
  """This device's share of `routed_swiglu` in a ring over 'fsdp' (shard_map).

  Device d of the ring (its 'fsdp' index) holds its tokens X_d [n, D] with
  their routing and the experts gate/up/down[d * E_l : (d + 1) * E_l]. Out:
  Y_d = sum_p f_p(X_d) [n, D], f_p the part of `routed_swiglu` done by
  device p's experts (`local_experts_swiglu`). The classic ring
  reduce-scatter, with the tokens travelling beside their output block:

    step s = 0 .. fsdp - 2:  tokens <- ppermute(tokens, d -> d + 1)
                             (now X_{d-s-1}, with its routing)
                             acc    <- ppermute(acc + f_d(tokens), d -> d + 1)
    last:                    Y_d     = acc + f_d(X_d)

  Block b's accumulator starts on device b + 1 (step 0), gains f_{b+1},
  f_{b+2}, ..., one hop per step, and reaches its owner b after fsdp - 1
  hops, which adds its own experts' part last: all fsdp contributions,
  summed in float32. Each of the tokens and the float32 accumulator make
  fsdp - 1 hops of n rows per device, the volume of an all-gather of the
  tokens plus a reduce-scatter of the float32 outputs, but a device holds
  one peer's block of each at a time (plus the block arriving), never the
  group's [fsdp, n, D].

  Args:
    x: [n, D] this device's tokens; experts: int32 [n, k]; weights: [n, k].
    gate, up: [E_l, D, F] this device's experts; down: [E_l, F, D].
    fsdp: the ring's length (the 'fsdp' axis size).

  Returns:
    [n, D] float32 (at least): Y_d, summed over the ring (not yet over
    'tensor' when the experts' width is split).
  """
  first = jax.lax.axis_index("fsdp") * gate.shape[0]
  ring = [(i, (i + 1) % fsdp) for i in range(fsdp)]

  def hop(a):
    return jax.lax.ppermute(a, "fsdp", ring)

  def mine(tokens):
    return local_experts_swiglu(*tokens, gate, up, down, first)

  def step(carry, _):
    tokens, acc = carry
    tokens = jax.tree.map(hop, tokens)
    return (tokens, hop(acc + mine(tokens))), None

  acc = jnp.zeros(x.shape, jnp.promote_types(x.dtype, jnp.float32))
  own = (x, experts, weights)
  # The owner's block needs no last token hop: it adds its part outside.
  (_, acc), _ = jax.lax.scan(step, (own, acc), None, length=fsdp - 1)
  return acc + mine(own)


def sharded_routed_swiglu(x, experts, weights, gate, up, down) -> jax.Array:
  """`routed_swiglu` over a mesh: experts where they are stored.

  The tokens [N, D] stay split over the batch axes ('data', 'fsdp') and
  the experts over 'fsdp' (E / fsdp per device; their width F_e over
  'tensor'). With 'fsdp' > 1 the experts never move (expert parallelism,
  `jax.shard_map`): each 'fsdp' group is a ring (`ring_routed_swiglu`)
  around which every device's token block [N_local, D] travels with its
  routing and its float32 output block, one `ppermute` hop a step; each
  device runs only its own experts' rows (`local_experts_swiglu`) on the
  block it holds, and each output block ends on its owner summed over the
  group (then a psum over 'tensor'). A device holds one peer's block at a
  time: a static shape must hold every copy a peer could route here, so
  one peer's N_local * k rows, and never the group's tokens (the former
  all-gather of [fsdp, N_local, D] and its float32 partial outputs grew
  with the group: 8 GB a layer for Qwen3-235B on 64 devices). The exchange
  is N / data tokens of D and as many float32 outputs per layer, against
  E x D x F_e x 3 expert weights gathered otherwise (Qwen3-235B: 4.8 GB a
  layer in bfloat16). With 'fsdp' = 1 (or E not divisible by it) each
  device routes its own tokens through the whole layer's experts
  (gathered as FSDP gathers a dense layer's). Without a mesh, or when the
  batch axes do not divide N, it is `routed_swiglu` as it is.
  """
  mesh = sharding.current_mesh()
  if mesh is None or mesh.size == 1:
    return routed_swiglu(x, experts, weights, gate, up, down)
  rows = sharding.fit_spec(P(sharding.BATCH, None), x.shape, mesh)
  if rows[0] is None and any(mesh.shape[a] > 1 for a in sharding.BATCH):
    return routed_swiglu(x, experts, weights, gate, up, down)
  ep = expert_parallel(mesh, gate.shape[0])
  lead = "fsdp" if ep else None
  gate_spec = sharding.fit_spec(P(lead, None, "tensor"), gate.shape, mesh)
  down_spec = sharding.fit_spec(P(lead, "tensor", None), down.shape, mesh)
  split_f = gate_spec[2] is not None and down_spec[1] is not None
  if not split_f:
    gate_spec, down_spec = P(lead, None, None), P(lead, None, None)

  def gathered(x, experts, weights, gate, up, down):
    y = routed_swiglu(x, experts, weights, gate, up, down)
    return jax.lax.psum(y, "tensor") if split_f else y

  def parallel(x, experts, weights, gate, up, down):
    y = ring_routed_swiglu(
        x, experts, weights, gate, up, down, fsdp=mesh.shape["fsdp"]
    )
    # Each 'tensor' peer summed over its slice of F_e: still float32.
    if split_f:
      y = jax.lax.psum(y, "tensor")
    return y.astype(x.dtype)

  return jax.shard_map(
      parallel if ep else gathered,
      in_specs=(rows, rows, rows, gate_spec, gate_spec, down_spec),
      out_specs=rows,
      check_vma=False,
  )(x, experts, weights, gate, up, down)


class MoeMlp(nnx.Module):
  """Router + `num_experts` SwiGLU experts (transformers' Qwen3MoeSparseMoeBlock).

  Parameters (after any layer-stack axes): router/kernel [D, E],
  gate_proj and up_proj [E, D, F_e], down_proj [E, F_e, D].
  """

  def __init__(self, config: ModelConfig, *, stack=(), dtype, rngs: nnx.Rngs):
    d, f, e = config.embed_dim, config.moe_mlp_dim, config.num_experts
    self.router = layers.Projection(
        rngs, (*stack, d, e), None, dtype, use_bias=False
    )
    self.gate_proj = layers.normal_param(rngs, (*stack, e, d, f), dtype)
    self.up_proj = layers.normal_param(rngs, (*stack, e, d, f), dtype)
    self.down_proj = layers.normal_param(rngs, (*stack, e, f, d), dtype)
    self.top_k = config.experts_per_token
    self.norm_topk_prob = config.norm_topk_prob

  def __call__(
      self, x: jax.Array, where: jax.Array | None = None
  ) -> tuple[jax.Array, RouterStats]:
    """x [B, T, D] -> ([B, T, D], RouterStats over the tokens `where` [B, T])."""
    lead, d = x.shape[:-1], x.shape[-1]
    xf = x.reshape(-1, d)
    probs, weights, experts = route(
        self.router(xf), self.top_k, self.norm_topk_prob
    )
    y = sharded_routed_swiglu(
        xf,
        experts,
        weights,
        self.gate_proj[...],
        self.up_proj[...],
        self.down_proj[...],
    )
    flat_where = None if where is None else where.reshape(-1)
    return y.reshape(*lead, d), router_stats(probs, experts, flat_where)
