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
r"""Qwen3-MoE on CPU: forward and greedy decoding against transformers, and
the grouped matmul's work against the routed (active) experts'.

  MALLOC_MMAP_THRESHOLD_=17179869184 MALLOC_TRIM_THRESHOLD_=17179869184 \
  MALLOC_TOP_PAD_=1073741824 python -m benchmarks.moe

One process, one random checkpoint written by transformers and loaded by
both sides, float32. `--quick` shrinks every shape (a smoke test).
"""

from __future__ import annotations

import argparse
import os
import sys
import platform
import subprocess
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from opd_jax import testing
from opd_jax.models import grouped_matmul as gmm_lib
from opd_jax.models import load_hf, moe, to_hf_config
from opd_jax.rollouts import Sampling, sample


def _config(args):
  return testing.tiny_moe_config(
      num_experts=args.experts,
      top_k=args.top_k,
      num_layers=args.layers,
      vocab_size=args.vocab,
  ).replace(
      embed_dim=args.dim,
      num_heads=8,
      num_kv_heads=4,
      head_dim=args.dim // 8,
      mlp_dim=4 * args.dim,
      moe_mlp_dim=args.expert_dim,
      eos_token_ids=(),
  )


def _median(fn, n):
  """Median process CPU seconds of `fn` (after one warm-up call).

  CPU time, not wall time: on a shared, loaded machine (this benchmark
  runs under `nice`), wall time measures the scheduler. Both sides run
  the same threads (2 here) in this one process.
  """
  fn()
  times = []
  for _ in range(n):
    t0 = time.process_time()
    fn()
    times.append(time.process_time() - t0)
  return float(np.median(times))


def _cpu_name() -> str:
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    for line in out.splitlines():
      if line.startswith("Model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor()


def _work(model, tokens, mask, config) -> tuple[int, int]:
  """(rows the CPU tile loop multiplies, rows routed) over the MoE layers."""
  computed = routed = 0
  x = model.embedder(tokens)
  for block in model._blocks():  # pylint: disable=protected-access
    if hasattr(block, "moe"):
      h = block.post_attn_norm(x).reshape(-1, config.embed_dim)
      _, _, experts = moe.route(
          block.moe.router(h), config.experts_per_token, config.norm_topk_prob
      )
      m = experts.size
      sizes = jnp.bincount(experts.reshape(-1), length=config.num_experts)
      b = gmm_lib.block_rows(m, config.num_experts)
      count = gmm_lib._plan(sizes, m, b)[2]  # pylint: disable=protected-access
      computed += int(count) * b
      routed += m
    x, _, _ = block(
        x,
        *_rope(model, tokens, mask),
        mask,
        jnp.arange(tokens.shape[1]),
        None,
        jnp.zeros((), jnp.int32),
        execution=config,
    )
  return computed, routed


def _rope(model, tokens, mask):
  from opd_jax.models import layers  # pylint: disable=g-import-not-at-top

  pos = jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), 1) - 1, 0)
  return layers.rope_cos_sin(pos, layers.rope_inv_freq(model.config))


