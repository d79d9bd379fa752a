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
r"""Compiled memory of the whole training step (both trunks) at reasoning lengths.

  python -m benchmarks step-memory [--lengths 1024 2048 4096] [--recipes]

Part 1: the Qwen3-0.6B-shaped student and teacher (random weights, built
abstractly), B = 8, P = 64, float32, one device, the run's default method
(TIP), at each response length T: the step's per-device arguments,
temporaries and total (`trainer.memory`), and the growth per doubling of T.
Part 2 (`--recipes`): each shipped recipe as shipped, on 8 fake CPU devices
(a child process with `--xla_force_host_platform_device_count=8`): the
update step and the sampler, as `scripts/train.py --dry_run` prints them.
Nothing is loaded or run: XLA's `memory_analysis()` of compiled programs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from benchmarks import protocol

GIB = 2.0**30
RECIPES = (
    "configs/recipe_qwen3_8b_to_1p7b_tip.py",
    "configs/recipe_qwen2p5_14b_to_1p5b_tsd_kd.py",
)
_LINE = re.compile(
    r"(step|sampler) memory per device: arguments ([\d.]+) GiB, temporaries"
    r" ([\d.]+) GiB, total ([\d.]+) GiB"
)


def add_parser(subparsers) -> None:
  p = subparsers.add_parser("step-memory", help=__doc__.splitlines()[0])
  p.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096])
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--prompt", type=int, default=64)
  p.add_argument("--preset", default="qwen3_0p6b")
  p.add_argument("--method", default="tip")
  p.add_argument("--attention", default="auto")
  p.add_argument("--remat", default="auto")
  p.add_argument("--recipes", action="store_true")
  p.add_argument("--devices", type=int, default=8)
  p.add_argument("--out", default="")
  p.add_argument("--quick", action="store_true")
  p.add_argument("--quick-rows", dest="quick_rows", default=None)
  p.set_defaults(func=run)


def trunk_rows(args) -> list[dict]:
  """The step's memory at each T (one device), in GiB."""
  from opd_jax.trainer.config import default_config  # pylint: disable=g-import-not-at-top

  c = default_config()
  c.method = args.method
  c.attention, c.remat = args.attention, args.remat
  return [_row(c, args.preset, args, t) for t in args.lengths]


def recipe_rows(devices: int, overrides=()) -> list[dict]:
  """Each recipe's dry-run memory lines on `devices` fake CPU devices."""
  env = dict(
      os.environ,
      XLA_FLAGS=(
          os.environ.get("XLA_FLAGS", "")
          + f" --xla_force_host_platform_device_count={devices}"
      ).strip(),
      JAX_PLATFORMS="cpu",
  )
  rows = []
  for recipe in RECIPES:
    cmd = [
        sys.executable,
        "scripts/train.py",
        f"--config={recipe}",
        "--dry_run",
        *overrides,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    row = dict(recipe=recipe, devices=devices)
    for m in _LINE.finditer(proc.stdout):
      row[m.group(1)] = dict(
          arguments=float(m.group(2)),
          temporaries=float(m.group(3)),
          total=float(m.group(4)),
      )
    if proc.returncode or "step" not in row:
      row["error"] = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
    rows.append(row)
    print(
        f"  {recipe}:"
        f" {json.dumps({k: row.get(k) for k in ('step', 'sampler', 'error') if k in row})}",
        flush=True,
    )
  return rows


def run(args) -> None:
  if args.quick:
    args.preset, args.lengths, args.batch, args.prompt = "", [8, 16], 2, 8
  print(f"CPU: {protocol.cpu_model()}")
  print(
      f"whole step, {args.preset or 'tiny'} pair, B={args.batch},"
      f" P={args.prompt}, method {args.method}, attention {args.attention},"
      f" remat {args.remat}, one device:"
  )
  report = dict(cpu=protocol.cpu_model(), trunk=[], recipes=[])
  if args.quick:
    report["trunk"] = _quick_rows(args)
  else:
    report["trunk"] = trunk_rows(args)
  rows = report["trunk"]
  for a, b in zip(rows, rows[1:]):
    print(
        f"  growth T={a['T']} -> {b['T']}: {b['total'] / a['total']:.2f}x"
        f" total, {b['temporaries'] / max(a['temporaries'], 1e-9):.2f}x"
        " temporaries"
    )
  if args.recipes:
    print(f"recipes as shipped, {args.devices} fake CPU devices:")
    report["recipes"] = recipe_rows(args.devices)
  if args.out:
    with open(args.out, "w") as f:
      json.dump(report, f, indent=1)


def _quick_rows(args) -> list[dict]:
  """The tiny pair of `opd_jax.testing` (a smoke run of the code path)."""
  import tempfile  # pylint: disable=g-import-not-at-top

  from opd_jax import testing  # pylint: disable=g-import-not-at-top

  with tempfile.TemporaryDirectory() as d:
    paths = testing.tiny_distillation_pair(d)
    c = testing.tiny_train_config(paths, method=args.method)
    c.attention, c.remat = args.attention, args.remat
    return [_row(c, "", args, t) for t in args.lengths]


def _row(c, preset: str, args, t: int) -> dict:
  """The step's memory of config `c` at response length t, in GiB."""
  from opd_jax.results.grid import MemorySpec  # pylint: disable=g-import-not-at-top
  from opd_jax.results.memory import step_memory  # pylint: disable=g-import-not-at-top

  spec = MemorySpec(
      preset=preset,
      batch_size=args.batch,
      prompt_len=args.prompt,
      response_len=t,
  )
  r = step_memory(c, spec)
  row = dict(
      T=t,
      arguments=r["argument_bytes"] / GIB,
      temporaries=r["temp_bytes"] / GIB,
      total=r["total_bytes"] / GIB,
      compile_s=r["compile_seconds"],
  )
  print(
      f"  T={t:6d}  arguments {row['arguments']:7.2f}  temporaries"
      f" {row['temporaries']:7.2f}  total {row['total']:7.2f} GiB"
      f"  (compile {r['compile_seconds']} s)",
      flush=True,
  )
  return row
