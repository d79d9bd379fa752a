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
"""One on-policy GKD step (rollout + update) vs TRL's GKDTrainer, with the update's FLOP/s."""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from benchmarks import protocol


def update_flops(student, teacher, batch: int, prompt: int, new: int) -> float:
  """The matmul FLOPs one GKD update must do: the floor the bench divides by.

  XLA's `cost_analysis()` counts a loop's body once, so it undercounts the
  layer scan and the head's chunks (at 512 new tokens it gave 99.8 GFLOP
  for what is about 330); this counts them. With n = B (P + T) tokens,
  m = B T response positions, W a model's projection weights per token
  (q, k, v, o and the MLP's three, all layers), A its causal attention
  (q.k and p.v over the L (L + 1) / 2 allowed pairs of each row, per head
  and layer) and H = d V its head:

    student: 3 (2 W n + A) + 3 (2 H m)   (forward, two products backward)
    teacher:    2 W n + A  +    2 H m    (forward only)

  Not counted: the embedding lookup and its scatter-add, norms,
  elementwise work, and any recomputation (the student's rematerialised
  layers, where `remat` is on: not needed work, so not credited; the
  loss's head pass recomputes nothing, `heads.weighted_head_pass`).
  """

  def trunk(c):
    q, kv = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
    weights = c.num_layers * (2 * c.embed_dim * q + 2 * c.embed_dim * kv)
    weights += c.num_layers * 3 * c.embed_dim * c.mlp_dim
    length = prompt + new
    pairs = batch * length * (length + 1) / 2
    attention = 2 * 2 * pairs * q * c.num_layers
    return 2 * weights * batch * length + attention

  def head(c):
    return 2 * c.embed_dim * c.vocab_size * batch * new

  return 3 * (trunk(student) + head(student)) + trunk(teacher) + head(teacher)


def _ours(args, directory, new_tokens):
  """Rollout from the current student + one jitted GKD step.

  Assembled as `trainer.loop.Trainer` does (`compile_step`). Returns the
  per-iteration function (seconds) and a dict that collects the update's
  own seconds and XLA's FLOP count of the compiled update.
  """
  from flax import nnx  # pylint: disable=g-import-not-at-top

  from opd_jax.models import load_hf  # pylint: disable=g-import-not-at-top
  from opd_jax.rollouts import Sampling, sample  # pylint: disable=g-import-not-at-top
  from opd_jax.trainer import config as trainer_config  # pylint: disable=g-import-not-at-top
  from opd_jax.trainer import plan_run, to_run_config  # pylint: disable=g-import-not-at-top

  prompt, prompt_mask = (
      jnp.asarray(x) for x in protocol.load_prompts(directory, args.batch)
  )
  b, p = prompt.shape
  t = new_tokens
  # The run's plan, as the trainer makes it: method, optimizer, dtypes,
  # batch shapes all come from one config.
  c = trainer_config.default_config()
  c.student = os.path.join(directory, "student")
  c.teacher = os.path.join(directory, "teacher")
  c.method, c.gkd.loss_pass.jsd_beta, c.gkd.loss_pass.temperature = (
      "gkd",
      args.beta,
      args.temperature,
  )
  c.batch_size, c.max_prompt_len, c.max_new_tokens = b, p, t
  c.total_steps, c.optimizer.learning_rate = 10_000, args.learning_rate
  c.compute_dtype = "" if args.dtype == "float32" else args.dtype
  c.attention, c.remat = args.attention, args.remat
  mesh = jax.sharding.Mesh(
      np.asarray(jax.devices()[:1]).reshape(1, 1, 1), ("data", "fsdp", "tensor")
  )
  plan = plan_run(to_run_config(c), mesh=mesh)
  student = load_hf(c.student, dtype=plan.dtype)
  teacher = load_hf(c.teacher, dtype=plan.dtype)
  graphdef, params = nnx.split(student)
  teacher_graphdef, teacher_params = nnx.split(teacher)
  teacher_params = teacher_params.to_pure_dict()
  params = params.to_pure_dict()
  abstract_batch = plan.abstract_batch()
  with jax.set_mesh(mesh):
    step_fn, state_sh, _, batch_sh = plan.compile_step(
        plan.abstract_state(params),
        teacher_params,
        abstract_batch,
        student_graphdef=graphdef,
        teacher_graphdef=teacher_graphdef,
    )
    holder = {"state": jax.jit(plan.init_state, out_shardings=state_sh)(params)}
    cost = step_fn.lower(
        jax.eval_shape(lambda: holder["state"]), teacher_params, abstract_batch
    ).compile()
    cost = cost.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  stats = {
      "flops": float(cost.get("flops", 0.0)),
      "update_s": [],
      "rollout_s": [],
      "usage": [],
  }
  sampling = Sampling(temperature=args.temperature)
  sample_dtype = plan.compute_dtype

  def run(i: int) -> float:
    before = protocol.usage()
    start = time.perf_counter()
    with jax.set_mesh(mesh):
      state = holder["state"]
      policy = nnx.merge(graphdef, state.params)
      kwargs = {} if sample_dtype is None else {"compute_dtype": sample_dtype}
      r = sample(
          policy,
          prompt,
          prompt_mask,
          jax.random.key(i),
          max_new_tokens=t,
          sampling=sampling,
          **kwargs,
      )
      jax.block_until_ready(r.response)
      mid = time.perf_counter()
      batch = jax.device_put(
          {
              "tokens": r.tokens,
              "mask": r.mask,
              "response_mask": r.response_mask,
              "sampler_logprobs": r.logprobs,
          },
          batch_sh,
      )
      state, metrics = step_fn(state, teacher_params, batch)
      jax.block_until_ready(metrics)
      holder["state"] = state
    end = time.perf_counter()
    stats["rollout_s"].append(mid - start)
    stats["update_s"].append(end - mid)
    stats["usage"].append(protocol.usage_delta(before, protocol.usage()))
    return end - start

  return run, stats


