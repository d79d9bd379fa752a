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
import os
import statistics
import subprocess
import sys
import tempfile
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


# ------------------------------------------------- step / rollout vs peers.
# Both sides load the same HF checkpoints (written once with `save_hf`) and
# the same prompts. The PyTorch peer runs in a child process (this script with
# `--_peer`) started with the allocator variables below, and the two sides
# alternate one iteration at a time, so that load from other processes on the
# machine falls on both alike.

PEER_ENV = {  # glibc malloc tunables: torch page-faults a third less (MACHINE_NOTES)
    "MALLOC_MMAP_THRESHOLD_": "17179869184",
    "MALLOC_TRIM_THRESHOLD_": "17179869184",
    "MALLOC_TOP_PAD_": "1073741824",
}


def _bench_configs(args):
  """Qwen2-style student and teacher ModelConfigs from the flags."""
  from opd_jax.models import ModelConfig  # pylint: disable=g-import-not-at-top

  def make(d, layers, heads, kv, mlp):
    return ModelConfig(
        family="qwen2", vocab_size=args.vocab, embed_dim=d, num_layers=layers,
        num_heads=heads, num_kv_heads=kv, head_dim=d // heads, mlp_dim=mlp,
        qkv_bias=True, max_position_embeddings=4096, pad_token_id=0,
    )

  return (make(args.student_dim, args.student_layers, args.student_heads,
               args.student_kv_heads, args.student_mlp),
          make(args.teacher_dim, args.teacher_layers, args.teacher_heads,
               args.teacher_kv_heads, args.teacher_mlp))


