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
"""Causal self-attention over a whole (left-padded) sequence, by backend.

The one entry point of every full-sequence call: the student's training
forward and backward, the teacher's scoring forward, TOPD's segments, the
diagnostics and the sampler's prefill all reach `sequence_attention`.
Decoding (a few new tokens against a KV cache) stays in `attention.py`.

Backends (`IMPLEMENTATIONS`):

- `dense`: the reference: the [B, K, G, T, S] scores in one piece.
  Memory O(B N T S).
- `blockwise`: online softmax over key blocks (FlashAttention-2's
  recurrence, in JAX), the blocks above the causal diagonal skipped, and a
  `custom_vjp` whose backward recomputes each block's probabilities from
  the saved log-sum-exp: memory O(B N T block), nothing per block kept.
  Portable: runs on every platform (CPU runs it where the kernel cannot).
- `cpu_kernel`: the same computation as a C++ XLA:CPU kernel
  (`kernels.sequence_attention`, forward and FlashAttention-2 backward;
  float32 / bfloat16 operands, head dim a multiple of 8, one device).
  On the 2-core machines of BENCHMARKS.md it is 4-7x faster than `dense`
  at 544 positions, where XLA:CPU runs the dense scores as several passes
  over [B, N, T, S] at a few GB/s and faults in fresh pages for them.
- `cudnn`: cuDNN's fused flash attention through
  `jax.nn.dot_product_attention(implementation='cudnn')` (GPU only).
- `splash`: the Pallas splash-attention kernel of
  `jax.experimental.pallas.ops.tpu` (TPU only), the left padding as
  segment ids.
- `auto`: `splash` on TPU, `cudnn` on GPU; on CPU `cpu_kernel` at every
  length where it can run, else `dense` up to `DENSE_MAX_KEYS` keys and
  `blockwise` beyond.

Every backend computes, for query position t of row b,
  out[b, t] = sum_s softmax_s(q_t . k_s * scale  over allowed s) v_s,
  allowed(t, s) = key_mask[b, s] and s <= t.
A query with no allowed key (a left pad) has no defined output: `dense`
gives the mean of all values (its masked scores are the finite
`finfo.min`, so the softmax is uniform), the others give 0. Pads are never
read by a real token, so hidden states and gradients at real positions do
not depend on it.

Here we write by hand only the portable blockwise path and the CPU
kernel: the fused kernels of GPUs and TPUs come from cuDNN and from JAX's
own Pallas kernels.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from opd_jax import kernels
from opd_jax import sharding

IMPLEMENTATIONS = (
    "auto",
    "dense",
    "blockwise",
    "cpu_kernel",
    "cudnn",
    "splash",
)
# The platforms each explicit backend can run on.
PLATFORMS = {
    "dense": ("cpu", "gpu", "cuda", "rocm", "tpu"),
    "blockwise": ("cpu", "gpu", "cuda", "rocm", "tpu"),
    "cpu_kernel": ("cpu",),
    "cudnn": ("gpu", "cuda"),
    "splash": ("tpu",),
}
# On CPU without the kernel, `auto` keeps the dense scores up to this many
# keys: there the [T, S] scores of one layer are small (B = 8, N = 16: 128
# MiB at 512) and one fused softmax is faster than a loop over blocks.
DENSE_MAX_KEYS = 512
DEFAULT_BLOCK_SIZE = 512


def auto_implementation(
    platform: str, num_keys: int, kernel: bool = False
) -> str:
  """What `auto` runs on `platform` ('cpu', 'gpu', 'tpu') for S keys.

  `kernel`: the C++ CPU kernel can run these operands (`_kernel_fits`);
  on CPU it then runs at every length.
  """
  if platform == "tpu":
    return "splash"
  if platform in ("gpu", "cuda"):
    return "cudnn"
  if kernel:
    return "cpu_kernel"
  return "dense" if num_keys <= DENSE_MAX_KEYS else "blockwise"


def _kernel_fits(q: jax.Array, k: jax.Array) -> bool:
  """The C++ kernel takes these operands, on one device: under a mesh of
  several, XLA's partitioner would gather the whole batch onto each."""
  return sharding.single_device() and kernels.sequence_attention_supported(q, k)