def _usage(side: dict | None, usage: dict | None) -> str:
  if not side or not usage:
    return "-"
  return (
      f"wall {side['seconds']:.2f} s, user {usage['user_s']:.2f} s, system"
      f" {usage['system_s']:.2f} s"
      f" ({100 * usage['system_s'] / side['seconds']:.1f}% of the wall time),"
      f" {usage['minor_faults']:.0f} minor / {usage['major_faults']:.0f} major"
      " faults"
  )


# The long rows' targets (issue 36), on a 2-core machine of BENCHMARKS.md.
LONG_TARGETS = dict(short=256, long=512, max_growth=2.6, min_fraction=0.4)
MAX_SYSTEM_SHARE = 0.10


def targets(rows: list[dict]) -> dict:
  """The long rows' figures against their targets, from this run's rows.

  growth: s/step at 512 new tokens over s/step at 256 (at most 2.6);
  fraction: the update at 512 as a fraction of the float32 matmul rate
  measured in the same run (at least 0.4); system: each row's system CPU
  seconds per step over its wall seconds (under 10%). Rows that are
  missing leave their entries out.
  """
  by_tokens = {r["new_tokens"]: r for r in rows}
  out = {}
  short = by_tokens.get(LONG_TARGETS["short"])
  long = by_tokens.get(LONG_TARGETS["long"])
  if short and long:
    growth = long["ours"]["seconds"] / short["ours"]["seconds"]
    out["growth_256_to_512"] = round(growth, 3)
    out["growth_ok"] = growth <= LONG_TARGETS["max_growth"]
  if long:
    out["fraction_at_512"] = long["fraction_of_matmul"]
    out["fraction_ok"] = long["fraction_of_matmul"] >= (
        LONG_TARGETS["min_fraction"]
    )
  share = {
      t: round(r["ours_usage"]["system_s"] / r["ours"]["seconds"], 4)
      for t, r in by_tokens.items()
  }
  out["system_share"] = share
  out["system_ok"] = all(v < MAX_SYSTEM_SHARE for v in share.values())
  return out


