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
"""The benchmark package's PyTorch peer imports no JAX (it runs beside ours)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_peer_and_protocol_import_no_jax():
  code = (
      "import sys, benchmarks.peer, benchmarks.protocol;"
      " assert 'jax' not in sys.modules, 'jax imported';"
      " assert 'opd_jax' not in sys.modules, 'opd_jax imported'"
  )
  env = dict(os.environ, PYTHONPATH=_ROOT)
  subprocess.run([sys.executable, "-c", code], check=True, cwd=_ROOT, env=env)


@pytest.mark.slow
def test_step_bench_runs_through_the_trainer_plan():
  # A smoke run at tiny shapes: the bench builds its step from plan_run, as
  # the trainer does, and reports the compiled update's FLOPs.
  env = dict(os.environ, PYTHONPATH=_ROOT, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-m", "benchmarks", "step", "--quick"],
      cwd=_ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads(proc.stdout.strip().splitlines()[-1])
  assert report["benchmark"] == "step"
  assert report["rows"][0]["update_flops"] > 0
  # The long rows and what their targets read: growth 256 -> 512, the
  # update's fraction of the float32 matmul rate measured in the same run,
  # user vs system seconds per step.
  assert [r["new_tokens"] for r in report["rows"]] == [256, 512]
  assert report["rates"]["matmul_float32_gflop_s"] > 0
  assert report["cpu"] in proc.stdout
  assert set(report["targets"]) >= {
      "growth_256_to_512",
      "fraction_at_512",
      "system_share",
  }
  usage = report["rows"][1]["ours_usage"]
  assert usage["user_s"] > 0 and usage["system_s"] >= 0
  assert "target: 256 -> 512 new tokens costs" in proc.stdout


def _tiny_llama():
  """2 layers, D 4, 2 query heads of 2 over 1 KV head, MLP 8, V 10."""
  from opd_jax.models import ModelConfig  # pylint: disable=g-import-not-at-top

  return ModelConfig(
      family="llama",
      vocab_size=10,
      embed_dim=4,
      num_layers=2,
      num_heads=2,
      num_kv_heads=1,
      head_dim=2,
      mlp_dim=8,
  )


def test_accelerator_figures_by_hand():
  from benchmarks import accelerator  # pylint: disable=g-import-not-at-top

  assert accelerator.device_peaks("NVIDIA H200") == (989e12, 4.8e12)
  assert accelerator.device_peaks("NVIDIA GH200 480GB")[1] == 4.0e12
  assert accelerator.device_peaks("NVIDIA H100 80GB HBM3") == (989e12, 3.35e12)
  assert accelerator.device_peaks("NVIDIA H100 PCIe")[1] == 2.0e12
  assert accelerator.device_peaks("cpu") == (None, None)
  c = _tiny_llama()
  # Untied: the input embedding (10 x 4) is a lookup, the head multiplies.
  assert accelerator.matmul_params(c) == c.num_params() - 40
  n = accelerator.matmul_params(c)
  # B=3, L=5: 6 N B L + 2 N B L + 4 B L^2 n_h h (3 l + l).
  assert accelerator.step_flops(c, c, 3, 5) == (
      8 * n * 15 + 4 * 3 * 25 * 2 * 2 * (3 * 2 + 2)
  )
  # 2 new tokens after P=4, B=3: weights twice, the cache at 4 then 5
  # slots of 2 (k, v) x 2 layers x 3 rows x 1 head x 2 dims, bf16.
  assert accelerator.sampler_bytes(c, 3, 4, 2) == 2 * n * 2 + 2 * 24 * 9


def test_step_update_flops_count_every_layer_and_chunk():
  from benchmarks import step  # pylint: disable=g-import-not-at-top

  c = _tiny_llama()
  # B=3, P=4, T=2: n = 18 tokens, m = 6 positions, L = 6: 21 causal pairs
  # per row. Per layer: q, o 4x4 each, k, v 4x2 each, MLP 3 x 4x8.
  weights = 2 * (16 + 16 + 8 + 8 + 96)
  attention = 2 * 2 * (3 * 21) * 4 * 2
  trunk = 2 * weights * 18 + attention
  head = 2 * 4 * 10 * 6
  assert step.update_flops(c, c, 3, 4, 2) == 4 * (trunk + head)


@pytest.mark.slow
def test_accelerator_check_runs_quick(tmp_path):
  # Every part at tiny shapes on the CPU: the path the GPU run takes.
  env = dict(os.environ, PYTHONPATH=_ROOT, JAX_PLATFORMS="cpu")
  out = tmp_path / "accelerator.json"
  proc = subprocess.run(
      [sys.executable, "-m", "benchmarks", "accelerator", "--quick"]
      + ["--out", str(out)],
      cwd=_ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=900,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads(out.read_text())
  assert report["benchmark"] == "accelerator" and report["quick"]
  parity = report["parity"]
  assert "error" not in parity, parity
  if "skipped" not in parity:  # torch is a test requirement
    assert parity["passed"], parity
  (row,) = report["step"]
  assert "error" not in row, row["error"]
  assert row["step_s"] > 0 and row["model_flops"] > 0
  assert row["compiled_bytes"]["temporaries"] > 0
  assert all(np.isfinite(v) for v in row["metrics"].values())
  sampled = report["sampler"]
  assert "error" not in sampled, sampled
  assert sampled["tokens_per_s"] > 0 and sampled["floor_bytes"] > 0
  assert "wrote" in proc.stdout


def test_step_memory_bench_quick_rows(capsys):
  """`step-memory --quick`: the whole step of the tiny pair compiled at two
  lengths, its figures consistent and growing with T."""
  import argparse  # pylint: disable=g-import-not-at-top

  from benchmarks import step_memory  # pylint: disable=g-import-not-at-top

  parser = argparse.ArgumentParser()
  step_memory.add_parser(parser.add_subparsers(dest="command"))
  args = parser.parse_args(["step-memory", "--quick"])
  args.lengths = [8, 32]
  rows = step_memory._quick_rows(args)  # pylint: disable=protected-access
  assert [r["T"] for r in rows] == [8, 32]
  for r in rows:
    assert r["total"] > 0 and r["temporaries"] > 0
  assert rows[1]["temporaries"] > rows[0]["temporaries"]
  assert "T=     8" in capsys.readouterr().out


def test_topd_bench_is_a_subcommand(capsys):
  """`python -m benchmarks topd` is registered and parses (a run compiles
  three steps: minutes on a loaded 2-core machine, so no smoke run here)."""
  import argparse  # pylint: disable=g-import-not-at-top

  from benchmarks import __main__ as bench_main  # pylint: disable=g-import-not-at-top
  from benchmarks import topd  # pylint: disable=g-import-not-at-top

  with pytest.raises(SystemExit) as exit_info:
    bench_main.main(["topd", "--help"])
  assert exit_info.value.code == 0
  assert "--max-candidates" in capsys.readouterr().out
  parser = argparse.ArgumentParser()
  topd.add_parser(parser.add_subparsers(dest="command"))
  args = parser.parse_args(["topd", "--quick", "--new-tokens", "16"])
  assert args.func is topd.run and args.quick
  assert (args.new_tokens, args.max_candidates, args.window) == (16, 8, 50)


def test_moe_bench_is_a_subcommand(capsys):
  """`python -m benchmarks moe` is registered and parses as
  `python -m benchmarks.moe` does (its run loads transformers: the MoE
  parity itself is tests/models/test_moe.py's)."""
  from benchmarks import __main__ as bench_main  # pylint: disable=g-import-not-at-top
  from benchmarks import moe  # pylint: disable=g-import-not-at-top

  with pytest.raises(SystemExit) as exit_info:
    bench_main.main(["moe", "--help"])
  assert exit_info.value.code == 0
  assert "--expert_dim" in capsys.readouterr().out
  ran = []
  original = moe.run
  moe.run = ran.append
  try:
    moe.main(["--quick", "--top_k", "4"])
  finally:
    moe.run = original
  (args,) = ran
  # --quick sets the tiny shape, including its own top-k.
  assert (args.dim, args.layers, args.experts, args.top_k) == (64, 2, 8, 2)


@pytest.mark.parametrize(
    "lscpu, want",
    [
        (
            (
                "Model name: AMD EPYC\nCPU family: 26\nModel: 2\n"
                "Flags: fpu avx2 avx512f avx512_bf16\n"
            ),
            "AMD EPYC (family 26 model 2; avx512f avx512_bf16)",
        ),
        (
            "Model name:   AMD EPYC\nCPU family: 25\nModel: 1\nFlags: avx2\n",
            "AMD EPYC (family 25 model 1; no avx512)",
        ),
    ],
)
def test_cpu_model_names_the_generation(monkeypatch, lscpu, want):
  from benchmarks import protocol  # pylint: disable=g-import-not-at-top

  monkeypatch.setattr(
      protocol.subprocess,
      "run",
      lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout=lscpu),
  )
  assert protocol.cpu_model() == want