def check_implementation(name: str, platform: str | None = None) -> None:
  """Raises ValueError (one line) if `name` cannot run on `platform`.

  Args:
    name: one of `IMPLEMENTATIONS`.
    platform: 'cpu', 'gpu' or 'tpu'; default `jax.default_backend()`.
  """
  platform = platform or jax.default_backend()
  if name not in IMPLEMENTATIONS:
    raise ValueError(
        f"attention: expected one of {IMPLEMENTATIONS}, got {name!r}"
    )
  if name != "auto" and platform not in PLATFORMS[name]:
    raise ValueError(
        f"attention: {name!r} cannot run on {platform} (it needs"
        f" {'/'.join(PLATFORMS[name][:1])}); 'auto' would choose"
        f" {auto_implementation(platform, DENSE_MAX_KEYS + 1)!r} for long"
        f" sequences here ({auto_implementation(platform, 1)!r} up to"
        f" {DENSE_MAX_KEYS} keys)"
        + (
            ", or 'cpu_kernel' wherever the C++ kernel can run"
            if platform == "cpu"
            else ""
        )
    )


def sequence_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    key_mask: jax.Array,
    *,
    scale: float,
    implementation: str = "auto",
    block_size: int = DEFAULT_BLOCK_SIZE,
    platform: str | None = None,
) -> jax.Array:
  """Causal grouped-query attention of a sequence to itself.

  Args:
    q: queries [B, T, K, G, H] (G query heads per kv head).
    k, v: keys and values [B, T, K, H] of the same T positions.
    key_mask: [B, T] bool, False on padding.
    scale: the logits' scale (1 / sqrt(H)).
    implementation: one of `IMPLEMENTATIONS`.
    block_size: the blockwise path's largest query and key block (T is
      split into that many even blocks; ignored by the others).
    platform: what `auto` decides for; default `jax.default_backend()`.

  Returns:
    out [B, T, K, G, H] in v's dtype.
  """
  check_implementation(implementation, platform)
  if implementation == "auto":
    platform = platform or jax.default_backend()
    implementation = auto_implementation(
        platform, k.shape[1], kernel=platform == "cpu" and _kernel_fits(q, k)
    )
  if implementation == "cpu_kernel":
    return kernels.sequence_attention(q, k, v, key_mask, scale=scale)
  if implementation == "dense":
    return dense_attention(q, k, v, key_mask, scale=scale)
  if implementation == "blockwise":
    return blockwise_attention(
        q, k, v, key_mask, scale=scale, block_size=block_size
    )
  if implementation == "cudnn":
    return cudnn_attention(q, k, v, key_mask, scale=scale)
  return splash_attention(q, k, v, key_mask, scale=scale)


def _acc_dtype(x: jax.Array):
  """Scores, softmax and sums in float32, or float64 for float64 inputs."""
  return jnp.promote_types(x.dtype, jnp.float32)


def _allowed(key_mask: jax.Array, q_pos: jax.Array, k_pos: jax.Array):
  """[B, Tq, Sk] bool: key_mask[b, s] and k_pos[s] <= q_pos[t]."""
  return key_mask[:, None, :] & (k_pos[None, None, :] <= q_pos[None, :, None])


def dense_attention(q, k, v, key_mask, *, scale):
  """The reference: all [B, K, G, T, S] scores at once (see module doc)."""
  t = q.shape[1]
  acc = _acc_dtype(q)
  logits = (
      jnp.einsum("BTKGH,BSKH->BKGTS", q, k, preferred_element_type=acc) * scale
  )
  pos = jnp.arange(t)
  allowed = _allowed(key_mask, pos, pos)
  # A finite floor, not -inf: fully masked rows (left pads) stay finite.
  logits = jnp.where(allowed[:, None, None], logits, jnp.finfo(acc).min)
  probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  return jnp.einsum("BKGTS,BSKH->BTKGH", probs, v)


# -- blockwise (portable flash attention) ------------------------------------
#
# Layout inside: rows of one kv head, [B, K, T, G, H] for queries (a query
# block is a slice along T, flattened to [B, K, bq * G, H] rows), keys and
# values [B, K, S, H]. A query block visits the key blocks 0..i only (the
# causal skip): a `fori_loop` whose trip count is the block index, which is
# fine because the backward pass is written out (custom_vjp), not derived.


def _pad_to(x: jax.Array, axis: int, multiple: int) -> jax.Array:
  extra = -x.shape[axis] % multiple
  if not extra:
    return x
  return jnp.pad(x, [(0, extra if a == axis else 0) for a in range(x.ndim)])