def _print_targets(t: dict) -> None:
  """One line per target (set for `--long`'s shape on a 2-core machine)."""
  ok = lambda flag: "met" if flag else "NOT met"
  if "growth_256_to_512" in t:
    print(
        f"target: 256 -> 512 new tokens costs {t['growth_256_to_512']:.2f}x"
        f" per step (at most {LONG_TARGETS['max_growth']}):"
        f" {ok(t['growth_ok'])}"
    )
  if "fraction_at_512" in t:
    print(
        "target: the update at 512 new tokens runs at"
        f" {t['fraction_at_512']:.2f} of the matmul floor measured around"
        f" its row (at least {LONG_TARGETS['min_fraction']}):"
        f" {ok(t['fraction_ok'])}"
    )
  shares = ", ".join(
      f"{k} tokens {100 * v:.1f}%" for k, v in t["system_share"].items()
  )
  print(
      f"target: system time of the step {shares} (under"
      f" {100 * MAX_SYSTEM_SHARE:.0f}%): {ok(t['system_ok'])}"
  )


def run(args) -> None:
  """Rollout + GKD update vs TRL GKDTrainer at each `--new-tokens`."""
  load_start = common.load_line()
  rates = common.machine_rates()
  common.print_rates(rates)
  setup = dict(
      common.jax_setup(),
      keep_host_memory=getattr(args, "keep_host_memory", None),
  )
  scfg, tcfg = common.bench_configs(args)
  print(
      f"step: B={args.batch} prompt={args.prompt_len} V={args.vocab}"
      f" student={scfg.num_params() / 1e6:.1f}M"
      f" teacher={tcfg.num_params() / 1e6:.1f}M ours={args.dtype}, TRL"
      f" float32, warmup {args.warmup}, median of {args.steps}"
  )
  report = {
      "benchmark": "step",
      "rates": rates,
      "cpu": protocol.cpu_model(),
      "dtype": args.dtype,
      "ours_setup": setup,
      "load_start": load_start,
      "rows": [],
  }
  peer_setup_printed = False
  usage_lines = []
  with tempfile.TemporaryDirectory() as directory:
    common.write_checkpoints(args, directory)
    protocol.write_prompts(
        directory, args.batch, args.prompt_len, args.vocab, args.seed
    )
    common.print_setup(setup, None)
    print(f"load average at start: {load_start}")
    header = (
        "| new tokens | opd_jax s/step | TRL s/step | ratio | ours: rollout"
        " s | update s | TRL: generation s | teacher s | update s | update"
        " GFLOP | update GFLOP/s | matmul floor GFLOP/s | of matmul rate |"
        " load average | CPU during the row |"
    )
    for t in args.new_tokens:
      counters = protocol.cpu_counters()
      floors = [
          rates[f"matmul_{args.dtype}_gflop_s"],
          common.matmul_rate(args.dtype),
      ]
      ours, stats = _ours(args, directory, t)
      row = common.side_by_side(
          args,
          ours,
          [
              "step",
              "--dir",
              directory,
              "--batch",
              str(args.batch),
              "--new-tokens",
              str(t),
              "--temperature",
              str(args.temperature),
              "--beta",
              str(args.beta),
              "--learning-rate",
              str(args.learning_rate),
              "--threads",
              str(args.peer_threads),
          ],
          args.batch * t,
      )
      update = statistics.median(stats["update_s"][args.warmup :])
      rollout = statistics.median(stats["rollout_s"][args.warmup :])
      flops = update_flops(scfg, tcfg, args.batch, args.prompt_len, t)
      rate = flops / update
      # The floor: the matmul rate at the start, just before and just after
      # the row, their median (another process's load comes and goes).
      floors.append(common.matmul_rate(args.dtype))
      matmul = statistics.median(floors) * 1e9
      row.update(
          new_tokens=t,
          rollout_s=round(rollout, 4),
          update_s=round(update, 4),
          update_flops=flops,
          xla_cost_flops=stats["flops"],
          update_flop_s=rate,
          fraction_of_matmul=round(rate / matmul, 3),
          matmul_floors_gflop_s=[round(f, 1) for f in floors],
      )
      row["load_end"] = common.load_line()
      row["cpu_share"] = protocol.cpu_share(counters, protocol.cpu_counters())
      timed = stats["usage"][args.warmup :]
      row["ours_usage"] = {
          k: round(statistics.median(u[k] for u in timed), 3) for k in timed[0]
      }
      report["rows"].append(row)
      if not peer_setup_printed:
        # The peer's threads and BLAS, once (every row's peer is the same).
        if row.get("peer_info"):
          common.print_setup(setup, row["peer_info"])
        print(header)
        print("|" + "---|" * header.count(" |"))
        peer_setup_printed = True
      peer = row.get("peer", {}).get("seconds", "-")
      phases = row.get("peer_phases", {})
      trl = " | ".join(
          f"{phases[k]:.3f}" if k in phases else "-"
          for k in ("generation", "teacher", "update")
      )
      print(
          f"| {t} | {row['ours']['seconds']:.3f} | {peer} |"
          f" {row.get('ratio', '-')} | {rollout:.3f} | {update:.3f} | {trl} |"
          f" {flops / 1e9:.1f} | {rate / 1e9:.1f} | {matmul / 1e9:.1f} |"
          f" {rate / matmul:.2f} | {row['load_end']} | {row['cpu_share']} |",
          flush=True,
      )
      ours_usage = _usage(row["ours"], row["ours_usage"])
      trl_usage = _usage(row.get("peer"), row.get("peer_usage"))
      usage_lines.append(
          f"  {t} tokens, per step (median): ours {ours_usage}; TRL {trl_usage}"
      )
  print(
      "CPU seconds and page faults per step (user + system well below"
      " threads x wall: waiting for a core):"
  )
  print("\n".join(usage_lines))
  report["targets"] = targets(report["rows"])
  _print_targets(report["targets"])
  report["load_end"] = common.load_line()
  print(f"load average at end: {report['load_end']}")
  print(f"({protocol.machine_line()})")
  print(
      "s/step = one on-policy step (rollout, student + teacher forward,"
      " JSD(beta) backward, AdamW), median; update GFLOP = the matmul work the"
      " update must do (`update_flops`: XLA's cost analysis counts a loop body"
      " once), matmul floor = the median of the 2048^3 matmul rate in our dtype"
      " at the start, before and after the row, of matmul rate = the update's"
      " GFLOP/s over that floor; ratio = TRL s / ours s. TRL's phases"
      " (medians): generation = its generate call, teacher = the teacher's"
      " forward, update = the rest (student forward, JSD, backward, AdamW)."
      " load average = 1, 5, 15 min, after each row; CPU = the machine's busy"
      " and hypervisor-stolen shares during it (/proc/stat)."
  )
  print(json.dumps(report))