def _write_inputs(args, directory: str) -> None:
  """Student and teacher HF checkpoints and the prompts, in `directory`."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  from opd_jax import testing  # pylint: disable=g-import-not-at-top
  from opd_jax.models import save_hf  # pylint: disable=g-import-not-at-top

  scfg, tcfg = _bench_configs(args)
  save_hf(testing.random_model(scfg, seed=0), os.path.join(directory, "student"))
  save_hf(testing.random_model(tcfg, seed=1), os.path.join(directory, "teacher"))
  rng = np.random.default_rng(args.seed)
  b, p = args.batch, args.prompt_len
  # Prompts of about `prompt_len` tokens, left-padded with id 0.
  lengths = p - rng.integers(0, max(1, p // 12), b)
  lengths[0] = p
  prompt = rng.integers(1, args.vocab, (b, p)).astype(np.int32)
  mask = np.arange(p)[None, :] >= (p - lengths)[:, None]
  np.save(os.path.join(directory, "prompt.npy"), np.where(mask, prompt, 0))
  np.save(os.path.join(directory, "prompt_mask.npy"), mask)


def _load_prompts(directory: str):
  import numpy as np  # pylint: disable=g-import-not-at-top

  return (np.load(os.path.join(directory, "prompt.npy")),
          np.load(os.path.join(directory, "prompt_mask.npy")))


def _cast_tree(tree, dtype):
  return jax.tree.map(
      lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating)
      else x, tree)


def _ours_rollout(args, directory: str, dtype: str) -> Callable[[int], float]:
  """One call of `rollouts.sample` per iteration; returns its seconds."""
  from opd_jax.models import load_hf  # pylint: disable=g-import-not-at-top
  from opd_jax.rollouts import Sampling, sample  # pylint: disable=g-import-not-at-top

  model = load_hf(os.path.join(directory, "student"), dtype=jnp.dtype(dtype))
  prompt, mask = (jnp.asarray(x) for x in _load_prompts(directory))
  sampling = Sampling(temperature=args.temperature)

  def run(i: int) -> float:
    start = time.perf_counter()
    out = sample(model, prompt, mask, jax.random.key(i),
                 max_new_tokens=args.new_tokens, sampling=sampling)
    jax.block_until_ready(out.response)
    return time.perf_counter() - start

  return run


def _ours_step(args, directory: str) -> Callable[[int], float]:
  """Rollout from the current student + one jitted GKD step; returns seconds.

  Assembled as `trainer.loop.Trainer` does (`_batch` and `compile_step`).
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top

  from opd_jax import methods  # pylint: disable=g-import-not-at-top
  from opd_jax.models import load_hf  # pylint: disable=g-import-not-at-top
  from opd_jax.rollouts import Sampling, sample  # pylint: disable=g-import-not-at-top
  from opd_jax.trainer import state as train_state  # pylint: disable=g-import-not-at-top
  from opd_jax.trainer import step as steps  # pylint: disable=g-import-not-at-top

  student = load_hf(os.path.join(directory, "student"))
  teacher = load_hf(os.path.join(directory, "teacher"))
  prompt, prompt_mask = (jnp.asarray(x) for x in _load_prompts(directory))
  b, p = prompt.shape
  t = args.new_tokens
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1, 1),
                           ("data", "fsdp", "tensor"))
  graphdef, params = nnx.split(student)
  teacher_graphdef, teacher_params = nnx.split(teacher)
  teacher_params = teacher_params.to_pure_dict()
  optimizer = train_state.make_optimizer(
      learning_rate=args.learning_rate, total_steps=10_000, clip_norm=1.0)
  key = jax.random.PRNGKey(args.seed)
  init = lambda p: train_state.init_state(p, optimizer, key)
  params = params.to_pure_dict()
  abstract_batch = {
      "tokens": jax.ShapeDtypeStruct((b, p + t), jnp.int32),
      "mask": jax.ShapeDtypeStruct((b, p + t), jnp.bool_),
      "response_mask": jax.ShapeDtypeStruct((b, t), jnp.bool_),
      "sampler_logprobs": jax.ShapeDtypeStruct((b, t), jnp.float32),
  }
  method = methods.build_method(
      "gkd", {"beta": args.beta, "loss_temperature": args.temperature})
  step_kwargs = {}
  if args.dtype != "float32":
    step_kwargs["compute_dtype"] = jnp.dtype(args.dtype)
  with jax.set_mesh(mesh):
    step_fn, state_sh, _, batch_sh = steps.compile_step(
        mesh, jax.eval_shape(init, params), teacher_params, abstract_batch,
        student_graphdef=graphdef, teacher_graphdef=teacher_graphdef,
        method=method, optimizer=optimizer, **step_kwargs)
    holder = {"state": jax.jit(init, out_shardings=state_sh)(params)}
  sampling = Sampling(temperature=args.temperature)
  sample_dtype = None if args.dtype == "float32" else jnp.dtype(args.dtype)

  def run(i: int) -> float:
    start = time.perf_counter()
    with jax.set_mesh(mesh):
      state = holder["state"]
      policy = nnx.merge(graphdef, state.params)
      kwargs = {} if sample_dtype is None else {"compute_dtype": sample_dtype}
      r = sample(policy, prompt, prompt_mask, jax.random.key(i),
                 max_new_tokens=t, sampling=sampling, **kwargs)
      batch = jax.device_put(
          {"tokens": r.tokens, "mask": r.mask,
           "response_mask": r.response_mask, "sampler_logprobs": r.logprobs},
          batch_sh)
      state, metrics = step_fn(state, teacher_params, batch)
      jax.block_until_ready(metrics)
      holder["state"] = state
    return time.perf_counter() - start

  return run


class _Peer:
  """The PyTorch side in a child process; `run()` times one iteration there."""

  def __init__(self, argv: list[str]):
    env = dict(os.environ, **PEER_ENV)
    self.proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--_peer", *argv],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
    self.info = self._read()  # sent once set up

  def _read(self) -> dict:
    for line in self.proc.stdout:
      if line.startswith("@@"):
        return json.loads(line[2:])
    raise RuntimeError(f"peer exited with {self.proc.wait()}")

  def run(self, i: int) -> float:
    del i
    self.proc.stdin.write("go\n")
    self.proc.stdin.flush()
    return self._read()["seconds"]

  def close(self) -> None:
    if self.proc.poll() is None:
      self.proc.stdin.close()
      self.proc.wait()


