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
r"""The prepared accelerator check: parity, the long step, the sampler (one GPU).

  pip install -r requirements.txt "jax[cuda12]==0.10.2"   # or jax[cuda13]
  python -m benchmarks accelerator [--out accelerator.json]

One command, meant to finish within 8 minutes on one H100 or H200 (most of
it compiling: each figure's compile seconds are in the JSON), installing
nothing beyond the project's requirements and the CUDA wheel of the pinned
jax. Part 1 also wants torch, the CPU build (its CUDA build would bring
its own cuDNN beside jax's): `pip install torch==2.13.0 --index-url
https://download.pytorch.org/whl/cpu`. Each part runs in its own
try/except: a failing part leaves its error string in the JSON and the
others still run.
`--parts` and `--lengths` run a subset.

1. parity: tiny random HF models (Qwen3 GQA, Qwen2 with biases, Llama),
   our float32 logits on the device (dense attention, matmuls at 'highest'
   precision, so no TF32) against transformers' float32 forward on the
   CPU, in a child process with no JAX (`CUDA_VISIBLE_DEVICES=''`).
   Passes at 1e-4, the parity tests' tolerance. Also the same models with
   attention 'auto' (cuDNN, which attends in bfloat16: reported, not
   judged), and cuDNN against dense on left-padded rows. Without torch
   (it is in requirements-test.txt) the part is skipped and says so.
2. step: the Qwen3-0.6B-shaped student and teacher (`qwen3_0p6b` preset,
   random weights), method 'rkl' (reverse KL over every response token),
   B=8, P=64, T=2048 and T=8192, float32 parameters with bfloat16 compute,
   attention 'auto' (cuDNN) and remat 'auto' (full on accelerators), the
   step built by `plan_run` / `compile_step` as the trainer builds it. Per
   T: compile seconds, XLA's memory analysis of the compiled step, the
   step's median seconds over `--steps` runs after a warm-up one, the
   device's `peak_bytes_in_use`, and the achieved FLOP/s against the
   device's dense bf16 peak (`PEAKS`), with (PaLM's model-FLOPs count;
   rematerialised recomputation is not counted):
     FLOPs = 6 N_s B L + 2 N_t B L + 4 B L^2 n_h h (3 l_s + l_t),
   L = P + T the sequence, N_s / N_t the students' / teacher's matmul
   parameters (all of them but an untied input embedding), n_h the query
   heads, h the head dim, l_s / l_t the layers: 4 B L^2 n_h h per layer is
   the forward's q.k and p.v (causal skipping not credited), and the
   student runs it three times (forward, two in the backward).
3. sampler: the student in bfloat16 (the trainer's `compute_dtype`), B=32
   prompts of P=64 tokens, 1024 new tokens each (no EOS stops a row), the
   median of `--steps` rollouts after a compiling one: tokens/s against
   the HBM floor, the time to read every step's weights and filled KV
   cache once at the device's peak bandwidth:
     bytes = sum over steps i of (2 N_s + 2 * 2 l_s B K h (P + i)),
   (bfloat16 weights, keys and values of K kv heads), floor tokens/s =
   B * 1024 / (bytes / bandwidth).
4. One JSON file (`--out`) with every figure, the device and the versions;
   a short table on stdout.

The parts run as parity, sampler, step at T=2048, at T=8192: in increasing
memory, since `peak_bytes_in_use` is the process's peak so far (each part
is then its own). Random weights are made on the device, never loaded.

`--quick` runs every part at tiny shapes (tiny configs in a temporary
directory, T 16 / 32, 2 x 16 sampled tokens) on whatever JAX has, the CPU
included: the CI smoke test of this code path.
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np

# device_kind substring -> (dense bf16 FLOP/s, HBM bytes/s), first match
# wins (so 'GH200' before 'H200', the PCIe and NVL H100s before 'H100').
PEAKS = (
    ("GH200", 989e12, 4.0e12),
    ("H200", 989e12, 4.8e12),
    ("H100 PCIe", 756e12, 2.0e12),
    ("H100 NVL", 835e12, 3.9e12),
    ("H100", 989e12, 3.35e12),
    ("A100", 312e12, 2.0e12),
)
PARITY_ATOL = 1e-4
_FULL = dict(
    preset="qwen3_0p6b",
    batch=8,
    prompt=64,
    lengths=(2048, 8192),
    sample_batch=32,
    sample_tokens=1024,
    families=("qwen3", "qwen2", "llama"),
)
_QUICK = dict(
    preset="",
    batch=2,
    prompt=8,
    lengths=(16,),
    sample_batch=2,
    sample_tokens=16,
    families=("qwen3",),
)


def device_peaks(kind: str) -> tuple[float | None, float | None]:
  """(bf16 FLOP/s, HBM bytes/s) of a device kind, (None, None) if unknown."""
  for name, flops, bandwidth in PEAKS:
    if name in kind:
      return flops, bandwidth
  return None, None


def matmul_params(config) -> int:
  """Parameters that multiply: all but an untied input embedding."""
  untied = 0 if config.tie_embeddings else config.vocab_size * config.embed_dim
  return config.num_params() - untied


def step_flops(student, teacher, batch: int, length: int) -> float:
  """The step's model FLOPs (module docstring, part 2)."""
  attention = lambda c, passes: (
      4 * batch * length**2 * c.num_heads * c.head_dim * c.num_layers * passes
  )
  return (
      6 * matmul_params(student) * batch * length
      + 2 * matmul_params(teacher) * batch * length
      + attention(student, 3)
      + attention(teacher, 1)
  )


