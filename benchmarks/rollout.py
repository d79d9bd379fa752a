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
"""Rollouts: `rollouts.sample` vs HF `generate`, the decode floor, per-token cost, the draw."""

from __future__ import annotations

import json
import os
import tempfile

import jax
import jax.numpy as jnp

from benchmarks import common
from benchmarks import protocol


def _rows(args):
  return [tuple(int(x) for x in r.split("x")) for r in args.rows]


def _ours(args, directory, batch, new_tokens, dtype):
  """One `rollouts.sample` call per iteration; returns its seconds."""
  from opd_jax.models import load_hf  # pylint: disable=g-import-not-at-top
  from opd_jax.rollouts import Sampling, sample  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top

  model = load_hf(os.path.join(directory, "student"), dtype=jnp.dtype(dtype))
  prompt, mask = (
      jnp.asarray(x) for x in protocol.load_prompts(directory, batch)
  )
  sampling = Sampling(temperature=args.temperature)

  def run(i: int) -> float:
    start = time.perf_counter()
    out = sample(
        model,
        prompt,
        mask,
        jax.random.key(i),
        max_new_tokens=new_tokens,
        sampling=sampling,
    )
    jax.block_until_ready(out.response)
    return time.perf_counter() - start

  return run


def decode_floor(cfg, batch, prompt_len, new_tokens, dtype, rates) -> float:
  """Seconds of a rollout on this machine's roofline (prefill + decode).

  Each decode step reads every weight but the embedding table (B rows of it
  are gathered) and the filled part of the KV cache, and does 2 FLOPs per
  weight per row plus 4 H FLOPs per cached slot and query head per layer;
  it takes max(bytes / bandwidth, FLOPs / matmul rate). The prefill is
  compute-bound. Bandwidth and rate were measured in this run.
  """
  nbytes = jnp.dtype(dtype).itemsize
  weights = cfg.num_params()
  if not cfg.tie_embeddings:
    weights -= cfg.vocab_size * cfg.embed_dim
  rate = rates[f"matmul_{dtype}_gflop_s"] * 1e9
  bw = rates["bandwidth_gb_s"] * 1e9
  kv_slot = 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * nbytes
  attn_slot = 4 * cfg.num_layers * cfg.num_heads * cfg.head_dim
  total = 2 * weights * batch * prompt_len / rate
  for i in range(new_tokens - 1):
    slots = prompt_len + i + 1
    step_bytes = weights * nbytes + batch * kv_slot * slots
    step_flops = batch * (2 * weights + attn_slot * slots)
    total += max(step_bytes / bw, step_flops / rate)
  return total


def per_token_cost(args, directory, batch, fills, dtype) -> dict:
  """Seconds of one decode step (trunk, head, draw) at each cache fill.

  The cache has the capacity the sampler gives it at that fill (its
  doubling schedule for a 1024-token rollout), so this is the step the
  sampler runs there.
  """
  from flax import nnx  # pylint: disable=g-import-not-at-top

  from opd_jax.models import load_hf  # pylint: disable=g-import-not-at-top
  from opd_jax.models import split_layers  # pylint: disable=g-import-not-at-top
  from opd_jax.rollouts import Sampling  # pylint: disable=g-import-not-at-top
  from opd_jax.rollouts import sampler  # pylint: disable=g-import-not-at-top

  model = load_hf(os.path.join(directory, "student"), dtype=jnp.dtype(dtype))
  model = split_layers(model)
  graphdef, state = nnx.split(model)
  sampling = Sampling(temperature=args.temperature)
  schedule = sampler.cache_schedule(max(fills))

  @jax.jit
  def prefill(state, tokens, cache):
    return nnx.merge(graphdef, state)(
        tokens, cache=cache, return_logits=False
    ).cache

  def step(state, token, cache, key):
    out = nnx.merge(graphdef, state)(token, cache=cache)
    lp = sampling.log_probs(out.logits[:, 0])
    return sampling.get_next_tokens(lp, key)[:, None], out.cache

  step = jax.jit(step, donate_argnums=2)
  result = {}
  for fill in fills:
    bound = next(c for c in schedule if c >= fill - args.prompt_len)
    tokens = jax.random.randint(
        jax.random.key(fill), (batch, fill), 1, model.config.vocab_size
    )
    cache = prefill(
        state, tokens, model.init_cache(batch, args.prompt_len + bound)
    )
    holder = {"cache": cache, "token": tokens[:, -1:]}

    def one():
      # Rewind so that every timed step writes slot `fill` again.
      c = holder["cache"].replace(end=jnp.int32(fill))
      holder["token"], holder["cache"] = step(
          state, holder["token"], c, jax.random.key(0)
      )
      return holder["token"]

    result[fill] = common.median_seconds(one, n=15)
  return result