def run(args) -> None:
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  torch.set_num_threads(os.cpu_count() or 1)
  config = _config(args)
  hf = transformers.AutoModelForCausalLM.from_config(
      transformers.AutoConfig.for_model(**to_hf_config(config)),
      dtype=torch.float32,
  ).eval()
  path = os.path.join(tempfile.mkdtemp(), "moe")
  hf.save_pretrained(path)
  model = load_hf(path)
  rng = np.random.default_rng(0)
  b, t = args.batch, args.seq
  tokens = rng.integers(3, config.vocab_size, (b, t)).astype(np.int32)
  mask = np.ones((b, t), bool)

  print(f"CPU: {_cpu_name()}, {os.cpu_count()} cores", flush=True)
  forward = nnx.jit(lambda m, x, a: m(x, attention_mask=a).logits)
  jt, jm = jnp.asarray(tokens), jnp.asarray(mask)
  ours_fwd = _median(lambda: forward(model, jt, jm).block_until_ready(), 5)
  tt = torch.as_tensor(tokens, dtype=torch.long)
  prompt_ids = tokens[:, : args.prompt]
  tp = torch.as_tensor(prompt_ids, dtype=torch.long)
  hf_fwd, hf_dec = {}, {}
  # transformers' experts: its default 'grouped_mm' (torch._grouped_mm)
  # and the per-expert 'eager' loop; the faster is the peer.
  for impl in ("eager", "grouped_mm"):
    hf.set_experts_implementation(impl)
    with torch.no_grad():
      hf_fwd[impl] = _median(lambda: hf(tt), 3)
      err = np.abs(np.asarray(forward(model, jt, jm)) - hf(tt).logits.numpy())
      hf_dec[impl] = _median(
          lambda: hf.generate(
              tp,
              attention_mask=torch.ones_like(tp),
              max_new_tokens=args.new_tokens,
              min_new_tokens=args.new_tokens,
              do_sample=False,
              pad_token_id=0,
          ),
          2,
      )
    print(
        f"transformers {impl}: forward {hf_fwd[impl]:.4f} s, decode"
        f" {hf_dec[impl]:.3f} s",
        flush=True,
    )

  prompt = jnp.asarray(prompt_ids)
  pmask = jnp.ones(prompt.shape, bool)
  new = args.new_tokens
  greedy = Sampling(temperature=0.0)
  key = jax.random.key(0)
  run_ours = lambda: jax.block_until_ready(
      sample(model, prompt, pmask, key, max_new_tokens=new, sampling=greedy)
  )
  ours_dec = _median(run_ours, 3)
  print(f"decode: ours {ours_dec:.3f} s", flush=True)
  peer_fwd = min(hf_fwd.values())
  peer_dec = min(hf_dec.values())
  computed, routed = _work(model, jt, jm, config)
  active = config.num_params(active=True)
  total = config.num_params()
  print(f"CPU: {_cpu_name()}, {os.cpu_count()} cores; jax {jax.__version__},")
  print(f"torch {torch.__version__}, transformers {transformers.__version__}")
  print(
      f"config: D={config.embed_dim} L={config.num_layers}"
      f" E={config.num_experts} k={config.experts_per_token}"
      f" F_e={config.moe_mlp_dim} V={config.vocab_size}: {total / 1e6:.1f}M"
      f" parameters, {active / 1e6:.1f}M active"
  )
  print(f"forward parity: max |dlogit| {err.max():.1e}")
  print("CPU seconds per call (process time, both sides' threads)")
  print("| | opd_jax | transformers | ratio |")
  print("|---|---|---|---|")
  print(
      f"| forward B={b} T={t} (ms) | {ours_fwd * 1e3:.1f} |"
      f" {peer_fwd * 1e3:.1f} | {peer_fwd / ours_fwd:.2f}x |"
  )
  print(
      f"| greedy decode B={b}, {args.prompt}+{new} tokens (tokens per CPU s) |"
      f" {b * new / ours_dec:.0f} | {b * new / peer_dec:.0f} |"
      f" {peer_dec / ours_dec:.2f}x |"
  )
  d, f = config.embed_dim, config.moe_mlp_dim
  n_moe = sum(config.moe_layer_mask())
  print(
      f"grouped matmul rows: {computed} computed for {routed} routed"
      f" ({computed / routed:.2f}x; all experts would be"
      f" {config.num_experts / config.experts_per_token:.0f}x)"
  )
  expert_flops = 2 * 3 * d * f * computed
  print(
      f"expert FLOPs per token: {expert_flops / (b * t) / 1e6:.2f}M done,"
      f" {2 * 3 * d * f * config.experts_per_token * n_moe / 1e6:.2f}M for the"
      " k active experts,"
      f" {2 * 3 * d * f * config.num_experts * n_moe / 1e6:.2f}M for all"
      " experts"
  )


def _run_quick_or_full(args) -> None:
  if args.quick:
    args.dim, args.layers, args.experts, args.top_k = 64, 2, 8, 2
    args.expert_dim, args.vocab, args.seq, args.new_tokens = 32, 500, 32, 8
    args.prompt = 8
  run(args)


def add_parser(subparsers) -> None:
  p = subparsers.add_parser("moe", help=__doc__.splitlines()[0])
  p.add_argument("--quick", action="store_true")
  p.add_argument("--dim", type=int, default=256)
  p.add_argument("--layers", type=int, default=4)
  p.add_argument("--experts", type=int, default=16)
  p.add_argument("--top_k", type=int, default=2)
  p.add_argument("--expert_dim", type=int, default=128)
  p.add_argument("--vocab", type=int, default=4000)
  p.add_argument("--batch", type=int, default=4)
  p.add_argument("--seq", type=int, default=128)
  p.add_argument("--prompt", type=int, default=32)
  p.add_argument("--new_tokens", type=int, default=32)
  p.set_defaults(func=_run_quick_or_full)


def main(argv=None) -> None:
  """`python -m benchmarks.moe ...`, the same as `python -m benchmarks moe`."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  add_parser(parser.add_subparsers(dest="command", required=True))
  args = parser.parse_args(["moe", *(sys.argv[1:] if argv is None else argv)])
  args.func(args)


if __name__ == "__main__":
  main()
