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
r"""Evaluates a model on held-out questions: accuracy (mean@k) and pass@k.

  # the built-in arithmetic task's held-out split
  python scripts/evaluate.py --model=/tmp/run --num_questions=200
  # a local math set; answers graded by math-verify in a worker pool
  python scripts/evaluate.py --model=/path/hf_dir --data=/data/math500.jsonl \
      --question_field=problem --answer_field=answer --num_samples=4 \
      --temperature=0.7

--model is a training workdir (its newest checkpoint) or an HF directory.
Prints a table and one JSON line with the figures.
"""

import json
import os
import time

from absl import app, flags

_MODEL = flags.DEFINE_string("model", None, "Workdir or HF directory.")
_TOKENIZER = flags.DEFINE_string("tokenizer", "", "Default: the model's.")
_DATA = flags.DEFINE_string(
    "data", "arithmetic", "'arithmetic' or a jsonl / parquet / saved dataset.")
_QFIELD = flags.DEFINE_string("question_field", "question", "Question field.")
_AFIELD = flags.DEFINE_string("answer_field", "answer", "Answer field.")
_SPLIT = flags.DEFINE_string("split", "test", "Built-in task split.")
_DIFFICULTY = flags.DEFINE_enum("difficulty", "default",
                                ["easy", "default", "hard"], "Built-in task.")
_N = flags.DEFINE_integer("num_questions", 200, "Questions (0: all).")
_K = flags.DEFINE_integer("num_samples", 1, "Samples per question (k).")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.0, "0 is greedy.")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "Nucleus sampling.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 64, "Response budget.")
_MAX_PROMPT = flags.DEFINE_integer("max_prompt_len", 256, "Prompt width.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Questions per call.")
_WORKERS = flags.DEFINE_integer("grading_workers", 2, "math-verify workers.")
_TIMEOUT = flags.DEFINE_float("grading_timeout", 10.0, "Seconds per answer.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")


def _load_model():
  """(model, tokenizer directory, display name) from --model."""
  from opd_jax.models import load_hf  # pylint: disable=g-import-not-at-top
  from opd_jax.trainer import restore  # pylint: disable=g-import-not-at-top

  path = _MODEL.value
  if os.path.isdir(os.path.join(path, "checkpoints")):  # a training workdir
    model, step, c = restore.restore_student(path)
    tok_dir = _TOKENIZER.value or c.tokenizer or c.student
    return model, tok_dir, f"{path} (step {step})"
  return load_hf(path), _TOKENIZER.value or path, path


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from opd_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from opd_jax.data import arithmetic  # pylint: disable=g-import-not-at-top
  from opd_jax.evaluation import GradingPool  # pylint: disable=g-import-not-at-top
  from opd_jax.evaluation import evaluate as evaluation  # pylint: disable=g-import-not-at-top
  from opd_jax.rollouts import Sampling  # pylint: disable=g-import-not-at-top

  start = time.time()
  model, tok_dir, name = _load_model()
  tokenizer = transformers.AutoTokenizer.from_pretrained(tok_dir)
  if _DATA.value == "arithmetic":
    task = arithmetic.ArithmeticTask(
        difficulty=getattr(arithmetic.Difficulty, _DIFFICULTY.value)())
    source = data_lib.ArithmeticSource(_SPLIT.value, _N.value or 1000,
                                      task=task)
  else:
    source = data_lib.FileSource(_DATA.value, question_field=_QFIELD.value,
                                answer_field=_AFIELD.value)
  dataset = data_lib.PromptDataset(source, tokenizer,
                                  max_prompt_len=_MAX_PROMPT.value,
                                  overlong="truncate")
  if _N.value and len(dataset) > _N.value:
    dataset = _Head(dataset, _N.value)
  kwargs = dict(
      key=jax.random.PRNGKey(_SEED.value), batch_size=_BATCH.value,
      num_samples=_K.value, max_new_tokens=_MAX_NEW.value,
      sampling=Sampling(temperature=_TEMPERATURE.value, top_p=_TOP_P.value),
      eos_ids=tuple(model.config.eos_token_ids) or (tokenizer.eos_token_id,))
  if _DATA.value == "arithmetic":
    result = evaluation.evaluate(model, dataset, tokenizer,
                                 evaluation.arithmetic_grader, **kwargs)
  else:
    with GradingPool(_WORKERS.value, timeout=_TIMEOUT.value) as pool:
      result = evaluation.evaluate(model, dataset, tokenizer,
                                   evaluation.pool_grader(pool), **kwargs)
      print(f"grading: {pool.stats['timed_out']} answer(s) timed out")
  k = result.num_samples
  print(f"model     {name}\ndata      {source.name}")
  print(f"{'questions':>10} {'accuracy':>9} {f'pass@{k}':>8} {'mean len':>9}")
  print(f"{result.num_questions:>10} {result.accuracy:>9.3f}"
        f" {result.pass_at_k:>8.3f} {result.mean_length:>9.1f}")
  print(json.dumps({"model": name, "data": source.name,
                    "questions": result.num_questions, "k": k,
                    "accuracy": result.accuracy, f"pass@{k}": result.pass_at_k,
                    "mean_length": result.mean_length,
                    "seconds": round(time.time() - start, 1)}))


class _Head:
  """The first n rows of a PromptDataset (same interface for `evaluate`)."""

  def __init__(self, dataset, n):
    self._d, self._n = dataset, n
    self.pad_id = dataset.pad_id
    self.answers = dataset.answers[:n]

  def __len__(self):
    return self._n

  def batch(self, rows):
    return self._d.batch(rows)


if __name__ == "__main__":
  flags.mark_flag_as_required("model")
  app.run(main)
