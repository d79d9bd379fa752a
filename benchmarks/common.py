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
"""The JAX side's shared parts: bench models, the peer process, timing, machine rates."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp

from benchmarks import protocol


def bench_configs(args):
  """Qwen2-style student and teacher ModelConfigs from the flags."""
  from opd_jax.models import ModelConfig  # pylint: disable=g-import-not-at-top

  def make(d, layers, heads, kv, mlp):
    return ModelConfig(
        family="qwen2",
        vocab_size=args.vocab,
        embed_dim=d,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=d // heads,
        mlp_dim=mlp,
        qkv_bias=True,
        max_position_embeddings=8192,
        pad_token_id=0,
    )

  return (
      make(
          args.student_dim,
          args.student_layers,
          args.student_heads,
          args.student_kv_heads,
          args.student_mlp,
      ),
      make(
          args.teacher_dim,
          args.teacher_layers,
          args.teacher_heads,
          args.teacher_kv_heads,
          args.teacher_mlp,
      ),
  )


def write_checkpoints(args, directory: str) -> None:
  """Student and teacher HF checkpoints (random weights) in `directory`."""
  from opd_jax import testing  # pylint: disable=g-import-not-at-top
  from opd_jax.models import save_hf  # pylint: disable=g-import-not-at-top

  scfg, tcfg = bench_configs(args)
  save_hf(
      testing.random_model(scfg, seed=0), os.path.join(directory, "student")
  )
  save_hf(
      testing.random_model(tcfg, seed=1), os.path.join(directory, "teacher")
  )


class Peer:
  """The PyTorch side in a child process; `run()` times one iteration there."""

  def __init__(self, argv: list[str]):
    env = dict(os.environ, **protocol.PEER_ENV)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (root, env.get("PYTHONPATH")) if p
    )
    self.proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.peer", *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
        cwd=root,
    )
    self.info = self._read()  # sent once set up
    if self.info.get("jax_imported"):
      raise RuntimeError("the PyTorch peer imported JAX")
    self.replies = []  # every iteration's reply (seconds, maybe phases)

  def _read(self) -> dict:
    for line in self.proc.stdout:
      if line.startswith("@@"):
        return json.loads(line[2:])
    raise RuntimeError(f"peer exited with {self.proc.wait()}")

  def run(self, i: int) -> float:
    del i
    self.proc.stdin.write("go\n")
    self.proc.stdin.flush()
    self.replies.append(self._read())
    return self.replies[-1]["seconds"]

  def close(self) -> None:
    if self.proc.poll() is None:
      self.proc.stdin.close()
      self.proc.wait()


def side_by_side(
    args,
    ours: Callable[[int], float],
    peer_argv,
    tokens: int,
    use_peer: bool = True,
) -> dict:
  """Alternates ours / peer iterations; medians after the warm-up ones.

  Ours runs `warmup` + `steps` iterations (the first compiles); the peer
  `peer_warmup` (default `warmup`) + `steps`, its last ones beside ours.
  """
  n = args.warmup + args.steps
  peer_warmup = args.warmup if args.peer_warmup is None else args.peer_warmup
  peer = None
  if use_peer and not args.no_peer:
    peer = Peer(peer_argv + ["--iterations", str(peer_warmup + args.steps)])
  times = {"ours": [], "peer": []}
  try:
    for i in range(n):
      times["ours"].append(ours(i))
      if peer is not None and i >= args.warmup - peer_warmup:
        times["peer"].append(peer.run(i))
  finally:
    if peer is not None:
      peer.close()
  out = {"peer_info": None if peer is None else peer.info}
  for key in ("phases", "usage"):
    if peer is not None and peer.replies and key in peer.replies[0]:
      timed = [r[key] for r in peer.replies[peer_warmup:]]
      out[f"peer_{key}"] = {
          k: round(statistics.median(p[k] for p in timed), 4) for k in timed[0]
      }
  for side, ts in times.items():
    if ts:
      s = statistics.median(
          ts[args.warmup if side == "ours" else peer_warmup :]
      )
      out[side] = {
          "seconds": round(s, 4),
          "tokens_per_s": round(tokens / s, 1),
          "first_s": round(ts[0], 2),
          "all_s": [round(x, 3) for x in ts],
      }
  if "peer" in out:
    out["ratio"] = round(
        out["ours"]["tokens_per_s"] / out["peer"]["tokens_per_s"], 2
    )
  return out


def median_seconds(fn: Callable[[], object], n: int = 7) -> float:
  """Median wall time of `fn()` (blocked on) after one warm-up call."""
  jax.block_until_ready(fn())
  ts = []
  for _ in range(n):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    ts.append(time.perf_counter() - start)
  return statistics.median(ts)


def machine_rates(mbytes: int = 256, n: int = 2048) -> dict:
  """Bandwidth of a large XLA reduction and float32 / bf16 matmul rates.

  The reduction reads `mbytes` MB of float32, far more than any cache; the
  matmul is n^3 (bf16 operands accumulate in float32, as the models do).
  """
  x = jnp.ones((mbytes * 2**20 // 4,), jnp.float32)
  read = median_seconds(lambda: jax.jit(jnp.sum)(x))
  out = {"bandwidth_gb_s": x.nbytes / read / 1e9}
  for dt in ("float32", "bfloat16"):
    out[f"matmul_{dt}_gflop_s"] = matmul_rate(dt, n)
  return {k: round(v, 1) for k, v in out.items()}


def matmul_rate(dtype: str = "float32", n: int = 2048) -> float:
  """GFLOP/s of an n^3 jnp.dot in `dtype` (float32 accumulation), median."""
  a = jnp.ones((n, n), dtype)
  mm = jax.jit(lambda a: jnp.dot(a, a, preferred_element_type=jnp.float32))
  return 2 * n**3 / median_seconds(lambda: mm(a)) / 1e9


def jax_setup() -> dict:
  """Our side's threading and allocator: what XLA:CPU runs on here.

  XLA:CPU sizes its intra-op pool by the cores this process may run on
  (`os.sched_getaffinity`); XLA_FLAGS and the OMP / MKL / malloc
  variables are printed as set, since they would change that.
  """
  import jaxlib  # pylint: disable=g-import-not-at-top

  return {
      "jax": jax.__version__,
      "jaxlib": jaxlib.__version__,
      "devices": f"{jax.device_count()} x {jax.devices()[0].platform}",
      "cores_usable": len(os.sched_getaffinity(0)),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "env": {
          k: v
          for k, v in sorted(os.environ.items())
          if k.startswith(("MALLOC_", "OMP_", "MKL_", "JAX_", "OPD_JAX_"))
      },
  }


def print_setup(ours: dict, peer: dict | None) -> None:
  """Two lines: our JAX side's threads, the torch peer's threads and BLAS."""
  print(
      f"ours: jax {ours['jax']} (jaxlib {ours['jaxlib']}),"
      f" {ours['devices']}, XLA:CPU pool over {ours['cores_usable']} usable"
      f" cores, XLA_FLAGS={ours['xla_flags']!r}, host memory kept"
      " (mallopt arena 1, no mmap, no trim):"
      f" {ours.get('keep_host_memory')}, env {ours['env']}"
  )
  if not peer:
    return
  print(
      f"peer: torch {peer.get('torch')}, intra-op threads"
      f" {peer.get('threads')}, inter-op {peer.get('interop_threads')},"
      f" backend {peer.get('parallel_backend')}, CPU capability"
      f" {peer.get('cpu_capability')}, MKL {peer.get('mkl')}, oneDNN"
      f" {peer.get('mkldnn')} (enabled {peer.get('mkldnn_enabled')}),"
      f" build {peer.get('build_flags')}; {'; '.join(peer.get('build', []))};"
      f" env {peer.get('env')}"
  )


def load_line() -> str:
  load = os.getloadavg()
  return f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"


def print_rates(rates: dict) -> None:
  print(
      f"machine: {protocol.machine_line()}; XLA reduction"
      f" {rates['bandwidth_gb_s']} GB/s, matmul float32"
      f" {rates['matmul_float32_gflop_s']} GFLOP/s, bf16 operands"
      f" {rates['matmul_bfloat16_gflop_s']} GFLOP/s"
  )


def add_model_flags(p) -> None:
  p.add_argument("--prompt-len", type=int, default=100)
  p.add_argument("--vocab", type=int, default=32000)
  p.add_argument("--student-dim", type=int, default=256)
  p.add_argument("--student-layers", type=int, default=4)
  p.add_argument("--student-heads", type=int, default=4)
  p.add_argument("--student-kv-heads", type=int, default=2)
  p.add_argument("--student-mlp", type=int, default=688)
  p.add_argument("--teacher-dim", type=int, default=512)
  p.add_argument("--teacher-layers", type=int, default=4)
  p.add_argument("--teacher-heads", type=int, default=8)
  p.add_argument("--teacher-kv-heads", type=int, default=4)
  p.add_argument("--teacher-mlp", type=int, default=1376)
  p.add_argument("--temperature", type=float, default=1.0)
  p.add_argument("--warmup", type=int, default=1)
  p.add_argument("--steps", type=int, default=3)
  p.add_argument(
      "--peer-warmup",
      type=int,
      default=None,
      help=(
          "untimed peer iterations (default: --warmup); 0 saves"
          " minutes on long rows, torch does not compile"
      ),
  )
  p.add_argument("--seed", type=int, default=0)
  p.add_argument(
      "--no-peer",
      action="store_true",
      help="time our side only (no torch / TRL needed)",
  )
  p.add_argument(
      "--peer-threads",
      type=int,
      default=0,
      help="torch.set_num_threads in the peer (0: torch's default)",
  )


QUICK = dict(
    prompt_len=8,
    vocab=128,
    student_dim=32,
    student_layers=1,
    student_heads=2,
    student_kv_heads=1,
    student_mlp=64,
    teacher_dim=64,
    teacher_layers=1,
    teacher_heads=2,
    teacher_kv_heads=1,
    teacher_mlp=64,
    warmup=1,
    steps=1,
    no_peer=True,
)


# `step --long`: the shape of the long-reasoning task's runs (issue 36): a
# 4x128 student and a 6x256 teacher, B = 32, 32-token prompts, a small
# vocabulary, responses of 256 and 512 tokens.
LONG = dict(
    batch=32,
    prompt_len=32,
    vocab=64,
    student_dim=128,
    student_layers=4,
    student_heads=4,
    student_kv_heads=4,
    student_mlp=384,
    teacher_dim=256,
    teacher_layers=6,
    teacher_heads=8,
    teacher_kv_heads=8,
    teacher_mlp=768,
    new_tokens=[256, 512],
    no_peer=True,
)
