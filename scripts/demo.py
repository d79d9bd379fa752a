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
"""The README's main command (`make demo`).

Until the distillation demo lands, it runs the foundation's smoke: build a
tiny random Qwen3-style model, save it as a Hugging Face checkpoint, load it
back, check the logits round-trip exactly, and generate a few tokens with the
KV-cache sampler.
"""

import os
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from opd_jax import testing
from opd_jax.models import load_hf, save_hf
from opd_jax.rollouts import Sampling, sample


def main() -> int:
  start = time.time()
  config = testing.tiny_config("qwen3")
  model = testing.random_model(config, seed=0)
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "tiny-qwen3")
    save_hf(model, path)
    print(f"saved {config.num_params():,} parameters to {path}:"
          f" {sorted(os.listdir(path))}")
    loaded = load_hf(path)
  prompt = jnp.asarray([[0, 0, 1, 17, 42, 99], [1, 5, 8, 13, 21, 34]])
  mask = prompt != 0
  a = model(prompt, attention_mask=mask).logits
  b = loaded(prompt, attention_mask=mask).logits
  err = float(jnp.abs(a - b).max())
  print(f"logits after save/load: max |diff| = {err:.1e}")
  if err != 0.0:
    print("FAILED: the reloaded model differs", file=sys.stderr)
    return 1
  out = sample(loaded, prompt, mask, jax.random.key(0), max_new_tokens=8,
               sampling=Sampling(temperature=0.8, top_p=0.95),
               eos_ids=config.eos_token_ids, pad_id=0)
  for row, m in zip(np.asarray(out.response), np.asarray(out.response_mask)):
    print("generated:", row[m].tolist())
  print(f"smoke OK in {time.time() - start:.1f}s")
  return 0


if __name__ == "__main__":
  sys.exit(main())
