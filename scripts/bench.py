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
r"""Benchmarks of opd_jax; one subcommand per benchmark.

  python scripts/bench.py memory [--batch=8 --seq=2048 ...]

``memory`` compiles (without running) the loss + gradient part of the student
update for naive full logits, chunked full tokens and selective rho variants,
and reports XLA's compiled memory figures. Other subcommands (``step``,
``rollout``) register themselves in ``SUBCOMMANDS``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from typing import Callable

import jax
import jax.numpy as jnp

from opd_jax import losses
from opd_jax.selection import selective
from opd_jax.selection import stats

GIB = 1024**3


def _naive_loss(hs, ws, ht, wt, mask):
  """Materialises [B, T, V] student and teacher logits, reverse KL."""
  zs = stats.head_logits(hs, ws)  # [B, T, V]
  zt = stats.head_logits(
      jax.lax.stop_gradient(ht), jax.lax.stop_gradient(wt)
  )  # [B, T, V]
  values = losses.reverse_kl(zs, zt, where=mask)
  return losses.token_mean(values, mask).value()


def _chunked_loss(hs, ws, ht, wt, mask, *, chunk_size):
  return selective.dense_divergence_loss(
      hs, ws, ht, wt, mask, chunk_size=chunk_size
  ).value()


def _selective_step(hs, ws, ht, wt, ids, mask, *, rho, stats_chunk,
                    loss_chunk):
  """Stats pass, top-rho by student entropy per row, gather, loss, grad."""
  k = math.ceil(rho * hs.shape[1])
  st = stats.token_stats(hs, ws, ht, wt, ids, where=mask,
                         chunk_size=stats_chunk)
  score = jnp.where(mask, st.student_entropy, -jnp.inf)
  _, index = jax.lax.top_k(score, k)
  index_weights = jnp.take_along_axis(mask.astype(jnp.float32), index, 1)

  def loss_fn(hs, ws):
    return selective.selective_divergence_loss(
        hs, ws, ht, wt, index, index_weights, chunk_size=loss_chunk
    ).value()

  return jax.value_and_grad(loss_fn, argnums=(0, 1))(hs, ws)


def _grad_step(loss_fn: Callable) -> Callable:
  def step(hs, ws, ht, wt, ids, mask):
    del ids  # the full-token losses need no targets
    return jax.value_and_grad(
        lambda hs, ws: loss_fn(hs, ws, ht, wt, mask), argnums=(0, 1)
    )(hs, ws)

  return step


def _memory_row(name: str, step: Callable, args) -> dict:
  start = time.perf_counter()
  compiled = jax.jit(step).lower(*args).compile()
  seconds = time.perf_counter() - start
  mem = compiled.memory_analysis()
  total = (
      mem.temp_size_in_bytes
      + mem.argument_size_in_bytes
      + mem.output_size_in_bytes
      - mem.alias_size_in_bytes
  )
  return dict(
      variant=name,
      temp_bytes=int(mem.temp_size_in_bytes),
      total_bytes=int(total),
      compile_s=round(seconds, 2),
  )


def memory(args: argparse.Namespace) -> None:
  """Compiles each variant on abstract inputs and prints its memory."""
  b, t, v = args.batch, args.seq, args.vocab
  dt = jnp.dtype(args.dtype)
  sds = jax.ShapeDtypeStruct
  inputs = (
      sds((b, t, args.student_dim), dt),  # student hidden (differentiated)
      sds((args.student_dim, v), dt),  # student head (differentiated)
      sds((b, t, args.teacher_dim), dt),  # teacher hidden
      sds((args.teacher_dim, v), dt),  # teacher head
      sds((b, t), jnp.int32),  # sampled ids
      sds((b, t), jnp.bool_),  # response mask
  )
  variants = [
      ("naive full logits", _grad_step(_naive_loss)),
      (
          f"chunked full tokens (C={args.loss_chunk})",
          _grad_step(
              lambda *a: _chunked_loss(*a, chunk_size=args.loss_chunk)
          ),
      ),
  ]
  for rho in args.rhos:
    for chunk in (args.selective_chunk, None):
      suffix = f"C={chunk}" if chunk else "unchunked [B,K,V]"
      variants.append((
          f"selective rho={rho:g} ({suffix})",
          lambda *a, rho=rho, chunk=chunk: _selective_step(
              *a, rho=rho, stats_chunk=args.stats_chunk, loss_chunk=chunk
          ),
      ))
  print(
      f"backend={jax.default_backend()} B={b} T={t} V={v}"
      f" Ds={args.student_dim} Dt={args.teacher_dim} dtype={dt.name}"
      f" stats_chunk={args.stats_chunk}"
      f" selective_chunk={args.selective_chunk}"
  )
  rows = [_memory_row(name, step, inputs) for name, step in variants]
  naive = rows[0]
  header = (
      f"| {'variant':<38} | temp GiB | total GiB"
      " | temp x naive | total x naive | compile s |"
  )
  print(header)
  print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
  for row in rows:
    row["temp_ratio"] = round(row["temp_bytes"] / naive["temp_bytes"], 3)
    row["total_ratio"] = round(row["total_bytes"] / naive["total_bytes"], 3)
    print(
        f"| {row['variant']:<38} | {row['temp_bytes'] / GIB:8.2f} |"
        f" {row['total_bytes'] / GIB:9.2f} |"
        f" {row['temp_ratio']:12.3f} | {row['total_ratio']:13.3f} |"
        f" {row['compile_s']:9.2f} |"
    )
  # memory_analysis().peak_memory_in_bytes is not used: on CPU it omits
  # the temp buffers, which are the whole story here.
  print(
      "temp = XLA temp buffers; total = temp + arguments + outputs - aliased,"
      " an upper bound of the compiled step's peak; ratios are vs naive."
  )
  print(json.dumps(dict(benchmark="memory", batch=b, seq=t, vocab=v,
                        rows=rows)))


def _add_memory_parser(subparsers) -> None:
  p = subparsers.add_parser("memory", help=memory.__doc__)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--seq", type=int, default=2048)
  p.add_argument("--vocab", type=int, default=151936)
  p.add_argument("--student-dim", type=int, default=1024)  # Qwen3-0.6B
  p.add_argument("--teacher-dim", type=int, default=2048)  # Qwen3-1.7B
  p.add_argument("--dtype", default="bfloat16")
  p.add_argument("--rhos", type=float, nargs="+", default=[0.5, 0.2])
  p.add_argument("--stats-chunk", type=int, default=stats.DEFAULT_CHUNK_SIZE)
  p.add_argument("--loss-chunk", type=int, default=stats.DEFAULT_CHUNK_SIZE)
  p.add_argument(
      "--selective-chunk", type=int, default=stats.DEFAULT_CHUNK_SIZE,
      help="chunk of the K selected positions (each rho is also compiled"
      " unchunked, for comparison)",
  )
  p.set_defaults(func=memory)


SUBCOMMANDS = {"memory": _add_memory_parser}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  subparsers = parser.add_subparsers(dest="command", required=True)
  for add_parser in SUBCOMMANDS.values():
    add_parser(subparsers)
  args = parser.parse_args()
  args.func(args)


if __name__ == "__main__":
  main()