def _peer_main(argv: list[str]) -> None:
  """The child: sets up TRL / HF and answers each `go` line with a timing."""
  p = argparse.ArgumentParser()
  p.add_argument("mode", choices=["step", "rollout"])
  p.add_argument("--dir", required=True)
  p.add_argument("--dtype", default="float32")
  p.add_argument("--new-tokens", type=int, required=True)
  p.add_argument("--temperature", type=float, default=1.0)
  p.add_argument("--beta", type=float, default=0.5)
  p.add_argument("--learning-rate", type=float, default=1e-5)
  p.add_argument("--iterations", type=int, required=True)
  p.add_argument("--threads", type=int, default=0)
  a = p.parse_args(argv)
  import torch  # pylint: disable=g-import-not-at-top

  if a.threads:
    torch.set_num_threads(a.threads)

  def send(obj):
    sys.stdout.write("@@" + json.dumps(obj) + "\n")
    sys.stdout.flush()

  def wait_go():
    if sys.stdin.readline().strip() != "go":
      sys.exit(0)

  prompt, mask = (torch.from_numpy(x.astype("int64"))
                  for x in _load_prompts(a.dir))
  info = {"torch": torch.__version__, "threads": torch.get_num_threads()}
  if a.mode == "rollout":
    _peer_rollout(a, prompt, mask, info, send, wait_go)
  else:
    _peer_step(a, prompt, mask, info, send, wait_go)


def _peer_rollout(a, prompt, mask, info, send, wait_go) -> None:
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  model = transformers.AutoModelForCausalLM.from_pretrained(
      os.path.join(a.dir, "student"), dtype=getattr(torch, a.dtype)).eval()
  send(dict(info, transformers=transformers.__version__))
  for _ in range(a.iterations):
    wait_go()
    start = time.perf_counter()
    with torch.inference_mode():
      out = model.generate(
          input_ids=prompt, attention_mask=mask, max_new_tokens=a.new_tokens,
          do_sample=True, top_k=0, top_p=1.0, temperature=a.temperature,
          use_cache=True, pad_token_id=0)
    seconds = time.perf_counter() - start
    assert out.shape[1] == prompt.shape[1] + a.new_tokens, out.shape
    send({"seconds": seconds})


def _peer_step(a, prompt, mask, info, send, wait_go) -> None:
  import tempfile  # pylint: disable=g-import-not-at-top

  import datasets  # pylint: disable=g-import-not-at-top
  import tokenizers  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  import trl  # pylint: disable=g-import-not-at-top
  from trl.experimental.gkd import GKDConfig, GKDTrainer  # pylint: disable=g-import-not-at-top

  # GKD only needs the tokenizer's pad id: a one-word vocabulary does.
  tok = transformers.PreTrainedTokenizerFast(
      tokenizer_object=tokenizers.Tokenizer(
          tokenizers.models.WordLevel({"<pad>": 0}, unk_token="<pad>")),
      pad_token="<pad>")
  student = transformers.AutoModelForCausalLM.from_pretrained(
      os.path.join(a.dir, "student"))
  teacher = transformers.AutoModelForCausalLM.from_pretrained(
      os.path.join(a.dir, "teacher"))
  labels = prompt.clone()

  def collate(examples):
    del examples  # every batch is the benchmark's prompts
    return {"prompts": prompt, "prompt_attention_mask": mask,
            "input_ids": prompt, "attention_mask": mask,
            "labels": labels.masked_fill(mask == 0, -100)}

  class Clock(transformers.TrainerCallback):

    def on_step_begin(self, *unused, **kwargs):
      wait_go()
      self.start = time.perf_counter()

    def on_step_end(self, *unused, **kwargs):
      send({"seconds": time.perf_counter() - self.start})

  config = GKDConfig(
      output_dir=tempfile.mkdtemp(), per_device_train_batch_size=len(prompt),
      max_steps=a.iterations, learning_rate=a.learning_rate, lmbda=1.0,
      beta=a.beta, temperature=a.temperature, max_new_tokens=a.new_tokens,
      gradient_checkpointing=False, use_cpu=True, report_to="none",
      save_strategy="no", logging_strategy="no", disable_dropout=True,
      dataloader_num_workers=0, seed=0)
  trainer = GKDTrainer(
      model=student, teacher_model=teacher, args=config,
      train_dataset=datasets.Dataset.from_dict(
          {"i": list(range(len(prompt) * a.iterations))}),
      data_collator=collate, processing_class=tok, callbacks=[Clock()])
  send(dict(info, trl=trl.__version__,
            gradient_checkpointing=trainer.args.gradient_checkpointing,
            use_cache=trainer.generation_config.use_cache))
  trainer.train()