def sampler_bytes(config, batch: int, prompt: int, new_tokens: int) -> float:
  """Bytes a rollout must read at least (module docstring, part 3)."""
  kv_per_slot = 2 * 2 * config.num_layers * batch * config.num_kv_heads
  kv_per_slot *= config.head_dim
  filled = new_tokens * prompt + new_tokens * (new_tokens - 1) / 2
  return 2 * matmul_params(config) * new_tokens + kv_per_slot * filled


def _execution(config, length: int) -> dict[str, str]:
  """What `config`'s attention and remat settings run here at `length`."""
  from opd_jax.models import sequence_attention  # pylint: disable=g-import-not-at-top
  from opd_jax.models import transformer  # pylint: disable=g-import-not-at-top

  attention = config.attention
  if attention == "auto":
    platform = jax.default_backend()
    attention = sequence_attention.auto_implementation(platform, length)
  return {
      "attention": f"{config.attention} -> {attention}",
      "remat": (
          f"{config.remat} -> "
          + transformer.resolve_remat(config.remat, length)
      ),
  }


def _peak_bytes() -> int | None:
  stats = jax.local_devices()[0].memory_stats() or {}
  return stats.get("peak_bytes_in_use")


def _median_time(fn, n: int) -> tuple[float, float, list[float]]:
  """(first call s, median of the next n, all); each blocked on."""
  times = []
  for _ in range(n + 1):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return times[0], statistics.median(times[1:]), times


# -- the models --------------------------------------------------------------


def _tiny_pair(directory: str) -> dict:
  """config.json of a tiny Qwen3 student and teacher (`plan_run` reads
  only those)."""
  from opd_jax import testing  # pylint: disable=g-import-not-at-top
  from opd_jax.models import to_hf_config  # pylint: disable=g-import-not-at-top

  student = testing.tiny_config("qwen3", vocab_size=96)
  paths = {}
  for role, config in (
      ("student", student),
      ("teacher", student.replace(embed_dim=64, mlp_dim=128)),
  ):
    paths[role] = os.path.join(directory, role)
    os.makedirs(paths[role], exist_ok=True)
    with open(os.path.join(paths[role], "config.json"), "w") as f:
      json.dump(to_hf_config(config), f)
  return paths


def _config(shape: dict, models: dict, length: int, batch: int):
  """The trainer config of one measured shape."""
  from opd_jax.trainer.config import default_config  # pylint: disable=g-import-not-at-top

  c = default_config()
  if shape["preset"]:
    c.student, c.teacher, c.tokenizer = "", "", ""
    c.student_preset = c.teacher_preset = shape["preset"]
  else:
    c.student, c.teacher = models["student"], models["teacher"]
  c.method = "rkl"
  c.batch_size, c.max_prompt_len, c.max_new_tokens = (
      batch,
      shape["prompt"],
      length,
  )
  c.compute_dtype = "bfloat16"
  c.mesh.num_devices = 1
  return c