def draw_vs_head(args, directory, batches) -> list[dict]:
  """Seconds of the decode head and of drawing one token, per batch size.

  The head is the one the decode loop runs: a split model's `apply_head`
  on B rows (`decode_head` over the [V, D] rows).
  """
  from opd_jax.models import load_hf  # pylint: disable=g-import-not-at-top
  from opd_jax.models import split_layers  # pylint: disable=g-import-not-at-top
  from opd_jax.rollouts import Sampling  # pylint: disable=g-import-not-at-top

  model = split_layers(load_hf(os.path.join(directory, "student")))
  sampling = Sampling(temperature=args.temperature)
  head = jax.jit(model.apply_head)
  lsm_draw = jax.jit(
      lambda z, k: sampling.get_next_tokens(sampling.log_probs(z), k)
  )
  draw = jax.jit(sampling.get_next_tokens)

  @jax.jit
  def cumsum_draw(lp, key):  # the previous sampler's draw, for reference
    cdf = jnp.cumsum(jnp.exp(lp), axis=-1)
    u = jax.random.uniform(key, lp.shape[:-1] + (1,)) * cdf[..., -1:]
    return jnp.sum(cdf < u, axis=-1, dtype=jnp.int32)

  rows = []
  key = jax.random.key(0)
  for b in batches:
    h = jax.random.normal(key, (b, model.config.embed_dim))
    z = head(h)
    lp = jax.nn.log_softmax(z)
    rows.append({
        "batch": b,
        "head_ms": 1e3 * common.median_seconds(lambda: head(h), n=15),
        "log_softmax_draw_ms": (
            1e3 * common.median_seconds(lambda: lsm_draw(z, key), n=15)
        ),
        "draw_ms": 1e3 * common.median_seconds(lambda: draw(lp, key), n=15),
        "cumsum_draw_ms": (
            1e3 * common.median_seconds(lambda: cumsum_draw(lp, key), n=15)
        ),
    })
  return rows


def run(args) -> None:
  """Our sampler vs HF `generate` per row and dtype, with floors."""
  scfg, _ = common.bench_configs(args)
  rates = common.machine_rates()
  common.print_rates(rates)
  print(
      f"rollout: student {scfg.num_params() / 1e6:.1f}M params, V="
      f"{args.vocab}, prompt {args.prompt_len} (left-padded), temperature"
      f" {args.temperature}, warmup {args.warmup}, median of {args.steps}"
  )
  report = {
      "benchmark": "rollout",
      "rates": rates,
      "cpu": protocol.cpu_model(),
      "rows": [],
  }
  with tempfile.TemporaryDirectory() as directory:
    common.write_checkpoints(args, directory)
    for b, _ in _rows(args):
      protocol.write_prompts(
          directory, b, args.prompt_len, args.vocab, args.seed
      )
    print(
        "| dtype | B x new | opd_jax tok/s | HF tok/s | ratio | floor tok/s"
        " | ours / floor |"
    )
    print("|---|---|---|---|---|---|---|")
    for dtype in args.dtypes:
      for b, t in _rows(args):
        row = common.side_by_side(
            args,
            _ours(args, directory, b, t, dtype),
            [
                "rollout",
                "--dir",
                directory,
                "--batch",
                str(b),
                "--dtype",
                dtype,
                "--new-tokens",
                str(t),
                "--temperature",
                str(args.temperature),
                "--threads",
                str(args.peer_threads),
            ],
            b * t,
        )
        floor = decode_floor(scfg, b, args.prompt_len, t, dtype, rates)
        row.update(
            dtype=dtype,
            batch=b,
            new_tokens=t,
            floor_tokens_per_s=round(b * t / floor, 1),
            fraction_of_floor=round(floor / row["ours"]["seconds"], 3),
        )
        report["rows"].append(row)
        peer = row.get("peer", {}).get("tokens_per_s", "-")
        print(
            f"| {dtype} | {b} x {t} | {row['ours']['tokens_per_s']:.0f} |"
            f" {peer} | {row.get('ratio', '-')} |"
            f" {row['floor_tokens_per_s']:.0f} |"
            f" {row['fraction_of_floor']:.2f} |",
            flush=True,
        )
    print(f"({protocol.machine_line()})")
    b = args.cost_batch
    cost = per_token_cost(args, directory, b, args.cost_fills, "float32")
    lo, hi = min(cost), max(cost)
    print(
        f"decode step at B={b} (trunk + head + draw, float32): "
        + ", ".join(f"{f} cached: {1e3 * s:.2f} ms" for f, s in cost.items())
        + f"; growth {lo} -> {hi}: {cost[hi] / cost[lo]:.2f}x"
    )
    report["per_token_cost_s"] = cost
    draws = draw_vs_head(args, directory, sorted({r[0] for r in _rows(args)}))
    print(
        "| B | decode head ms | log_softmax + draw ms | draw ms |"
        " old cumsum draw ms |"
    )
    print("|---|---|---|---|---|")
    for r in draws:
      print(
          f"| {r['batch']} | {r['head_ms']:.2f} |"
          f" {r['log_softmax_draw_ms']:.2f} | {r['draw_ms']:.2f} |"
          f" {r['cumsum_draw_ms']:.2f} |"
      )
    report["draw_vs_head"] = draws
  print(f"({protocol.machine_line()})")
  print(
      "tokens/s = B x new tokens / seconds of one whole rollout (prefill"
      " included); ratio = opd_jax / HF, same dtype both sides; floor ="
      " the roofline of the same rollout from this run's measured"
      " bandwidth and matmul rate (benchmarks/rollout.py::decode_floor)."
  )
  print(json.dumps(report))


def add_parser(subparsers) -> None:
  p = subparsers.add_parser("rollout", help=run.__doc__)
  common.add_model_flags(p)
  p.add_argument(
      "--rows",
      nargs="+",
      default=["4x128", "8x1024", "32x512", "64x128"],
      help="BxT: batch and new tokens, one row each",
  )
  p.add_argument(
      "--dtypes",
      nargs="+",
      default=["float32", "bfloat16"],
      help="one set of rows per dtype, the same on both sides",
  )
  p.add_argument("--cost-batch", type=int, default=8)
  p.add_argument(
      "--cost-fills",
      type=int,
      nargs="+",
      default=[128, 1024],
      help="cache fills at which one decode step is timed",
  )
  p.add_argument(
      "--quick",
      action="store_true",
      help="tiny shapes, our side only (a smoke test)",
  )
  p.set_defaults(func=run, quick_rows=["2x8"], quick_fills=[9, 12])