def blockwise_attention(q, k, v, key_mask, *, scale, block_size):
  """Flash attention in JAX: O(B N T block) memory, forward and backward.

  Args and returns as `sequence_attention` (the blockwise backend).
  """
  b, t, kh, g, h = q.shape
  # As many blocks as block_size asks for, evenly filled: 544 positions in
  # blocks of up to 512 run as two of 272, not two of 512 (one mostly pad).
  blocks = -(-t // block_size)
  block = -(-t // blocks)
  qb = _pad_to(q.transpose(0, 2, 1, 3, 4), 2, block)  # [B, K, T', G, H]
  kb = _pad_to(k.transpose(0, 2, 1, 3), 2, block)  # [B, K, T', H]
  vb = _pad_to(v.transpose(0, 2, 1, 3), 2, block)
  mask = _pad_to(key_mask.astype(bool), 1, block)  # pads past T: False
  out = _flash(qb, kb, vb, mask, scale, block)  # [B, K, T', G, H]
  return out[:, :, :t].transpose(0, 2, 1, 3, 4).astype(v.dtype)


def _block_scores(q_rows, k_blk, mask, i, j, block, g, scale):
  """Scores [B, K, bq*G, bk] (float32) of query block i against key block
  j, and where they are allowed (same shape, bool): causal by position and
  by the whole key mask [B, T'], whose block j is sliced here."""
  acc = _acc_dtype(q_rows)
  s = (
      jnp.einsum("BKMH,BKSH->BKMS", q_rows, k_blk, preferred_element_type=acc)
      * scale
  )
  mask_blk = jax.lax.dynamic_slice_in_dim(mask, j * block, block, axis=1)
  q_pos = i * block + jnp.arange(block * g) // g
  k_pos = j * block + jnp.arange(block)
  allowed = mask_blk[:, None, None, :] & (
      k_pos[None, None, None, :] <= q_pos[None, None, :, None]
  )
  return s, allowed


def _rows(x, i, block):
  """Query block i of x [B, K, T', G, H] as rows [B, K, bq*G, H]."""
  b, kh, _, g, h = x.shape
  blk = jax.lax.dynamic_slice_in_dim(x, i * block, block, axis=2)
  return blk.reshape(b, kh, block * g, h)


def _flash_forward(q, k, v, mask, scale, block):
  """Output [B, K, T', G, H] float32 and log-sum-exp [B, K, T', G]."""
  b, kh, tp, g, h = q.shape
  n = tp // block
  m_rows = block * g
  acc = _acc_dtype(q)

  def query_block(i, carry):
    out, lse = carry
    q_rows = _rows(q, i, block)

    def key_block(j, running):
      m, l, o = running
      k_blk = jax.lax.dynamic_slice_in_dim(k, j * block, block, axis=2)
      v_blk = jax.lax.dynamic_slice_in_dim(v, j * block, block, axis=2)
      s, allowed = _block_scores(q_rows, k_blk, mask, i, j, block, g, scale)
      s = jnp.where(allowed, s, -jnp.inf)
      m_new = jnp.maximum(m, s.max(axis=-1))
      # A row with nothing allowed yet keeps m = -inf: shift by 0 instead.
      shift = jnp.where(jnp.isneginf(m_new), 0.0, m_new)
      p = jnp.exp(s - shift[..., None])
      alpha = jnp.exp(m - shift)
      l = alpha * l + p.sum(axis=-1)
      o = alpha[..., None] * o + jnp.einsum(
          "BKMS,BKSH->BKMH",
          p.astype(v.dtype),
          v_blk,
          preferred_element_type=acc,
      )
      return m_new, l, o

    init = (
        jnp.full((b, kh, m_rows), -jnp.inf, acc),
        jnp.zeros((b, kh, m_rows), acc),
        jnp.zeros((b, kh, m_rows, h), acc),
    )
    m, l, o = jax.lax.fori_loop(0, i + 1, key_block, init)
    empty = l == 0.0
    o = jnp.where(
        empty[..., None], 0.0, o / jnp.where(empty, 1.0, l)[..., None]
    )
    # +inf for rows with no allowed key: exp(s - lse) is then 0 everywhere.
    row_lse = jnp.where(empty, jnp.inf, m + jnp.log(jnp.where(empty, 1.0, l)))
    out = jax.lax.dynamic_update_slice_in_dim(
        out, o.reshape(b, kh, block, g, h), i * block, axis=2
    )
    lse = jax.lax.dynamic_update_slice_in_dim(
        lse, row_lse.reshape(b, kh, block, g), i * block, axis=2
    )
    return out, lse

  init = (
      jnp.zeros((b, kh, tp, g, h), acc),
      jnp.zeros((b, kh, tp, g), acc),
  )
  return jax.lax.fori_loop(0, n, query_block, init)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _flash(q, k, v, mask, scale, block):
  return _flash_forward(q, k, v, mask, scale, block)[0]


def _flash_fwd(q, k, v, mask, scale, block):
  out, lse = _flash_forward(q, k, v, mask, scale, block)
  return out, (q, k, v, mask, out, lse)


def _flash_bwd(scale, block, residuals, d_out):
  """FlashAttention-2's backward: per (query block i, key block j <= i),
  P = exp(S - lse), dV_j += P^T dO, dP = dO V_j^T, dS = P (dP - D) with
  D = rowsum(dO * O), dQ_i += dS K_j scale, dK_j += dS^T Q_i scale."""
  q, k, v, mask, out, lse = residuals
  b, kh, tp, g, h = q.shape
  n = tp // block
  acc = _acc_dtype(q)
  d_out = d_out.astype(acc)
  delta = jnp.sum(d_out * out, axis=-1)  # [B, K, T', G]

  def query_block(i, carry):
    dq, dk, dv = carry
    q_rows = _rows(q, i, block)
    do_rows = _rows(d_out, i, block)
    lse_rows = jax.lax.dynamic_slice_in_dim(lse, i * block, block, axis=2)
    lse_rows = lse_rows.reshape(b, kh, block * g)
    delta_rows = jax.lax.dynamic_slice_in_dim(delta, i * block, block, axis=2)
    delta_rows = delta_rows.reshape(b, kh, block * g)

    def key_block(j, grads):
      dq_rows, dk, dv = grads
      k_blk = jax.lax.dynamic_slice_in_dim(k, j * block, block, axis=2)
      v_blk = jax.lax.dynamic_slice_in_dim(v, j * block, block, axis=2)
      s, allowed = _block_scores(q_rows, k_blk, mask, i, j, block, g, scale)
      p = jnp.where(allowed, jnp.exp(s - lse_rows[..., None]), 0.0)
      dv_blk = jnp.einsum(
          "BKMS,BKMH->BKSH",
          p.astype(v.dtype),
          do_rows.astype(v.dtype),
          preferred_element_type=acc,
      )
      dp = jnp.einsum(
          "BKMH,BKSH->BKMS", do_rows, v_blk, preferred_element_type=acc
      )
      ds = p * (dp - delta_rows[..., None]) * scale
      dq_rows = dq_rows + jnp.einsum(
          "BKMS,BKSH->BKMH", ds, k_blk, preferred_element_type=acc
      )
      dk_blk = jnp.einsum(
          "BKMS,BKMH->BKSH", ds, q_rows, preferred_element_type=acc
      )
      add = lambda total, blk: jax.lax.dynamic_update_slice_in_dim(
          total,
          jax.lax.dynamic_slice_in_dim(total, j * block, block, axis=2) + blk,
          j * block,
          axis=2,
      )
      return dq_rows, add(dk, dk_blk), add(dv, dv_blk)

    dq_rows = jnp.zeros((b, kh, block * g, h), acc)
    dq_rows, dk, dv = jax.lax.fori_loop(0, i + 1, key_block, (dq_rows, dk, dv))
    dq = jax.lax.dynamic_update_slice_in_dim(
        dq, dq_rows.reshape(b, kh, block, g, h), i * block, axis=2
    )
    return dq, dk, dv

  init = (
      jnp.zeros(q.shape, acc),
      jnp.zeros(k.shape, acc),
      jnp.zeros(v.shape, acc),
  )
  dq, dk, dv = jax.lax.fori_loop(0, n, query_block, init)
  return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None


_flash.defvjp(_flash_fwd, _flash_bwd)


# -- accelerator kernels -----------------------------------------------------


def cudnn_attention(q, k, v, key_mask, *, scale, implementation="cudnn"):
  """cuDNN flash attention (GPU) through `jax.nn.dot_product_attention`.

  cuDNN takes the padding as per-row lengths only (valid keys `[0, len)`),
  never a [B, T, S] tensor unless one passes a mask (which it turns into a
  [B, 1, T, S] bias, read by the kernel and kept for its backward). So the
  rows are reordered instead: a stable sort puts each row's real tokens
  first, in order, and its pads after them; cuDNN then runs its causal
  kernel (`is_causal`, top-left diagonal) with `key_value_seq_lengths` = the
  real count, and the output is put back in place. Attention depends on
  positions only through the mask (RoPE is already in q and k), and the
  sort keeps the real tokens' order, so every real query attends to exactly
  the real keys at or before it, as `dense` does, for any key_mask (left
  pads, right pads, holes). A pad query (sorted after the real tokens)
  attends to all real keys of its row: for the pads after a response that
  is what `dense` gives, for left pads it is a finite value where `dense`
  has none. Cost: one [B, T] sort and four gathers of [B, T, N, H], no
  [T, S] tensor.

  Dtypes: cuDNN's flash attention takes fp16 / bf16 only. float32 inputs
  are cast to bfloat16 for the kernel (its softmax statistics stay float32)
  and the output back to v's dtype: a float32 model on GPU attends in
  bfloat16 (to ~3 significant digits); use 'blockwise' or 'dense' to keep
  float32 there.

  GQA: queries [B, T, N, H] with N = K * G (query head n reads kv head
  n // G, the layout `q.reshape(b, t, K * G, h)` gives), keys and values
  [B, S, K, H]: cuDNN groups the heads itself. Head dim: a multiple of 8,
  at most 128 (256 on Hopper and later); `jax.nn.dot_product_attention`
  raises NotImplementedError otherwise. Under a mesh, cuDNN's custom
  partitioning splits batch and heads (not the sequence or the head dim),
  which is how `attention.py` shards the activations.

  Args and returns as `sequence_attention`, plus:
    implementation: 'cudnn', or 'xla' to run the same reordered call
      through XLA's reference, in q's own dtype (how the tests check the
      reordering on CPU).
  """
  b, t, kh, g, h = q.shape
  dt = q.dtype
  if implementation == "cudnn" and dt not in (jnp.bfloat16, jnp.float16):
    dt = jnp.bfloat16
  mask = key_mask.astype(bool)
  n_real = mask.sum(axis=1, dtype=jnp.int32)
  # src[b, i]: the position sorted into slot i (real tokens first, in order);
  # slot[b, t]: where position t went (its inverse).
  src = jnp.argsort(~mask, axis=1, stable=True).astype(jnp.int32)
  slot = jnp.where(
      mask,
      jnp.cumsum(mask, axis=1, dtype=jnp.int32) - 1,
      n_real[:, None] + jnp.cumsum(~mask, axis=1, dtype=jnp.int32) - 1,
  )
  take = lambda x, idx: jnp.take_along_axis(x, idx[:, :, None, None], axis=1)
  out = jax.nn.dot_product_attention(
      take(q.reshape(b, t, kh * g, h).astype(dt), src),
      take(k.astype(dt), src),
      take(v.astype(dt), src),
      scale=scale,
      is_causal=True,
      # At least one key: a row without real tokens attends to a pad
      # (finite), never to nothing.
      key_value_seq_lengths=jnp.maximum(n_real, 1),
      implementation=implementation,
  )
  return take(out, slot).reshape(b, t, kh, g, h).astype(v.dtype)


def splash_attention(q, k, v, key_mask, *, scale, interpret=False):
  """The Pallas splash-attention kernel (TPU), the padding as segment ids.

  One `make_splash_mha` kernel over all N = K * G query heads: the kernel
  does grouped-query attention itself (query head n reads kv head n // G,
  the order `q`'s [K, G] axes flatten to). It is unbatched (q [N, T, H],
  k and v [K, T, H]), so rows go through `jax.vmap`.

  The mask: the kernel's own `CausalMask` and-ed with segment ids. A key's
  id is 1 on a real token and 0 on a pad; a query's id is 1 from its row's
  first real token on and 0 before it. A query of id 1 thus attends to the
  real keys at or before it, exactly `dense`'s rule, for any key_mask; a
  left-pad query (id 0) attends to the pads before it (itself at least, so
  no softmax row is empty, which the kernel requires).

  Shapes: the kernel's blocks are multiples of 128 along the sequence; T is
  padded (the padded slots are pads) to a multiple of the block
  (`_splash_block`: 512 where that pads at most T / 8). The head dim is the
  blocks' full minor dimension (any size; 128 fills the lanes). Dtypes:
  float32 or bfloat16, as given; q is scaled before the kernel (which has
  no scale).

  Under a mesh (`jax.set_mesh`) the call runs in a `jax.shard_map`: rows
  split over the batch axes ('data', 'fsdp') and kv heads over 'tensor',
  as `attention.py` shards the activations (an axis that does not divide
  its dimension replicates it); the sequence is never split. Without one it
  is a single-device call.

  Args and returns as `sequence_attention`, plus:
    interpret: run the kernel in Pallas' interpreter (any platform; slow):
      how the tests check it on CPU.
  """
  splash, _ = _splash_modules()
  b, t, kh, g, h = q.shape
  block = _splash_block(t)
  mask = _pad_to(key_mask.astype(bool), 1, block)
  tp = mask.shape[1]
  kv_ids = mask.astype(jnp.int32)
  q_ids = (jnp.cumsum(kv_ids, axis=1) > 0).astype(jnp.int32)
  qs = _pad_to((q * scale).astype(q.dtype), 1, block)
  qs = qs.reshape(b, tp, kh * g, h).transpose(0, 2, 1, 3)  # [B, N, T', H]
  ks = _pad_to(k, 1, block).transpose(0, 2, 1, 3)  # [B, K, T', H]
  vs = _pad_to(v.astype(k.dtype), 1, block).transpose(0, 2, 1, 3)

  def rows(q_, k_, v_, q_ids_, kv_ids_):
    # Built for the heads this call sees (all of them, or one shard's).
    kernel = _splash_kernel(q_.shape[1], tp, block, interpret)
    one = lambda a, b_, c, d, e: kernel(
        a, b_, c, segment_ids=splash.SegmentIds(q=d, kv=e)
    )
    return jax.vmap(one)(q_, k_, v_, q_ids_, kv_ids_)

  mesh = sharding.current_mesh()
  if mesh is not None and mesh.size > 1:
    batch, heads = sharding.fit_spec(P(sharding.BATCH, "tensor"), (b, kh), mesh)
    qkv, ids = P(batch, heads, None, None), P(batch, None)
    rows = jax.shard_map(
        rows,
        mesh=mesh,
        in_specs=(qkv, qkv, qkv, ids, ids),
        out_specs=qkv,
        check_vma=False,
    )
  out = rows(qs, ks, vs, q_ids, kv_ids)  # [B, N, T', H]
  out = out.transpose(0, 2, 1, 3)[:, :t].reshape(b, t, kh, g, h)
  return out.astype(v.dtype)


def _splash_modules():
  """The splash kernel and mask modules (imported on first use)."""
  from jax.experimental.pallas.ops.tpu.splash_attention import (  # pylint: disable=g-import-not-at-top
      splash_attention_kernel,
      splash_attention_mask,
  )

  return splash_attention_kernel, splash_attention_mask


def _splash_block(length: int) -> int:
  """The splash block for `length` positions: the largest of 512 / 256 /
  128 whose padding adds at most an eighth (bigger blocks run nearer the
  MXU's rate; 128 is the kernel's least)."""
  for block in (512, 256):
    if -length % block <= length // 8:
      return block
  return 128


@functools.lru_cache(maxsize=32)
def _splash_kernel(num_heads: int, length: int, block: int, interpret: bool):
  """A causal splash MHA kernel for `num_heads` query heads over `length`
  positions (a multiple of `block`). Cached: building one walks its mask's
  blocks on the host.
  """
  splash, masks = _splash_modules()
  sizes = splash.BlockSizes(
      block_q=block,
      block_kv=block,
      block_kv_compute=block,
      block_q_dkv=block,
      block_kv_dkv=block,
      block_kv_dkv_compute=block,
      block_q_dq=block,
      block_kv_dq=block,
  )
  causal = masks.CausalMask((length, length))
  # Its mask tables as concrete arrays, also when first built inside a
  # trace (cached, they must not be that trace's values).
  with jax.ensure_compile_time_eval():
    return splash.make_splash_mha(
        masks.MultiHeadMask([causal] * num_heads),
        block_sizes=sizes,
        head_shards=1,
        q_seq_shards=1,
        interpret=interpret,
    )
