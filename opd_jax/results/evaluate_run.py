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
"""The final evaluation of one grid run: greedy accuracy and pass@k."""

from __future__ import annotations

import json
import os
import time

import jax
import ml_collections
import numpy as np

from opd_jax import evaluation
from opd_jax.evaluation.evaluate import evaluate
from opd_jax.models import load_hf
from opd_jax.rollouts import default_eos_ids, Sampling
from opd_jax.results.grid import EvalSpec
from opd_jax.trainer import builders, restore
from opd_jax.trainer import config as trainer_config

# Every run is graded on the questions of this task seed, whatever its own
# seed (the built-in task draws its questions from `config.seed`).
EVAL_TASK_SEED = 0


def _student(c: ml_collections.ConfigDict, workdir: str | None):
  """(model, step): the run's newest checkpoint, or config.student as is."""
  if workdir is None:
    return load_hf(c.student, role="config.student"), 0
  model, step, _ = restore.restore_student(workdir)
  return model, step


def evaluate_run(
    c: ml_collections.ConfigDict, workdir: str | None, spec: EvalSpec
) -> dict:
  """Greedy correctness and k samples per question of one run's student.

  Args:
    c: the run's trainer config (its data, tokenizer, response length).
    workdir: the run's training workdir, or None to evaluate
      `config.student` itself (a row that trains nothing).
    spec: questions, k, temperature, batch size.

  Returns:
    A JSON-able dict: `greedy` (0/1 per question), `samples` (0/1 per
    question and sample), mean greedy length and EOS rate, the step, the
    question source and the seconds taken.
  """
  start = time.time()
  model, step = _student(c, workdir)
  tokenizer = builders.load_tokenizer(c)
  ec = ml_collections.ConfigDict(c.to_dict())
  ec.seed, ec.eval_examples = EVAL_TASK_SEED, spec.num_questions
  dataset = builders.eval_dataset(trainer_config.to_run_config(ec), tokenizer)
  eos = default_eos_ids(model.config, tokenizer)
  key = jax.random.PRNGKey(c.seed)
  common = dict(
      batch_size=spec.batch_size, max_new_tokens=c.max_new_tokens, eos_ids=eos
  )
  with evaluation.grader_for(dataset.source) as grader:
    evaluation.check_gradable(grader, dataset)
    greedy = evaluate(
        model,
        dataset,
        tokenizer,
        grader,
        key=key,
        sampling=Sampling(temperature=0.0),
        **common,
    )
    sampled = evaluate(
        model,
        dataset,
        tokenizer,
        grader,
        key=jax.random.fold_in(key, 1),
        num_samples=spec.k,
        sampling=Sampling(temperature=spec.temperature),
        **common,
    )
  lengths = greedy.lengths[:, 0]
  return {
      "step": int(step),
      "source": dataset.source.name,
      "questions": greedy.num_questions,
      "k": spec.k,
      "temperature": spec.temperature,
      "greedy": greedy.correct[:, 0].astype(int).tolist(),
      "samples": sampled.correct.astype(int).tolist(),
      "greedy_len_mean": float(lengths.mean()),
      # A greedy response shorter than the cap ended with EOS.
      "greedy_eos_rate": float(np.mean(lengths < c.max_new_tokens)),
      "seconds": round(time.time() - start, 1),
  }


def write_json(path: str, obj) -> None:
  """Writes `obj` as JSON atomically (a killed write leaves no file)."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=1)
  os.replace(tmp, path)