def _side_by_side(args, ours, peer_argv, rows) -> dict:
  """Alternates ours / peer iterations; medians after `warmup` of each."""
  n = args.warmup + args.steps
  peer = None if args.no_peer else _Peer(peer_argv + ["--iterations", str(n)])
  times = {"ours": [], "peer": []}
  try:
    for i in range(n):
      times["ours"].append(ours(i))
      if peer is not None:
        times["peer"].append(peer.run(i))
  finally:
    if peer is not None:
      peer.close()
  tokens = args.batch * args.new_tokens
  out = {"peer_info": None if peer is None else peer.info}
  for side, ts in times.items():
    if ts:
      s = statistics.median(ts[args.warmup:])
      out[side] = {"seconds": round(s, 4), "tokens_per_s": round(tokens / s, 1),
                   "first_s": round(ts[0], 2),
                   "all_s": [round(x, 3) for x in ts]}
  if "peer" in out:
    out["ratio"] = round(out["ours"]["tokens_per_s"]
                         / out["peer"]["tokens_per_s"], 2)
  rows.append(out)
  return out


def _print_table(title, rows, names) -> None:
  print(title)
  print("| setting | side | s / iteration (median) | tokens/s | ratio |")
  print("|---|---|---|---|---|")
  for row, (label, ours_name, peer_name) in zip(rows, names):
    print(f"| {label} | {ours_name} | {row['ours']['seconds']:.3f} |"
          f" {row['ours']['tokens_per_s']:.0f} | {row.get('ratio', '-')} |")
    if "peer" in row:
      print(f"| {label} | {peer_name} | {row['peer']['seconds']:.3f} |"
            f" {row['peer']['tokens_per_s']:.0f} | 1 |")


def _header(args, kind: str) -> None:
  scfg, tcfg = _bench_configs(args)
  print(f"{kind}: backend={jax.default_backend()} B={args.batch}"
        f" prompt={args.prompt_len} new_tokens={args.new_tokens}"
        f" V={args.vocab} temperature={args.temperature}"
        f" student={scfg.num_params() / 1e6:.1f}M"
        f" teacher={tcfg.num_params() / 1e6:.1f}M"
        f" warmup={args.warmup} steps={args.steps}"
        f" load_avg={os.getloadavg()[0]:.2f}")


def _peer_common(args, directory: str) -> list[str]:
  return ["--dir", directory, "--new-tokens", str(args.new_tokens),
          "--temperature", str(args.temperature),
          "--threads", str(args.peer_threads)]


def rollout(args: argparse.Namespace) -> None:
  """Our jitted sampler vs transformers `generate`, same model and prompts."""
  _header(args, "rollout")
  rows, names = [], []
  with tempfile.TemporaryDirectory() as directory:
    _write_inputs(args, directory)
    for dtype in args.dtypes:
      _side_by_side(args, _ours_rollout(args, directory, dtype),
                    ["rollout", "--dtype", dtype]
                    + _peer_common(args, directory), rows)
      rows[-1]["dtype"] = dtype
      names.append((dtype, "opd_jax sample", "HF generate"))
  _print_table("", rows, names)
  print("tokens/s = B x new_tokens / seconds of one whole rollout (prefill"
        " included); ratio = opd_jax / HF, same dtype on both sides.")
  print(json.dumps(dict(
      benchmark="rollout", batch=args.batch, prompt_len=args.prompt_len,
      new_tokens=args.new_tokens, vocab=args.vocab,
      rows=[{k: v for k, v in r.items()} for r in rows])))