def add_parser(subparsers) -> None:
  p = subparsers.add_parser("step", help=run.__doc__)
  common.add_model_flags(p)
  p.add_argument("--batch", type=int, default=4)
  p.add_argument("--new-tokens", type=int, nargs="+", default=[128, 512])
  p.add_argument("--beta", type=float, default=0.5, help="JSD beta (TRL's)")
  p.add_argument("--learning-rate", type=float, default=1e-5)
  p.add_argument(
      "--dtype",
      default="float32",
      choices=["float32", "bfloat16"],
      help=(
          "our matmul operands (float32 accumulation either way); TRL runs"
          " float32"
      ),
  )
  p.add_argument(
      "--attention",
      default="auto",
      help="config.attention of our step (auto, dense, blockwise, ...)",
  )
  p.add_argument(
      "--remat",
      default="auto",
      help="config.remat of our step (auto, none, full, ...)",
  )
  p.add_argument(
      "--long",
      action="store_true",
      help=(
          "the long-reasoning rows: B=32, prompt 32, V=64, a 4x128 student"
          " and a 6x256 teacher, 256 and 512 new tokens, our side only;"
          " prints the rows' targets"
      ),
  )
  p.add_argument(
      "--quick",
      action="store_true",
      help="tiny shapes, our side only, 256 and 512 new tokens (a smoke test)",
  )
  p.set_defaults(func=run, quick_rows=None, quick_fills=None)
