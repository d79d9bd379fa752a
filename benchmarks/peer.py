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
"""The PyTorch side of the peer benchmarks (HF `generate`, TRL GKDTrainer).

Run as a child process by the JAX side; imports no JAX. It sets up the peer,
sends one `@@{info}` line, then answers every `go` line on stdin with
`@@{"seconds": ...}` for one iteration.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

from benchmarks import protocol


def _send(obj) -> None:
  sys.stdout.write("@@" + json.dumps(obj) + "\n")
  sys.stdout.flush()


def _wait_go() -> None:
  if sys.stdin.readline().strip() != "go":
    sys.exit(0)


def _rollout(a, prompt, mask, info) -> None:
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  model = transformers.AutoModelForCausalLM.from_pretrained(
      os.path.join(a.dir, "student"), dtype=getattr(torch, a.dtype)
  ).eval()
  _send(dict(info, transformers=transformers.__version__))
  for _ in range(a.iterations):
    _wait_go()
    start = time.perf_counter()
    with torch.inference_mode():
      out = model.generate(
          input_ids=prompt,
          attention_mask=mask,
          max_new_tokens=a.new_tokens,
          do_sample=True,
          top_k=0,
          top_p=1.0,
          temperature=a.temperature,
          use_cache=True,
          pad_token_id=0,
      )
    seconds = time.perf_counter() - start
    assert out.shape[1] == prompt.shape[1] + a.new_tokens, out.shape
    _send({"seconds": seconds})


def torch_setup(torch) -> dict:
  """What decides torch's CPU speed here: threads, BLAS / oneDNN, allocator.

  Threads (intra-op, inter-op, OpenMP's and MKL's), the kernels' CPU
  capability, whether MKL and oneDNN (mkldnn) are built in, the parallel
  backend, and the environment variables that change any of these (the
  glibc malloc tunables the JAX side sets for this process among them).
  """
  config = torch.__config__.show()
  build = [
      line.strip(" -")
      for line in config.splitlines()
      if any(k in line for k in ("Math Kernel", "MKL-DNN", "OpenMP", "GCC"))
  ]
  settings = config.split("Build settings:", 1)[-1]
  wanted = ("BLAS_INFO", "USE_MKL", "USE_MKLDNN", "USE_OPENMP", "BUILD_TYPE")
  flags = {
      k: v
      for k, _, v in (x.strip().partition("=") for x in settings.split(","))
      if k in wanted
  }
  backend = [
      line.split(":", 1)[1].strip()
      for line in torch.__config__.parallel_info().splitlines()
      if line.startswith("ATen parallel backend")
  ]
  env = {
      k: v
      for k, v in sorted(os.environ.items())
      if k.startswith(
          ("MALLOC_", "OMP_", "MKL_", "KMP_", "GOMP_", "LD_PRELOAD")
      )
  }
  return {
      "threads": torch.get_num_threads(),
      "interop_threads": torch.get_num_interop_threads(),
      "cpu_capability": torch.backends.cpu.get_cpu_capability(),
      "mkl": torch.backends.mkl.is_available(),
      "mkldnn": torch.backends.mkldnn.is_available(),
      "mkldnn_enabled": bool(torch.backends.mkldnn.enabled),
      "openmp": torch.backends.openmp.is_available(),
      "parallel_backend": backend[0] if backend else "unknown",
      "build": build,
      "build_flags": flags,
      "env": env,
  }


class _PhaseClock:
  """Seconds of TRL's generation and teacher forward inside one step.

  GKDTrainer's step = `generate_on_policy_outputs` (the rollout), then
  `compute_loss` (student forward, teacher forward under no_grad, JSD),
  backward and the optimizer. Generation is timed around TRL's own call,
  the teacher by forward hooks on the teacher model; `update` is the rest
  of the step (student forward, loss, backward, AdamW).
  """

  def __init__(self, trainer):
    self.seconds = {"generation": 0.0, "teacher": 0.0}
    generate = trainer.generate_on_policy_outputs

    def timed_generate(*args, **kwargs):
      start = time.perf_counter()
      try:
        return generate(*args, **kwargs)
      finally:
        self.seconds["generation"] += time.perf_counter() - start

    trainer.generate_on_policy_outputs = timed_generate
    teacher = trainer.teacher_model
    teacher.register_forward_pre_hook(self._teacher_start)
    teacher.register_forward_hook(self._teacher_end)

  def _teacher_start(self, *unused):
    self._start = time.perf_counter()

  def _teacher_end(self, *unused):
    self.seconds["teacher"] += time.perf_counter() - self._start

  def take(self, total: float) -> dict:
    out = dict(self.seconds)
    out["update"] = total - out["generation"] - out["teacher"]
    self.seconds = {"generation": 0.0, "teacher": 0.0}
    return {k: round(v, 4) for k, v in out.items()}


def _step(a, prompt, mask, info) -> None:
  import datasets  # pylint: disable=g-import-not-at-top
  import tokenizers  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  import trl  # pylint: disable=g-import-not-at-top
  from trl.experimental.gkd import GKDConfig, GKDTrainer  # pylint: disable=g-import-not-at-top

  # GKD only needs the tokenizer's pad id: a one-word vocabulary does.
  tok = transformers.PreTrainedTokenizerFast(
      tokenizer_object=tokenizers.Tokenizer(
          tokenizers.models.WordLevel({"<pad>": 0}, unk_token="<pad>")
      ),
      pad_token="<pad>",
  )
  student = transformers.AutoModelForCausalLM.from_pretrained(
      os.path.join(a.dir, "student")
  )
  teacher = transformers.AutoModelForCausalLM.from_pretrained(
      os.path.join(a.dir, "teacher")
  )
  labels = prompt.clone()

  def collate(examples):
    del examples  # every batch is the benchmark's prompts
    return {
        "prompts": prompt,
        "prompt_attention_mask": mask,
        "input_ids": prompt,
        "attention_mask": mask,
        "labels": labels.masked_fill(mask == 0, -100),
    }

  phases = []  # the _PhaseClock, once the trainer exists

  class Clock(transformers.TrainerCallback):

    def on_step_begin(self, *unused, **kwargs):
      _wait_go()
      self.usage = protocol.usage()
      self.start = time.perf_counter()

    def on_step_end(self, *unused, **kwargs):
      seconds = time.perf_counter() - self.start
      _send({
          "seconds": seconds,
          "phases": phases[0].take(seconds),
          "usage": protocol.usage_delta(self.usage, protocol.usage()),
      })

  config = GKDConfig(
      output_dir=tempfile.mkdtemp(),
      per_device_train_batch_size=len(prompt),
      max_steps=a.iterations,
      learning_rate=a.learning_rate,
      lmbda=1.0,
      beta=a.beta,
      temperature=a.temperature,
      max_new_tokens=a.new_tokens,
      gradient_checkpointing=False,
      # TRL's configs default to bf16=True: autocast to bfloat16 even on
      # CPU, emulated (10-50x slower) where the CPU has no bf16 dot
      # instructions (Zen 3). The bench compares float32 with float32.
      bf16=False,
      use_cpu=True,
      report_to="none",
      save_strategy="no",
      logging_strategy="no",
      disable_dropout=True,
      dataloader_num_workers=0,
      seed=0,
  )
  trainer = GKDTrainer(
      model=student,
      teacher_model=teacher,
      args=config,
      train_dataset=datasets.Dataset.from_dict(
          {"i": list(range(len(prompt) * a.iterations))}
      ),
      data_collator=collate,
      processing_class=tok,
      callbacks=[Clock()],
  )
  phases.append(_PhaseClock(trainer))
  _send(
      dict(
          info,
          trl=trl.__version__,
          gradient_checkpointing=trainer.args.gradient_checkpointing,
          bf16=trainer.args.bf16,
          use_cache=trainer.generation_config.use_cache,
      )
  )
  trainer.train()


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("mode", choices=["step", "rollout"])
  p.add_argument("--dir", required=True)
  p.add_argument("--batch", type=int, required=True)
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
  prompt, mask = (
      torch.from_numpy(x.astype("int64"))
      for x in protocol.load_prompts(a.dir, a.batch)
  )
  info = {
      "torch": torch.__version__,
      **torch_setup(torch),
      "jax_imported": "jax" in sys.modules,
  }
  (_rollout if a.mode == "rollout" else _step)(a, prompt, mask, info)


if __name__ == "__main__":
  main()