def _random_params(config, dtype, mesh, seed: int):
  """(graphdef, pure-dict params) of a random model, made on the device."""
  from flax import nnx  # pylint: disable=g-import-not-at-top

  from opd_jax import sharding  # pylint: disable=g-import-not-at-top
  from opd_jax.models import Transformer  # pylint: disable=g-import-not-at-top

  make = lambda: Transformer(config, dtype=dtype, rngs=nnx.Rngs(seed))
  graphdef, abstract = nnx.split(nnx.eval_shape(make))
  abstract = abstract.to_pure_dict()
  init = jax.jit(
      lambda: nnx.split(make())[1].to_pure_dict(),
      out_shardings=sharding.param_shardings(abstract, mesh),
  )
  return graphdef, init()


def _batch(config, b: int, p: int, t: int, seed: int) -> dict:
  """Random prompt + response ids; prompts left-padded by 0..b-1 tokens,
  every response token real (the step's whole length is trained)."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(1, config.vocab_size, (b, p + t)).astype(np.int32)
  pads = np.arange(p)[None, :] < np.arange(b)[:, None] % p
  mask = np.concatenate([~pads, np.ones((b, t), bool)], axis=1)
  return {
      "tokens": jnp.asarray(np.where(mask, tokens, 0)),
      "mask": jnp.asarray(mask),
      "response_mask": jnp.ones((b, t), bool),
      "sampler_logprobs": jnp.zeros((b, t), jnp.float32),
  }


# -- part 1: parity ----------------------------------------------------------

# The HF side: builds each tiny model (every tensor random, norms and biases
# perturbed, as tests/models/hf_helpers.py does), saves it, writes its float32
# logits. No JAX in this process.
_HF_CHILD = r"""
import json, sys
import numpy as np
import torch, transformers
cases = json.loads(sys.argv[1])
for case in cases:
  torch.manual_seed(case["seed"])
  config = transformers.AutoConfig.for_model(**case["hf_config"])
  model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("norm.weight"):
        p.copy_(1.0 + 0.1 * torch.randn_like(p))
      elif name.endswith("bias"):
        p.copy_(0.1 * torch.randn_like(p))
  model.eval().save_pretrained(case["dir"])
  tokens = torch.as_tensor(np.load(case["tokens"]), dtype=torch.long)
  with torch.no_grad():
    logits = model(tokens).logits.float().numpy()
  np.save(case["logits"], logits)
