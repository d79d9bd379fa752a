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
r"""TOPD's on-policy step time against plain OPD (reverse KL) in one run.

  python -m benchmarks topd [--vocab 32000 --new-tokens 128] [--out F.json]

Each step is assembled as `trainer.loop.Trainer` does it: rollout from the
current student (`rollouts.sample`), TOPD's jitted pre-update stage
(`trainer.stage.compile_prepare`: stats pass, teacher and student branches,
OT), then the jitted update (`trainer.step.compile_step`). Plain OPD is the
`rkl` method (full-vocabulary reverse KL on every token, TOPD's OPD term)
on the same random Qwen2-style models (student 4x256, teacher 4x512),
prompts and shapes. Prints the CPU model and load average, the median
seconds of each phase and the ratios (the paper reports about 1.41x).
`--quick` runs tiny models and shapes (a smoke run of the code path).
"""

from __future__ import annotations

import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import protocol

# The default models, (embed_dim, layers, heads, mlp_dim), and --quick's.
STUDENT, TEACHER = (256, 4, 4, 768), (512, 4, 8, 1536)
QUICK_MODELS = (32, 2, 2, 64), (64, 2, 4, 128)
QUICK = dict(
    vocab=64, batch=2, prompt_len=8, new_tokens=8, max_candidates=2, window=4
)


def add_parser(subparsers) -> None:
  p = subparsers.add_parser("topd", help=__doc__.splitlines()[0])
  p.add_argument("--vocab", type=int, default=32000)
  p.add_argument("--batch", type=int, default=4)
  p.add_argument("--prompt-len", type=int, default=32)
  p.add_argument("--new-tokens", type=int, default=128)
  p.add_argument("--max-candidates", type=int, default=8, help="TOPD's N")
  p.add_argument("--window", type=int, default=50, help="TOPD's W")
  p.add_argument("--iters", type=int, default=5, help="timed steps")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default="", help="also write the JSON report here")
  p.add_argument("--quick", action="store_true")
  p.set_defaults(func=run)


def _config(args, d, layers, heads, mlp):
  # opd_jax is imported by the subcommand that runs, not by `python -m
  # benchmarks` for every subcommand (as in step.py, rollout.py).
  from opd_jax.models import ModelConfig  # pylint: disable=g-import-not-at-top

  return ModelConfig(
      family="qwen2",
      vocab_size=args.vocab,
      embed_dim=d,
      num_layers=layers,
      num_heads=heads,
      num_kv_heads=heads // 2,
      head_dim=d // heads,
      mlp_dim=mlp,
      qkv_bias=True,
      max_position_embeddings=4096,
      pad_token_id=0,
  )


