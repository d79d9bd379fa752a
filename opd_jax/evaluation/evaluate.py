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
"""Generate k samples per held-out question, grade them, report accuracy and pass@k."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

from opd_jax import sharding
from opd_jax.data import context as contexts
from opd_jax.data.dataset import PromptDataset
from opd_jax.data.iterator import eval_batches
from opd_jax.data.templates import format_prompts
from opd_jax.evaluation.graders import grader_for
from opd_jax.rollouts import Sampling, default_eos_ids, sample

# (responses, reference answers) -> correct?
Grader = Callable[[Sequence[str], Sequence[str]], list[bool]]


def pool_grader(pool) -> Grader:
  """Grades with a `GradingPool` (math-verify in timeout-bounded workers)."""

  def grade(texts, answers):
    return [g.correct for g in pool.grade(list(zip(texts, answers)))]

  return grade


def pass_at_k(n: int, c: int, k: int) -> float:
  """Unbiased pass@k from n samples of which c are correct (Chen et al.)."""
  if n - c < k:
    return 1.0
  return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@dataclasses.dataclass
class EvalResult:
  """Held-out results.

  Attributes:
    accuracy: mean correctness over all samples (mean@k).
    pass_at_k: fraction of questions with a correct sample among k.
    mean_length: mean response length in tokens.
    num_questions: questions graded.
    num_samples: samples per question (k).
    responses: the decoded first sample of each question.
    samples: every decoded sample, [questions][k].
    correct: bool [questions, k], the grade of each sample.
    lengths: int [questions, k], each sample's length in tokens.
  """

  accuracy: float
  pass_at_k: float
  mean_length: float
  num_questions: int
  num_samples: int
  responses: list[str]
  samples: list[list[str]] = dataclasses.field(default_factory=list)
  correct: np.ndarray | None = None
  lengths: np.ndarray | None = None

  def metrics(self, prefix: str = "eval") -> dict[str, float]:
    return {
        f"{prefix}/accuracy": self.accuracy,
        f"{prefix}/pass@{self.num_samples}": self.pass_at_k,
        f"{prefix}/len_mean": self.mean_length,
    }


def evaluate(
    model,
    dataset,
    tokenizer,
    grader: Grader,
    *,
    key: jax.Array,
    mesh=None,
    batch_size: int = 32,
    num_samples: int = 1,
    max_new_tokens: int = 64,
    sampling: Sampling = Sampling(temperature=0.0),
    eos_ids: Sequence[int] = (),
) -> EvalResult:
  """Samples `num_samples` responses per question of `dataset` and grades them.

  Every process generates its slice of each global batch; responses are
  gathered so that every process returns the same result.

  Args:
    model: the policy (an opd_jax Transformer).
    dataset: a `PromptDataset` with answers.
    tokenizer: decodes responses.
    grader: (texts, answers) -> list of bools.
    key: PRNG key (sample j of a batch uses fold_in(key, j)).
    mesh: optional mesh for the prompts' batch sharding.
    batch_size: global questions per generation call.
    num_samples: k samples per question; k > 1 needs a temperature
      (greedy decoding would repeat one sample k times: refused).
    max_new_tokens: response budget.
    sampling: the sampling strategy (greedy by default).
    eos_ids: ids that end a response.
  """
  for name, value in (
      ("batch_size", batch_size),
      ("num_samples", num_samples),
      ("max_new_tokens", max_new_tokens),
  ):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"evaluate: {name} expected an int >= 1, got {value!r}")
  if num_samples > 1 and sampling.temperature == 0:
    raise ValueError(
        f"evaluate: num_samples={num_samples} with greedy sampling"
        " (temperature 0) gives identical samples, and pass@k of them is"
        " pass@1; expected a temperature > 0 or num_samples=1"
    )
  n = len(dataset)
  if n == 0:
    raise ValueError("evaluate: the evaluation dataset is empty")
  if any(a is None for a in dataset.answers):
    raise ValueError("evaluate: every evaluation row needs an answer")
  procs = jax.process_count()
  if batch_size % procs:
    raise ValueError(
        f"evaluate: batch_size {batch_size} is not a multiple of"
        f" the {procs} processes"
    )
  # No batch wider than the data (padding rows cost as much as real ones).
  batch_size = min(batch_size, -(-n // procs) * procs)
  correct = np.zeros((n, num_samples), bool)
  lengths = np.zeros((n, num_samples))
  samples: list[list[str]] = [[""] * num_samples for _ in range(n)]
  batches = eval_batches(dataset, global_batch_size=batch_size)
  for start, batch in zip(range(0, n, batch_size), batches):
    # The gathered (global) batch's rows; those past the data are fill.
    rows = np.arange(start, start + batch_size)
    valid = rows < n
    prompt, mask = batch["prompt"], batch["prompt_mask"]
    if mesh is not None:
      prompt, mask = sharding.global_batch((prompt, mask), mesh)
    for j in range(num_samples):
      out = sample(
          model,
          prompt,
          mask,
          jax.random.fold_in(jax.random.fold_in(key, start), j),
          max_new_tokens=max_new_tokens,
          sampling=sampling,
          eos_ids=eos_ids,
          pad_id=dataset.pad_id,
      )
      response, rmask = _gather((out.response, out.response_mask))
      texts = [
          tokenizer.decode(r[m].tolist(), skip_special_tokens=True)
          for r, m in zip(response, rmask)
      ]
      keep = np.flatnonzero(valid)
      ok = grader(
          [texts[i] for i in keep], [dataset.answers[rows[i]] for i in keep]
      )
      correct[rows[keep], j] = ok
      lengths[rows[keep], j] = rmask[keep].sum(axis=1)
      for i in keep:
        samples[rows[i]][j] = texts[i]
  c = correct.sum(axis=1)
  return EvalResult(
      accuracy=float(correct.mean()),
      pass_at_k=float(
          np.mean([pass_at_k(num_samples, int(ci), num_samples) for ci in c])
      ),
      mean_length=float(lengths.mean()),
      num_questions=n,
      num_samples=num_samples,
      responses=[s[0] for s in samples],
      samples=samples,
      correct=correct,
      lengths=lengths.astype(np.int64),
  )


def _gather(arrays: Any) -> Any:
  """Global arrays -> full numpy arrays on every process."""
  if jax.process_count() == 1:
    return jax.tree.map(np.asarray, arrays)
  return multihost_utils.process_allgather(arrays, tiled=True)


def context_accuracy(
    model,
    tokenizer,
    source,
    templates: Sequence[str],
    *,
    max_prompt_len: int,
    max_new_tokens: int,
    key: jax.Array | None = None,
) -> dict[str, float]:
  """Greedy accuracy of `model` on `source`'s questions under each teacher
  context: {template: accuracy}.

  Each template (a `data.context.TEMPLATES` name or a format string) puts
  the example's context fields before the question, as a self-teacher sees
  them; 'empty' is the bare question. The gap between a context and
  'empty' is what self-distillation with that context can transfer.
  Every template is checked, and every prompt tokenized, before anything
  is evaluated; a prompt longer than `max_prompt_len` is refused (cutting
  it would drop the start of its context), naming the template.
  """
  ctxs = {t: contexts.TeacherContext(t, max_prompt_len) for t in templates}
  key = jax.random.PRNGKey(0) if key is None else key
  datasets = {}
  for template, ctx in ctxs.items():
    data = PromptDataset(
        contexts.ContextSource(source, ctx),
        tokenizer,
        max_prompt_len=max_prompt_len,
        overlong="truncate",
    )
    if data.stats.overlong:
      lengths = [
          len(ids)
          for ids in format_prompts(
              tokenizer,
              [
                  r.question
                  for r in contexts.ContextSource(source, ctx).records()
              ],
          )
      ]
      raise ValueError(
          f"max_prompt_len: {data.stats.overlong} of {len(lengths)} prompts of"
          f" template {template!r} are longer than {max_prompt_len} tokens"
          f" (the longest {max(lengths)}) and would be cut; expected >="
          f" {max(lengths)}"
      )
    datasets[template] = data
  out = {}
  for template, data in datasets.items():
    result = evaluate(
        model,
        data,
        tokenizer,
        grader_for(source),
        key=key,
        max_new_tokens=max_new_tokens,
        eos_ids=default_eos_ids(model.config, tokenizer),
    )
    out[template] = result.metrics()["eval/accuracy"]
  return out
