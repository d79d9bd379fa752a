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
"""evaluate(): accuracy and pass@k over k samples per question; the CLI script."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import transformers

from opd_jax import testing
from opd_jax import data as data_lib
from opd_jax.evaluation import evaluate as evaluation
from opd_jax.models import load_hf
from opd_jax.rollouts import Sampling, sample

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


@pytest.mark.parametrize("n,c,k,want", [(4, 1, 1, 0.25), (4, 0, 2, 0.0),
                                        (4, 4, 1, 1.0), (5, 2, 2, 0.7),
                                        (3, 1, 3, 1.0)])
def test_pass_at_k(n, c, k, want):
  assert evaluation.pass_at_k(n, c, k) == pytest.approx(want)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
  return testing.tiny_distillation_pair(str(tmp_path_factory.mktemp("pair")))


def test_evaluate_counts_every_question_once(pair):
  tok = transformers.AutoTokenizer.from_pretrained(pair["student"])
  model = load_hf(pair["student"])
  data = data_lib.PromptDataset(data_lib.ArithmeticSource("test", 7), tok,
                               max_prompt_len=48)
  seen = []

  def grader(texts, answers):
    seen.extend(answers)
    return [len(t) % 3 == 0 for t in texts]  # arbitrary but deterministic

  key = jax.random.PRNGKey(0)
  result = evaluation.evaluate(
      model, data, tok, grader, key=key, batch_size=4, num_samples=2,
      max_new_tokens=6, sampling=Sampling(temperature=1.0), eos_ids=(2,))
  assert sorted(seen) == sorted(data.answers * 2)  # padding rows not graded
  # Recompute from the same samples.
  correct = np.zeros((7, 2), bool)
  for start in (0, 4):
    rows = np.minimum(np.arange(start, start + 4), 6)
    batch = data.batch(np.where(np.arange(start, start + 4) < 7, rows, 0))
    for j in range(2):
      out = sample(model, batch["prompt"], batch["prompt_mask"],
                   jax.random.fold_in(jax.random.fold_in(key, start), j),
                   max_new_tokens=6, sampling=Sampling(temperature=1.0),
                   eos_ids=(2,), pad_id=data.pad_id)
      for i, (r, m) in enumerate(zip(np.asarray(out.response),
                                     np.asarray(out.response_mask))):
        if start + i < 7:
          text = tok.decode(r[m].tolist(), skip_special_tokens=True)
          correct[start + i, j] = len(text) % 3 == 0
  assert result.accuracy == pytest.approx(correct.mean())
  assert result.pass_at_k == pytest.approx(correct.any(axis=1).mean())
  assert result.num_questions == 7 and result.num_samples == 2


@pytest.mark.slow
def test_evaluate_script_grades_math_with_the_pool(pair, tmp_path):
  data = tmp_path / "math.jsonl"
  data.write_text("\n".join(json.dumps(r) for r in [
      {"problem": "What is 1/2 + 1/4?", "answer": "\\frac{3}{4}"},
      {"problem": "Compute 2+2.", "answer": "4"}]) + "\n")
  proc = subprocess.run(
      [sys.executable, os.path.join(_ROOT, "scripts", "evaluate.py"),
       f"--model={pair['student']}", f"--data={data}",
       "--question_field=problem", "--num_samples=2", "--temperature=1.0",
       "--max_new_tokens=8"], capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result["questions"] == 2 and result["k"] == 2
  assert "pass@2" in result and 0.0 <= result["accuracy"] <= 1.0
  assert "timed out" in proc.stdout