def _prompts(args):
  rng = np.random.default_rng(args.seed)
  b, p = args.batch, args.prompt_len
  lengths = p - rng.integers(0, max(1, p // 8), b)
  lengths[0] = p
  ids = rng.integers(1, args.vocab, (b, p)).astype(np.int32)
  mask = np.arange(p)[None, :] >= (p - lengths)[:, None]
  return jnp.asarray(np.where(mask, ids, 0)), jnp.asarray(mask)


class Runner:
  """One method's on-policy step on fixed models and prompts, timed."""

  def __init__(self, args, name, cfg, student, teacher, prompts):
    from flax import nnx  # pylint: disable=g-import-not-at-top

    from opd_jax import methods  # pylint: disable=g-import-not-at-top
    from opd_jax.rollouts import Sampling  # pylint: disable=g-import-not-at-top
    from opd_jax.trainer import stage  # pylint: disable=g-import-not-at-top
    from opd_jax.trainer import state as train_state  # pylint: disable=g-import-not-at-top
    from opd_jax.trainer import step as steps  # pylint: disable=g-import-not-at-top

    self.args, self.prompts = args, prompts
    self.graphdef, params = nnx.split(student)
    tgraph, tparams = nnx.split(teacher)
    self.teacher_params = tparams.to_pure_dict()
    self.method = methods.build_method(name, cfg)
    b, p = prompts[0].shape
    t = args.new_tokens
    batch = {
        "tokens": jax.ShapeDtypeStruct((b, p + t), jnp.int32),
        "mask": jax.ShapeDtypeStruct((b, p + t), jnp.bool_),
        "response_mask": jax.ShapeDtypeStruct((b, t), jnp.bool_),
        "sampler_logprobs": jax.ShapeDtypeStruct((b, t), jnp.float32),
    }
    self.sampling = Sampling(temperature=1.0)
    self.prepare = None
    if methods.has_stage(self.method):
      batch.update(self.method.prepare_shapes(b, p, t))
      self.prepare = stage.compile_prepare(
          self.method,
          self.graphdef,
          tgraph,
          sampling=self.sampling,
          eos_ids=(),
          pad_id=0,
      )
    optimizer = train_state.make_optimizer(
        learning_rate=1e-5, total_steps=10_000, clip_norm=1.0
    )
    init = lambda x: train_state.init_state(x, optimizer, jax.random.PRNGKey(0))
    params = params.to_pure_dict()
    self.mesh = jax.sharding.Mesh(
        np.asarray(jax.devices()[:1]).reshape(1, 1, 1),
        ("data", "fsdp", "tensor"),
    )
    with jax.set_mesh(self.mesh):
      self.step_fn, state_sh, _, self.batch_sh = steps.compile_step(
          self.mesh,
          jax.eval_shape(init, params),
          self.teacher_params,
          batch,
          student_graphdef=self.graphdef,
          teacher_graphdef=tgraph,
          method=self.method,
          optimizer=optimizer,
      )
      self.state = jax.jit(init, out_shardings=state_sh)(params)

  def run(self, i: int) -> dict[str, float]:
    """One step; seconds of sampling, the stage and the update."""
    from flax import nnx  # pylint: disable=g-import-not-at-top

    from opd_jax.rollouts import sample  # pylint: disable=g-import-not-at-top
    from opd_jax.trainer import stage  # pylint: disable=g-import-not-at-top

    times = {}
    with jax.set_mesh(self.mesh):
      start = time.perf_counter()
      policy = nnx.merge(self.graphdef, self.state.params)
      r = sample(
          policy,
          *self.prompts,
          jax.random.key(i),
          max_new_tokens=self.args.new_tokens,
          sampling=self.sampling,
      )
      batch = {
          "tokens": r.tokens,
          "mask": r.mask,
          "response_mask": r.response_mask,
          "sampler_logprobs": r.logprobs,
      }
      jax.block_until_ready(batch)
      times["sample"] = time.perf_counter() - start
      start = time.perf_counter()
      if self.prepare is not None:
        batch.update(
            self.prepare(
                self.state.params,
                self.teacher_params,
                batch,
                stage.stage_key(0, i),
            )
        )
        jax.block_until_ready(batch)
      times["stage"] = time.perf_counter() - start
      start = time.perf_counter()
      self.state, metrics = self.step_fn(
          self.state, self.teacher_params, jax.device_put(batch, self.batch_sh)
      )
      jax.block_until_ready(metrics)
      times["update"] = time.perf_counter() - start
    times["total"] = sum(times.values())
    self.metrics = jax.device_get(metrics)
    return times


def run(args) -> None:
  """TOPD's step (and its NDS-only variant) against plain OPD, timed."""
  from opd_jax import testing  # pylint: disable=g-import-not-at-top

  student_dims, teacher_dims = STUDENT, TEACHER
  if args.quick:
    for k, v in QUICK.items():
      setattr(args, k, v)
    args.iters = min(args.iters, 1)
    student_dims, teacher_dims = QUICK_MODELS
  student = testing.random_model(_config(args, *student_dims), seed=0)
  teacher = testing.random_model(_config(args, *teacher_dims), seed=1)
  prompts = _prompts(args)
  topd = {"max_candidates": args.max_candidates, "window": args.window}
  variants = [
      ("opd (rkl)", "rkl", {}),
      ("topd", "topd", topd),
      ("topd nds only", "topd", {**topd, "lambda_traj": 0.0}),
  ]
  print(
      f"{protocol.machine_line()}; jax {jax.__version__}; B={args.batch}"
      f" P={args.prompt_len} T={args.new_tokens} V={args.vocab};"
      f" TOPD N={args.max_candidates} W={args.window}"
  )
  rows = []
  for label, name, cfg in variants:
    runner = Runner(args, name, cfg, student, teacher, prompts)
    runner.run(0)  # compiles the sampler and the stage
    runs = [runner.run(i + 1) for i in range(args.iters)]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    extra = {
        k: float(v)
        for k, v in runner.metrics.items()
        if k.startswith("topd/") or k == "rollout/len_mean"
    }
    rows.append({"variant": label, **med, **extra})
  base = rows[0]["total"]
  print(
      f"{'variant':16s} {'sample':>8s} {'stage':>8s} {'update':>8s}"
      f" {'total':>8s} {'x opd':>6s}"
  )
  for row in rows:
    print(
        f"{row['variant']:16s} {row['sample']:8.3f} {row['stage']:8.3f}"
        f" {row['update']:8.3f} {row['total']:8.3f}"
        f" {row['total'] / base:6.2f}"
    )
  for row in rows[1:]:
    print(
        f"  {row['variant']}: candidates {row.get('topd/candidates', 0):.0f},"
        f" divergent {row.get('topd/divergent', 0):.0f}, trajectory rows"
        f" {row.get('topd/traj_rows', 0):.0f}, rollout length"
        f" {row['rollout/len_mean']:.0f}"
    )
  print(f"(at end: {protocol.machine_line()})")
  if args.out:
    report = {
        "benchmark": "topd",
        "cpu": protocol.cpu_model(),
        "args": {k: v for k, v in vars(args).items() if k != "func"},
        "rows": rows,
    }
    with open(args.out, "w") as f:
      json.dump(report, f, indent=2)