print(json.dumps({"torch": torch.__version__, "transformers": transformers.__version__}))
"""


def parity(args, shape: dict) -> dict:
  """Part 1 (module docstring)."""
  if importlib.util.find_spec("torch") is None:
    return {"skipped": "torch is not installed (requirements-test.txt)"}
  from flax import nnx  # pylint: disable=g-import-not-at-top

  from opd_jax import testing  # pylint: disable=g-import-not-at-top
  from opd_jax.models import load_hf, to_hf_config  # pylint: disable=g-import-not-at-top
  from opd_jax.models import sequence_attention  # pylint: disable=g-import-not-at-top

  out = {"atol": PARITY_ATOL, "models": []}
  with tempfile.TemporaryDirectory() as directory:
    cases = []
    for i, family in enumerate(shape["families"]):
      config = testing.tiny_config(family, gqa=True)
      tokens = np.random.default_rng(i).integers(0, config.vocab_size, (2, 40))
      case = {
          "family": family,
          "seed": i,
          "hf_config": to_hf_config(config),
          "dir": os.path.join(directory, family),
          "tokens": os.path.join(directory, f"{family}_tokens.npy"),
          "logits": os.path.join(directory, f"{family}_logits.npy"),
      }
      np.save(case["tokens"], tokens)
      cases.append(case)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, "-c", _HF_CHILD, json.dumps(cases)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    if proc.returncode:
      raise RuntimeError(
          f"the transformers child failed: {proc.stderr[-2000:]}"
      )
    out["peer"] = json.loads(proc.stdout.strip().splitlines()[-1])

    def logits(model, tokens, mask=None):
      return nnx.jit(lambda m, x, y: m(x, attention_mask=y).logits)(
          model, tokens, mask
      )

    for case in cases:
      tokens = jnp.asarray(np.load(case["tokens"]))
      ref = np.load(case["logits"])
      model = load_hf(case["dir"])
      auto = sequence_attention.auto_implementation(
          jax.default_backend(), tokens.shape[1]
      )
      row = {"family": case["family"], "auto_is": auto}
      set_attention = lambda name: model.set_execution(attention=name)
      with jax.default_matmul_precision("highest"):
        dense = logits(set_attention("dense"), tokens)
        row["dense_max_abs_diff"] = float(np.abs(np.asarray(dense) - ref).max())
        if auto != "dense":  # else the same program again
          out_auto = logits(set_attention("auto"), tokens)
          row["auto_max_abs_diff"] = float(
              np.abs(np.asarray(out_auto) - ref).max()
          )
          # Left-padded rows: 'auto' against dense on the real tokens.
          mask = jnp.arange(tokens.shape[1])[None, :] >= jnp.array([[0], [13]])
          a = logits(set_attention("auto"), tokens, mask)
          d = logits(set_attention("dense"), tokens, mask)
          diff = jnp.where(mask[..., None], jnp.abs(a - d), 0.0)
          row["auto_vs_dense_left_padded"] = float(diff.max())
      row["passed"] = row["dense_max_abs_diff"] <= PARITY_ATOL
      out["models"].append(row)
  out["passed"] = all(r["passed"] for r in out["models"])
  return out


# -- part 2: the step --------------------------------------------------------


def train_step(args, shape: dict, models: dict) -> list[dict]:
  """Part 2 (module docstring): one row per T; a failing T is its error."""
  rows = []
  for t in shape["lengths"]:
    try:
      rows.append(_one_step(args, shape, models, t))
    except Exception as e:  # pylint: disable=broad-except
      rows.append({"response_len": t, "error": _error(e)})
    _free()
  return rows


def _one_step(args, shape: dict, models: dict, t: int) -> dict:
  from opd_jax.trainer import plan_run, to_run_config  # pylint: disable=g-import-not-at-top

  b, p = shape["batch"], shape["prompt"]
  c = _config(shape, models, t, b)
  plan = plan_run(to_run_config(c), allow_preset_fallback=True)
  scfg, tcfg = plan.student_config, plan.teacher_config
  row = {
      "response_len": t,
      "prompt_len": p,
      "batch": b,
      **_execution(scfg, p + t),
      "student_params": scfg.num_params(),
      "teacher_params": tcfg.num_params(),
  }
  start = time.perf_counter()
  with jax.set_mesh(plan.mesh):
    sgraph, params = _random_params(scfg, plan.dtype, plan.mesh, 0)
    tgraph, teacher = _random_params(tcfg, plan.dtype, plan.mesh, 1)
    state_abstract = plan.abstract_state(jax.eval_shape(lambda: params))
    batch = _batch(scfg, b, p, t, seed=t)
    fn, state_sh, teacher_sh, batch_sh = plan.compile_step(
        state_abstract,
        teacher,
        jax.eval_shape(lambda: batch),
        student_graphdef=sgraph,
        teacher_graphdef=tgraph,
    )
    state = jax.jit(plan.init_state, out_shardings=state_sh)(params)
    del params
    teacher = jax.device_put(teacher, teacher_sh)
    batch = jax.device_put(batch, {k: batch_sh[k] for k in batch})
    row["setup_s"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    compiled = fn.lower(state, teacher, batch).compile()
    row["compile_s"] = round(time.perf_counter() - start, 1)
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    row["xla_flops"] = float((cost or {}).get("flops", 0.0)) or None
    mem = compiled.memory_analysis()
    if mem is not None:
      row["compiled_bytes"] = {
          "arguments": int(mem.argument_size_in_bytes),
          "temporaries": int(mem.temp_size_in_bytes),
          "outputs": int(mem.output_size_in_bytes),
          "aliased": int(mem.alias_size_in_bytes),
      }
    holder = {"state": state}
    del state

    def run():
      holder["state"], metrics = compiled(holder["state"], teacher, batch)
      return metrics

    first, median, times = _median_time(run, args.steps)
    metrics = jax.device_get(run())
  row.update(
      first_s=round(first, 3),
      step_s=round(median, 4),
      all_s=[round(x, 4) for x in times],
      peak_bytes_in_use=_peak_bytes(),
      metrics={
          k: float(v)
          for k, v in metrics.items()
          if np.ndim(v) == 0 and k.startswith(("loss", "grad"))
      },
  )
  flops = step_flops(scfg, tcfg, b, p + t)
  row["model_flops"] = flops
  row["flop_s"] = flops / median
  peak = device_peaks(jax.local_devices()[0].device_kind)[0]
  row["fraction_of_bf16_peak"] = None if peak is None else flops / median / peak
  return row


# -- part 3: the sampler -----------------------------------------------------


def sampler(args, shape: dict, models: dict) -> dict:
  """Part 3 (module docstring)."""
  from flax import nnx  # pylint: disable=g-import-not-at-top

  from opd_jax.rollouts import Sampling, sample  # pylint: disable=g-import-not-at-top
  from opd_jax.trainer import plan_run, to_run_config  # pylint: disable=g-import-not-at-top

  b, p, n = shape["sample_batch"], shape["prompt"], shape["sample_tokens"]
  c = _config(shape, models, n, b)
  plan = plan_run(
      to_run_config(c), allow_preset_fallback=True, need_teacher=False
  )
  config = plan.student_config
  with jax.set_mesh(plan.mesh):
    graphdef, params = _random_params(config, plan.dtype, plan.mesh, 0)
    model = nnx.merge(graphdef, params)
    batch = _batch(config, b, p, 0, seed=1)
    prompt, mask = batch["tokens"][:, :p], batch["mask"][:, :p]

    def run():
      run.calls += 1
      return sample(
          model,
          prompt,
          mask,
          jax.random.key(run.calls),
          max_new_tokens=n,
          sampling=Sampling(temperature=1.0),
          eos_ids=(),  # every row runs the whole length
          compute_dtype=plan.compute_dtype,
      ).response

    run.calls = 0
    first, median, times = _median_time(run, args.steps)
  kind = jax.local_devices()[0].device_kind
  bandwidth = device_peaks(kind)[1]
  floor_bytes = sampler_bytes(config, b, p, n)
  out = {
      "batch": b,
      "prompt_len": p,
      "new_tokens": n,
      "prefill_attention": _execution(config, p)["attention"],
      "first_s": round(first, 2),
      "rollout_s": round(median, 4),
      "all_s": [round(x, 4) for x in times],
      "tokens_per_s": b * n / median,
      "floor_bytes": floor_bytes,
      "peak_bytes_in_use": _peak_bytes(),
  }
  if bandwidth is not None:
    floor_s = floor_bytes / bandwidth
    out.update(
        floor_s=floor_s,
        floor_tokens_per_s=b * n / floor_s,
        fraction_of_floor=floor_s / median,
    )
  return out


# -- the run -----------------------------------------------------------------


def _error(e: BaseException) -> str:
  tail = traceback.format_exception(e)[-6:]
  return f"{type(e).__name__}: {e}\n{''.join(tail)}"[-4000:]


def _free() -> None:
  import gc  # pylint: disable=g-import-not-at-top

  gc.collect()


def _device() -> dict:
  import jaxlib  # pylint: disable=g-import-not-at-top

  d = jax.local_devices()[0]
  flops, bandwidth = device_peaks(d.device_kind)
  stats = d.memory_stats() or {}
  return {
      "platform": d.platform,
      "device_kind": d.device_kind,
      "device_count": jax.local_device_count(),
      "bytes_limit": stats.get("bytes_limit"),
      "bf16_peak_flop_s": flops,
      "hbm_bytes_s": bandwidth,
      "jax": jax.__version__,
      "jaxlib": jaxlib.__version__,
  }


def _gib(x) -> str:
  return "-" if x is None else f"{x / 2**30:.2f}"


def _print_table(report: dict) -> None:
  d = report["device"]
  print(
      f"device: {d['device_kind']} ({d['platform']}), bf16 peak"
      f" {d['bf16_peak_flop_s']}, HBM {d['hbm_bytes_s']} B/s, jax {d['jax']}"
  )
  par = report["parity"]
  if "models" in par:
    for r in par["models"]:
      auto = (
          f"auto ({r['auto_is']}) {r['auto_max_abs_diff']:.2e}, vs dense"
          f" left-padded {r['auto_vs_dense_left_padded']:.2e}"
          if "auto_max_abs_diff" in r
          else f"auto is {r['auto_is']} here"
      )
      print(
          f"parity {r['family']}: dense max|diff| {r['dense_max_abs_diff']:.2e}"
          f" ({'pass' if r['passed'] else 'FAIL'} at {par['atol']}); {auto}"
      )
  else:
    print(f"parity: {par.get('skipped') or par.get('error', '')[:300]}")
  print(
      "| T | step s | compile s | peak GiB | compiled total GiB | TFLOP/s |"
      " of bf16 peak |"
  )
  print("|---|---|---|---|---|---|---|")
  for r in report["step"] if isinstance(report["step"], list) else []:
    if "error" in r:
      print(
          f"| {r['response_len']} | error: {r['error'].splitlines()[0][:120]} |"
      )
      continue
    cb = r.get("compiled_bytes") or {}
    total = (
        cb["arguments"] + cb["temporaries"] + cb["outputs"] - cb["aliased"]
        if cb
        else None
    )
    frac = r["fraction_of_bf16_peak"]
    print(
        f"| {r['response_len']} | {r['step_s']:.3f} | {r['compile_s']} |"
        f" {_gib(r['peak_bytes_in_use'])} | {_gib(total)} |"
        f" {r['flop_s'] / 1e12:.1f} |"
        f" {'-' if frac is None else f'{frac:.2f}'} |"
    )
  if isinstance(report["step"], dict):
    print(f"step: {report['step'].get('error', '')[:300]}")
  s = report["sampler"]
  if "tokens_per_s" in s:
    floor, frac = s.get("floor_tokens_per_s"), s.get("fraction_of_floor")
    floor = "-" if floor is None else f"{floor:.0f}"
    frac = "-" if frac is None else f"{frac:.2f}"
    print(
        f"sampler {s['batch']}x{s['new_tokens']}: {s['tokens_per_s']:.0f}"
        f" tokens/s, HBM floor {floor} tokens/s ({frac} of it)"
    )
  else:
    print(f"sampler: {s.get('error', '')[:300]}")


def run(args) -> None:
  """Parity, the long training step and the sampler on this device; JSON."""
  shape = dict(_QUICK if args.quick else _FULL)
  if args.lengths:
    shape["lengths"] = tuple(args.lengths)
  start = time.perf_counter()
  report = {"benchmark": "accelerator", "quick": bool(args.quick)}
  try:
    report["device"] = _device()
  except Exception as e:  # pylint: disable=broad-except
    report["device"] = {"error": _error(e)}
  with tempfile.TemporaryDirectory() as directory:
    models = {} if shape["preset"] else _tiny_pair(directory)
    parts = (
        # In increasing memory, so that each part's `peak_bytes_in_use`
        # (the process's peak so far) is its own.
        ("parity", lambda: parity(args, shape)),
        ("sampler", lambda: sampler(args, shape, models)),
        ("step", lambda: train_step(args, shape, models)),
    )
    for name, part in parts:
      if name not in args.parts:
        report[name] = {"skipped": "not in --parts"}
        continue
      t0 = time.perf_counter()
      try:
        report[name] = part()
      except Exception as e:  # pylint: disable=broad-except
        report[name] = {"error": _error(e)}
      report[f"{name}_seconds"] = round(time.perf_counter() - t0, 1)
      _free()
  report["seconds"] = round(time.perf_counter() - start, 1)
  with open(args.out, "w") as f:
    json.dump(report, f, indent=1)
  try:
    _print_table(report)
  except Exception as e:  # pylint: disable=broad-except
    print(f"(table: {_error(e)})")
  print(f"wrote {args.out} ({report['seconds']} s)")


def add_parser(subparsers) -> None:
  p = subparsers.add_parser("accelerator", help=run.__doc__)
  p.add_argument("--out", default="accelerator.json", help="the JSON report")
  p.add_argument(
      "--parts",
      nargs="+",
      default=["parity", "sampler", "step"],
      choices=["parity", "sampler", "step"],
  )
  p.add_argument("--steps", type=int, default=3, help="timed runs per figure")
  p.add_argument(
      "--lengths",
      type=int,
      nargs="+",
      default=None,
      help="the step's response lengths T (default 2048 8192)",
  )
  p.add_argument(
      "--quick",
      action="store_true",
      help="tiny shapes on any backend, the CPU included (a smoke test)",
  )
  p.set_defaults(func=run, quick_rows=None, quick_fills=None)