def step(args: argparse.Namespace) -> None:
  """One on-policy GKD step (rollout + update) vs TRL's GKDTrainer."""
  _header(args, "step")
  rows = []
  with tempfile.TemporaryDirectory() as directory:
    _write_inputs(args, directory)
    _side_by_side(args, _ours_step(args, directory),
                  ["step", "--beta", str(args.beta), "--learning-rate",
                   str(args.learning_rate)] + _peer_common(args, directory),
                  rows)
  rows[0]["dtype"] = args.dtype
  _print_table("", rows, [(f"ours {args.dtype}, TRL float32",
                           "opd_jax rollout + step", "TRL GKDTrainer")])
  print("tokens/s = B x new_tokens / seconds of one on-policy step (rollout,"
        " student + teacher forward, JSD(beta) backward, AdamW);"
        " ratio = opd_jax / TRL.")
  print(json.dumps(dict(
      benchmark="step", batch=args.batch, prompt_len=args.prompt_len,
      new_tokens=args.new_tokens, vocab=args.vocab, dtype=args.dtype,
      beta=args.beta, rows=rows)))


def _add_peer_flags(p, *, quick_note: str) -> None:
  p.add_argument("--batch", type=int, default=4)
  p.add_argument("--prompt-len", type=int, default=100)
  p.add_argument("--new-tokens", type=int, default=128)
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
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--no-peer", action="store_true",
                 help="time our side only (no torch / TRL needed)")
  p.add_argument("--quick", action="store_true", help=quick_note)
  p.add_argument("--peer-threads", type=int, default=0,
                 help="torch.set_num_threads in the peer (0: torch's default)")


_QUICK = dict(batch=2, prompt_len=8, new_tokens=8, vocab=128, student_dim=32,
              student_layers=1, student_heads=2, student_kv_heads=1,
              student_mlp=64, teacher_dim=64, teacher_layers=1,
              teacher_heads=2, teacher_kv_heads=1, teacher_mlp=64, warmup=1,
              steps=1, no_peer=True)


def _quick(func):
  def wrapped(args):
    if args.quick:
      for k, v in _QUICK.items():
        setattr(args, k, v)
    func(args)
  return wrapped


def _add_rollout_parser(subparsers) -> None:
  p = subparsers.add_parser("rollout", help=rollout.__doc__)
  _add_peer_flags(p, quick_note="tiny shapes, our side only (a smoke test)")
  p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"],
                 help="one row per dtype, the same on both sides")
  p.set_defaults(func=_quick(rollout))


def _add_step_parser(subparsers) -> None:
  p = subparsers.add_parser("step", help=step.__doc__)
  _add_peer_flags(p, quick_note="tiny shapes, our side only (a smoke test)")
  p.add_argument("--beta", type=float, default=0.5, help="JSD beta (TRL's)")
  p.add_argument("--learning-rate", type=float, default=1e-5)
  p.add_argument(
      "--dtype", default="float32", choices=["float32", "bfloat16"],
      help="our matmul operands (float32 accumulation either way); TRL runs"
      " float32")
  p.set_defaults(func=_quick(step))


SUBCOMMANDS = {
    "memory": _add_memory_parser,
    "step": _add_step_parser,
    "rollout": _add_rollout_parser,
}


def main() -> None:
  if len(sys.argv) > 1 and sys.argv[1] == "--_peer":  # the PyTorch child
    _peer_main(sys.argv[2:])
    return
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  subparsers = parser.add_subparsers(dest="command", required=True)
  for add_parser in SUBCOMMANDS.values():
    add_parser(subparsers)
  args = parser.parse_args()
  args.func(args)


if __name__ == "__main__":
  main()
