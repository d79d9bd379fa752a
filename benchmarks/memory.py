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
"""Compiled memory of the student update: naive full logits vs the TIP method users run."""

from __future__ import annotations

import json
import time
from typing import Callable

import jax
import jax.numpy as jnp

from benchmarks import protocol

GIB = 1024**3


def _naive_loss(inputs):
  """Materialises [B, T, V] student and teacher logits, reverse KL: the
  papers' baseline, as the results' memory column compiles it."""
  from opd_jax.results import memory  # pylint: disable=g-import-not-at-top

  return memory.FullLogitReverseKL().loss(inputs)[0]


def _method_loss(name: str, config: dict) -> Callable:
  """The registered method's own `loss` (what `trainer.step` calls)."""
  from opd_jax import methods  # pylint: disable=g-import-not-at-top

  method = methods.build_method(name, config)
  return lambda inputs: method.loss(inputs)[0]


def _grad_step(loss: Callable) -> Callable:
  """Loss and gradient w.r.t. the student's hidden states and head."""

  def step(inputs):
    def f(hs, ws):
      return loss(inputs.replace(student_hidden=hs, student_head=ws))

    return jax.value_and_grad(f, argnums=(0, 1))(
        inputs.student_hidden, inputs.student_head
    )

  return step


def _row(name: str, step: Callable, inputs) -> dict:
  start = time.perf_counter()
  compiled = jax.jit(step).lower(inputs).compile()
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


def run(args) -> None:
  """Compiles each variant on abstract inputs and prints its memory."""
  from opd_jax.methods import base  # pylint: disable=g-import-not-at-top

  b, t, v = args.batch, args.seq, args.vocab
  dt = jnp.dtype(args.dtype)
  sds = jax.ShapeDtypeStruct
  inputs = base.StepInputs(
      student_hidden=sds((b, t, args.student_dim), dt),
      student_head=sds((args.student_dim, v), dt),
      teacher_hidden=sds((b, t, args.teacher_dim), dt),
      teacher_head=sds((args.teacher_dim, v), dt),
      ids=sds((b, t), jnp.int32),
      mask=sds((b, t), jnp.bool_),
      sampler_logprobs=sds((b, t), jnp.float32),
      key=jax.eval_shape(lambda: jax.random.key(0)),
  )
  variants = [
      ("naive full logits", _naive_loss),
      (
          f"tip selector=all rho=1 (C={args.chunk})",
          _method_loss(
              "tip",
              {
                  "selector": "all",
                  "rho": 1.0,
                  "loss_pass": {"chunk_size": args.chunk},
              },
          ),
      ),
  ]
  for rho in args.rhos:
    for chunk in (args.chunk, None):
      suffix = f"C={chunk}" if chunk else "unchunked"
      variants.append((
          f"tip soft_or rho={rho:g} ({suffix})",
          _method_loss("tip", {"rho": rho, "loss_pass": {"chunk_size": chunk}}),
      ))
  print(
      f"memory: {protocol.machine_line()}; backend={jax.default_backend()}"
      f" B={b} T={t} V={v} Ds={args.student_dim} Dt={args.teacher_dim}"
      f" dtype={dt.name}"
  )
  rows = [_row(name, _grad_step(loss), inputs) for name, loss in variants]
  naive = rows[0]
  print(
      f"| {'variant':<34} | temp GiB | total GiB | temp x naive |"
      " total x naive | compile s |"
  )
  print("|---|---|---|---|---|---|")
  for row in rows:
    row["temp_ratio"] = round(row["temp_bytes"] / naive["temp_bytes"], 3)
    row["total_ratio"] = round(row["total_bytes"] / naive["total_bytes"], 3)
    print(
        f"| {row['variant']:<34} | {row['temp_bytes'] / GIB:8.2f} |"
        f" {row['total_bytes'] / GIB:9.2f} | {row['temp_ratio']:12.3f} |"
        f" {row['total_ratio']:13.3f} | {row['compile_s']:9.2f} |"
    )
  # memory_analysis().peak_memory_in_bytes is not used: on CPU it omits
  # the temp buffers, which are the whole story here.
  print(
      "temp = XLA temp buffers; total = temp + arguments + outputs -"
      " aliased, an upper bound of the compiled step's peak; the tip rows"
      " are `methods.build_method('tip', ...).loss` and its gradient."
  )
  print(
      json.dumps(dict(benchmark="memory", batch=b, seq=t, vocab=v, rows=rows))
  )


def add_parser(subparsers) -> None:
  p = subparsers.add_parser("memory", help=run.__doc__)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--seq", type=int, default=2048)
  p.add_argument("--vocab", type=int, default=151936)
  p.add_argument("--student-dim", type=int, default=1024)  # Qwen3-0.6B
  p.add_argument("--teacher-dim", type=int, default=2048)  # Qwen3-1.7B
  p.add_argument("--dtype", default="bfloat16")
  p.add_argument("--rhos", type=float, nargs="+", default=[0.5, 0.2])
  p.add_argument(
      "--chunk",
      type=int,
      default=128,
      help=(
          "the methods' chunk_size (each rho is also compiled"
          " unchunked, for comparison)"
      ),
  )
  p.add_argument("--quick", action="store_true", help="tiny shapes")
  p.set_defaults(func=run, quick_rows=None, quick_fills=None)
