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
"""What both sides of a peer benchmark share; imports neither JAX nor torch.

The JAX side writes the checkpoints and prompts into a directory, starts the
PyTorch side as a child process (`python -m benchmarks.peer`), and the two
alternate one iteration at a time over a pipe: the child answers each `go`
line with one `@@{json}` line.
"""

from __future__ import annotations

import os
import resource
import subprocess

import numpy as np

# glibc malloc tunables for the torch child: torch spends about a third of
# its time in page faults on large tensors without them (MACHINE_NOTES).
PEER_ENV = {
    "MALLOC_MMAP_THRESHOLD_": "17179869184",
    "MALLOC_TRIM_THRESHOLD_": "17179869184",
    "MALLOC_TOP_PAD_": "1073741824",
}


def prompt_files(directory: str, batch: int) -> tuple[str, str]:
  return (
      os.path.join(directory, f"prompt_b{batch}.npy"),
      os.path.join(directory, f"prompt_mask_b{batch}.npy"),
  )


def write_prompts(
    directory: str, batch: int, prompt_len: int, vocab: int, seed: int
) -> None:
  """Prompts of about `prompt_len` tokens, left-padded with id 0."""
  rng = np.random.default_rng(seed)
  lengths = prompt_len - rng.integers(0, max(1, prompt_len // 12), batch)
  lengths[0] = prompt_len
  prompt = rng.integers(1, vocab, (batch, prompt_len)).astype(np.int32)
  mask = np.arange(prompt_len)[None, :] >= (prompt_len - lengths)[:, None]
  ids, masks = prompt_files(directory, batch)
  np.save(ids, np.where(mask, prompt, 0))
  np.save(masks, mask)


def load_prompts(directory: str, batch: int) -> tuple[np.ndarray, np.ndarray]:
  ids, masks = prompt_files(directory, batch)
  return np.load(ids), np.load(masks)


def cpu_model() -> str:
  """`lscpu`'s model name, family / model and vector extensions: the CPU
  every table is quoted beside.

  "AMD EPYC" alone names machines a factor 3 apart in float32 matmul rate
  (Zen 5 with AVX-512 against earlier ones without), so the line says
  which: e.g. "AMD EPYC (family 26 model 2; avx512f avx512_bf16)".
  """
  try:
    out = subprocess.run(
        ["lscpu"], capture_output=True, text=True, check=False
    ).stdout
  except OSError:
    return "unknown"
  fields = {}
  for line in out.splitlines():
    key, _, value = line.partition(":")
    fields[key.strip()] = value.strip()
  name = fields.get("Model name", "unknown")
  flags = set(fields.get("Flags", "").split())
  vector = [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f in flags]
  detail = []
  if "CPU family" in fields and "Model" in fields:
    detail.append(f"family {fields['CPU family']} model {fields['Model']}")
  detail.append(" ".join(vector) or "no avx512")
  return f"{name} ({'; '.join(detail)})"


def cpu_counters() -> dict[str, int]:
  """/proc/stat's machine-wide CPU time so far (clock ticks), by kind.

  `steal` is time the hypervisor ran something else on our virtual CPUs:
  invisible in the load average, it slows every side, and a side that
  synchronises its threads often (torch's OpenMP barriers per op) more.
  """
  try:
    with open("/proc/stat", encoding="ascii") as f:
      fields = f.readline().split()[1:]
  except OSError:
    return {}
  names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq")
  names += ("steal",)
  return dict(zip(names, (int(x) for x in fields)))


def cpu_share(before: dict, after: dict) -> str:
  """Busy and stolen shares of the machine's CPU time between two counters."""
  if not before or not after:
    return "unknown"
  delta = {k: after[k] - before.get(k, 0) for k in after}
  total = sum(delta.values()) or 1
  busy = total - delta.get("idle", 0) - delta.get("iowait", 0)
  return (
      f"busy {100 * busy / total:.0f}%, steal"
      f" {100 * delta.get('steal', 0) / total:.1f}%"
  )


def machine_line() -> str:
  """CPU model, core count and load average, printed beside every table."""
  load = os.getloadavg()
  return (
      f"cpu: {cpu_model()} ({os.cpu_count()} cores), load average"
      f" {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
  )


def usage() -> dict:
  """This process's CPU seconds (user, system) and page faults so far.

  Against the wall time of a step: CPU seconds well below threads x wall
  mean waiting for a core (other load); many minor faults or system
  seconds mean the allocator hands back and refaults memory.
  """
  r = resource.getrusage(resource.RUSAGE_SELF)
  return {
      "user_s": r.ru_utime,
      "system_s": r.ru_stime,
      "minor_faults": r.ru_minflt,
      "major_faults": r.ru_majflt,
  }


def usage_delta(before: dict, after: dict) -> dict:
  return {k: round(after[k] - before[k], 3) for k in after}
