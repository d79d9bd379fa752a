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
r"""Benchmarks of opd_jax, one subcommand each (run from the repository root).

  python -m benchmarks memory    # compiled memory of the student update
  python -m benchmarks step      # rollout + update vs TRL GKDTrainer
  python -m benchmarks rollout   # sampler vs HF generate, floor, draw cost
  python -m benchmarks accelerator  # one GPU: parity, long step, sampler
  python -m benchmarks step-memory  # the whole step's memory at long T
  python -m benchmarks topd      # TOPD's step (stage + update) vs plain OPD
  python -m benchmarks moe       # Qwen3-MoE forward / decode vs transformers

`--quick` runs tiny shapes of our side only (a smoke test, no torch).
"""

from __future__ import annotations

import argparse

from benchmarks import accelerator
from benchmarks import common
from benchmarks import memory
from benchmarks import moe
from benchmarks import rollout
from benchmarks import step
from benchmarks import step_memory
from benchmarks import topd
from opd_jax import cli

_QUICK_MEMORY = dict(
    batch=2, seq=16, vocab=256, student_dim=32, teacher_dim=64, chunk=8
)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  subparsers = parser.add_subparsers(dest="command", required=True)
  for module in (memory, step, rollout, step_memory, accelerator, topd, moe):
    module.add_parser(subparsers)
  args = parser.parse_args(argv)
  if args.quick and args.command in ("memory", "step", "rollout"):
    quick = _QUICK_MEMORY if args.command == "memory" else common.QUICK
    for k, v in quick.items():
      setattr(args, k, v)
    if args.quick_rows:
      args.rows = args.quick_rows
      args.cost_fills = args.quick_fills
      args.cost_batch = 2
    if args.command == "step":
      # The long rows (what the targets read): the sampler's later cache
      # segments and the attention at 520 positions, at tiny widths.
      args.batch, args.new_tokens = 2, [256, 512]
  elif args.command == "step" and args.long:
    for k, v in common.LONG.items():
      setattr(args, k, v)
  # Our side runs as the trainer's entry points do (the peer gets glibc's
  # tunables for torch, protocol.py).
  args.keep_host_memory = cli.keep_freed_host_memory()
  args.func(args)


if __name__ == "__main__":
  main()
