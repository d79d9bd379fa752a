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

  # the held-out split of the run's built-in task (arithmetic, countdown)
  python scripts/evaluate.py --model=/tmp/run --num_questions=200
  # a local math set; answers graded by math-verify in a worker pool
  python scripts/evaluate.py --model=/path/hf_dir --data=/data/math500.jsonl \
      --question_field=problem --answer_field=answer --num_samples=4 \
      --temperature=0.7

--model is a training workdir (its newest checkpoint) or an HF directory.
For a workdir of a run on a built-in task, --data and --difficulty default
to the run's; for a run on a file, --data defaults to its
config.data.eval_path (read with its fields), or without one to the rows of
its config.data.path that it held out of training and evaluated on
(config.data.eval_fraction). A flag that cannot act on the
data (--difficulty with a file, --question_field with a built-in task,
--split with a plain file) is refused.

The grader follows the data: the built-in task's exact verifier, exact
integers when every reference answer is an integer (`#### n`, `\boxed{n}`
or the last number of a response count), math-verify otherwise. Every row
must have a gradable answer (checked before generating; --skip_ungradable
drops and counts the rows that do not instead). pass@k needs k different
samples: --num_samples > 1 at --temperature=0 (greedy, the default) is
refused. A prompt is never cut (see --max_prompt_len).

Prints a table and one JSON line with the figures, and writes scores.json
and responses.jsonl (one line per sample: index, question, reference,
response, correct, length; `index` is the row of --data or of the task's
split, rows dropped by --skip_ungradable counted) to --out_dir (default:
WORKDIR/eval/step_N for a workdir, MODEL_eval beside an HF directory MODEL,
never the current directory); a directory that already holds scores is kept
and the new ones go to the next free DIR-2, DIR-3, ... Input errors print
one `error: ...` line and exit with 2, the flags' before anything is
loaded.
"""

import functools
import json
import os
import time

from absl import flags

from opd_jax import cli, script_flags
from opd_jax.cli import InputError
from opd_jax.trainer import workdir as workdir_lib

_MODEL = flags.DEFINE_string("model", None, "Workdir or HF directory.")
_TOKENIZER = flags.DEFINE_string("tokenizer", "", "Default: the model's.")
_DATA = flags.DEFINE_string(
    "data",
    "",
    "A built-in task ('arithmetic', 'countdown') or a jsonl / parquet /"
    " saved dataset (default: a workdir's run's task, else 'arithmetic').",
)
_SRC = script_flags.source_flags(
    difficulty_default=None,  # resolved by _difficulty()
    difficulty_help=(
        "Built-in task (default: a workdir's run's, else 'default')."
    ),
)
_N = flags.DEFINE_integer(
    "num_questions",
    200,
    "Questions (0: every row of --data; every problem of countdown's"
    " held-out split; 1000 of arithmetic's, whose draws have no end).",
)
_K = flags.DEFINE_integer("num_samples", 1, "Samples per question (k).")
_SAMPLING = script_flags.sampling_flags()
_MAX_NEW = flags.DEFINE_integer(
    "max_new_tokens",
    0,
    "Response budget (0: a workdir's run's; else 64, or a built-in task's"
    " longest reference response where longer).",
)
_MAX_PROMPT = flags.DEFINE_integer(
    "max_prompt_len",
    0,
    "Longest prompt, in tokens (0: the longest one; the model's positions"
    " bound it with --max_new_tokens). A prompt is never cut: one longer is"
    " refused.",
)
_BATCH = flags.DEFINE_integer("batch_size", 32, "Questions per call.")
_GRADING = script_flags.grading_flags()
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_OUT = flags.DEFINE_string("out_dir", "", "Where scores and responses go.")
_SKIP = flags.DEFINE_bool(
    "skip_ungradable",
    False,
    "Drop (and count, in one line) the rows of a --data file whose answer no"
    " grader can use, instead of refusing the whole set.",
)


def _check_flags() -> None:
  """Refuses values that would crash or give NaN later."""
  for flag, low in (
      (_K, 1),
      (_BATCH, 1),
      (_GRADING.workers, 1),
      (_N, 0),
  ):
    if flag.value < low:
      raise InputError(
          f"--{flag.name}: expected an integer >= {low}, got {flag.value}"
      )
  for flag, zero in (
      (_MAX_NEW, "the default budget"),
      (_MAX_PROMPT, "the longest prompt"),
  ):
    if flag.value < 0:
      raise InputError(
          f"--{flag.name}: expected an integer >= 1 (or 0: {zero}), got"
          f" {flag.value}"
      )
  timeout = _GRADING.timeout.value
  if timeout <= 0:
    raise InputError(f"--grading_timeout: expected > 0, got {timeout}")
  script_flags.check_sampling(_SAMPLING)
  k = _K.value
  if k > 1 and _SAMPLING.temperature.value == 0:
    raise InputError(
        f"--num_samples={k}: pass@{k} of greedy decoding (--temperature=0,"
        f" the default) is pass@1 of {k} identical samples; expected"
        " --temperature > 0 (e.g. --temperature=0.7) or --num_samples=1"
    )
  if not os.path.isdir(_MODEL.value or ""):
    raise InputError(f"--model: {_MODEL.value!r} is not a directory")
  if _is_workdir(_MODEL.value):
    workdir_lib.check_run_workdir(_MODEL.value, "--model")
  from opd_jax.data import tasks  # pylint: disable=g-import-not-at-top

  data = _DATA.value
  if data and data not in tasks.NAMES and not os.path.exists(data):
    raise InputError(
        f"--data: {data!r} is neither a built-in task {tasks.NAMES} nor an"
        " existing file or directory"
    )
  # Where the scores go, checked before anything is loaded.
  _check_out_dir(_OUT.value or _hf_out_dir(_MODEL.value), _OUT.value)


def _hf_out_dir(model: str) -> str:
  """An HF directory's default output: beside it, never in the cwd."""
  if _is_workdir(model):  # its own WORKDIR/eval/step_N, checked there
    return model
  return os.path.abspath(os.path.normpath(model)) + "_eval"


def _check_out_dir(out_dir: str, given: str) -> None:
  """The output directory must be a directory that can be made and written.

  Args:
    out_dir: --out_dir, or the default one.
    given: --out_dir as given ('' for the default: the message says so).
  """
  where = "--out_dir" if given else f"--out_dir (default {out_dir})"
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise InputError(f"{where}: {out_dir} is a file, not a directory")
  parent = os.path.abspath(out_dir)
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise InputError(f"{where}: {parent} is a file, not a directory")
  if not os.access(parent, os.W_OK):
    raise InputError(
        f"{where}: {parent} is not writable"
        + ("" if given else "; pass --out_dir=DIR")
    )


def _is_workdir(path: str) -> bool:
  return os.path.isdir(os.path.join(path, "checkpoints"))


def _run_data() -> dict:
  """The `data` block of --model's run (empty for an HF directory)."""
  if not _is_workdir(_MODEL.value):
    return {}
  return workdir_lib.check_run_workdir(_MODEL.value, "--model").get("data", {})


# --data's origin for a run on a file evaluated on its held-out rows.
HELD_OUT = "the run's held-out rows"


def _held_out_fraction() -> float:
  """The share of its file's questions --model's run held out of training
  and evaluated on (`config.data.eval_fraction`; 0: none)."""
  if not _is_workdir(_MODEL.value):
    return 0.0
  saved = workdir_lib.check_run_workdir(_MODEL.value, "--model")
  data = saved.get("data", {})
  if data.get("eval_path") or not saved.get("eval_every"):
    return 0.0
  # A run saved before the field held nothing out.
  return float(data.get("eval_fraction", 0.0))


def _data() -> tuple[str, str]:
  """(--data, where it came from): a run's built-in task by default."""
  from opd_jax.data import tasks  # pylint: disable=g-import-not-at-top

  if _DATA.value:
    return _DATA.value, "--data"
  run = _run_data()
  if run.get("source") in tasks.NAMES:
    return run["source"], "the run's"
  if run.get("source") == "file":  # never another task in its place
    path, origin = run.get("eval_path"), "the run's eval_path"
    if not path and _held_out_fraction():
      path, origin = run.get("path"), HELD_OUT
    if not path:
      raise InputError(
          f"--data: the run in {_MODEL.value} trained on a file"
          f" ({run.get('path')}) and has no config.data.eval_path; expected"
          " --data=FILE with the evaluation rows"
      )
    if not os.path.exists(path):
      field = "path" if origin == HELD_OUT else "eval_path"
      raise InputError(
          f"--data: the run's evaluation rows {path} (config.data.{field})"
          " are not on this machine; expected --data=FILE"
      )
    return path, origin
  return "arithmetic", "--data's default"


def _difficulty(task: str) -> tuple[str, str]:
  """(difficulty, where it came from) for built-in task `task`."""
  if _SRC.difficulty.value:
    return _SRC.difficulty.value, "--difficulty"
  run = _run_data()
  if run.get("source") == task and run.get("difficulty"):
    return run["difficulty"], "the run's"
  return "default", "--difficulty's default"


@functools.cache
def _max_new() -> tuple[int, str]:
  """(the response budget, where it came from)."""
  from opd_jax.data import tasks  # pylint: disable=g-import-not-at-top

  if _MAX_NEW.value:
    return _MAX_NEW.value, "--max_new_tokens"
  if _is_workdir(_MODEL.value):
    run = workdir_lib.check_run_workdir(_MODEL.value, "--model")
    budget = run.get("max_new_tokens") or run.get("data", {}).get(
        "max_new_tokens"
    )
    if budget:
      return int(budget), "the run's"
  data, _ = _data()
  if data in tasks.NAMES:
    difficulty, _ = _difficulty(data)
    if difficulty in tasks.get(data).difficulties:
      longest = tasks.reference_lengths(data, difficulty)[-1]
      if longest > 64:
        return longest, f"the longest {data} ({difficulty}) reference response"
  return 64, "--max_new_tokens's default"


def _fresh_out_dir(out_dir: str) -> str:
  """`out_dir`, or the next free `out_dir-N` if it holds earlier scores."""
  taken = lambda d: any(
      os.path.exists(os.path.join(d, n))
      for n in ("scores.json", "responses.jsonl")
  )
  if not taken(out_dir):
    return out_dir
  n = 2
  while os.path.exists(f"{out_dir}-{n}"):
    n += 1
  print(f"{out_dir} holds earlier scores (kept); writing to {out_dir}-{n}")
  return f"{out_dir}-{n}"


def _load_model():
  """(model, tokenizer directory, display name, default out dir, chat).

  `chat` is PromptDataset's chat settings: a workdir's run's (its system
  prompt, its use of the chat template), else the defaults.
  """
  path = _MODEL.value
  # _check_flags checked a workdir; anything else is an HF directory, whose
  # errors load_hf names with --model.
  chat = {}
  if _is_workdir(path):
    from opd_jax.trainer import builders  # pylint: disable=g-import-not-at-top

    loaded = script_flags.restore_workdir(path)
    default_out = os.path.join(path, "eval", f"step_{loaded.step}")
    chat = builders.chat_format(loaded.run_config)
  else:
    loaded = script_flags.hf_model(path, role="--model")
    default_out = _hf_out_dir(path)
  tok_dir = _TOKENIZER.value or loaded.tokenizer_dir
  return loaded.model, tok_dir, loaded.name, default_out, chat


def _source():
  # pylint: disable=g-import-not-at-top
  from opd_jax.data import sources

  from opd_jax.data import tasks

  data, data_origin = _data()
  # A flag that cannot act on this data is refused, not ignored.
  if data in tasks.NAMES:
    for flag in (_SRC.question_field, _SRC.answer_field):
      if flag.present:
        raise InputError(
            f"--{flag.name}: names a field of a --data file; the built-in"
            f" task {data} ({data_origin}) has none"
        )
  elif _SRC.difficulty.present:
    raise InputError(
        "--difficulty: picks a built-in task's level; --data is the file"
        f" {data} ({data_origin})"
    )
  if data in tasks.NAMES:
    difficulty, origin = _difficulty(data)
    print(f"task {data} ({data_origin}), difficulty {difficulty} ({origin})")
    # 0: the whole split where it has an end (countdown's held-out ones).
    every = tasks.get(data).held_out_size(difficulty, _SRC.split.value)
    return script_flags.task_source(
        data,
        difficulty,
        _SRC.split.value,
        _N.value or every or 1000,
        _max_new()[0],
    )
  if _SRC.split.present and not os.path.isdir(data):
    raise InputError(
        f"--split={_SRC.split.value}: a file has no splits ({data}); --split"
        " picks a built-in task's split or a saved DatasetDict's"
    )
  # The run's own fields for its eval_path, unless the flags name others.
  run = _run_data() if data_origin.startswith("the run's") else {}
  field = lambda flag, key: (
      flag.value if flag.present or key not in run else run[key]
  )
  print(f"data {data} ({data_origin})")
  source = sources.FileSource(
      data,
      question_field=field(_SRC.question_field, "question_field"),
      answer_field=field(_SRC.answer_field, "answer_field"),
      # A saved DatasetDict is read at --split (default 'test'), not at its
      # training split; its held-out rows where the run read them.
      split=(
          "train"
          if data_origin == HELD_OUT and not _SRC.split.present
          else _SRC.split.value
      ),
      require_answers=True,
  )
  if data_origin == HELD_OUT:  # the rows the run held out, as it did
    source = sources.hold_out(
        source, _held_out_fraction(), field="config.data.eval_fraction"
    )[1]
    print(f"rows {source.name}")
  return sources.take(source, _N.value)


def _write(out_dir, scores, dataset, result) -> None:
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "scores.json"), "w") as f:
    json.dump(scores, f, indent=2)
  with open(os.path.join(out_dir, "responses.jsonl"), "w") as f:
    for row in range(result.num_questions):
      for j in range(result.num_samples):
        f.write(
            json.dumps({
                # The row of --data (or of the task's split) it came from.
                "index": dataset.source.origin(int(dataset.source_index[row])),
                "question": dataset.questions[row],
                "answer": dataset.answers[row],
                "sample": j,
                "response": result.samples[row][j],
                "correct": bool(result.correct[row, j]),
                "length": int(result.lengths[row, j]),
            })
            + "\n"
        )


def _check_prompts(source, tokenizer, tok_dir: str, chat: dict) -> int:
  """The longest prompt, in tokens; refuses one over --max_prompt_len.

  Warns once when some questions hold words the tokenizer reads as <unk>
  (a word-level task tokenizer on another task's text).
  """
  # pylint: disable=g-import-not-at-top
  from transformers.utils import logging as hf_logging
  from opd_jax.data import tokenizer as tokenizers
  from opd_jax.data.templates import format_prompts

  questions = [r.question for r in source.records()]
  hf_logging.set_verbosity_error()  # a long prompt: the line below says so
  lengths = [len(ids) for ids in format_prompts(tokenizer, questions, **chat)]
  cap = _MAX_PROMPT.value
  over = [i for i, n in enumerate(lengths) if cap and n > cap]
  if over:
    i = max(over, key=lambda i: lengths[i])
    raise InputError(
        f"--max_prompt_len={cap}: {source.name} {source.location(i)} is a"
        f" {lengths[i]}-token prompt ({len(over)} of {len(lengths)} are"
        " longer); prompts are never cut: expected --max_prompt_len >="
        f" {lengths[i]} (or 0: the longest prompt)"
    )
  unknown = [
      (i, tokenizers.unknown_words(tokenizer, q))
      for i, q in enumerate(questions)
  ]
  unknown = [(i, words) for i, words in unknown if words]
  if unknown:
    i, words = unknown[0]
    cli.warn(
        f"{len(unknown)} of {len(questions)} questions of {source.name} hold"
        f" words the tokenizer {tok_dir} reads as <unk> (first:"
        f" {source.location(i)}: {words[:5]}): the model reads other"
        " questions than written"
    )
  return max(lengths)


def _generate(source, grader):
  """Samples and grades; (EvalResult, PromptDataset, name, default out)."""
  # pylint: disable=g-import-not-at-top
  import jax
  from opd_jax.data import tokenizer as tokenizers
  from opd_jax.data.dataset import PromptDataset
  from opd_jax.evaluation import evaluate as evaluation_lib
  from opd_jax.rollouts import default_eos_ids, Sampling

  model, tok_dir, name, default_out, chat = _load_model()
  tokenizer = tokenizers.load_tokenizer(tok_dir, role="--tokenizer")
  longest = _check_prompts(source, tokenizer, tok_dir, chat)
  script_flags.check_response_length(longest, _max_new()[0], model.config)
  # Every prompt whole: the batches are as wide as the longest one.
  dataset = PromptDataset(source, tokenizer, max_prompt_len=longest, **chat)
  result = evaluation_lib.evaluate(
      model,
      dataset,
      tokenizer,
      grader,
      key=jax.random.PRNGKey(_SEED.value),
      batch_size=_BATCH.value,
      num_samples=_K.value,
      max_new_tokens=_max_new()[0],
      sampling=Sampling(
          temperature=_SAMPLING.temperature.value,
          top_p=_SAMPLING.top_p.value,
      ),
      eos_ids=default_eos_ids(model.config, tokenizer),
  )
  return result, dataset, name, default_out


def _run() -> None:
  start = time.time()
  _check_flags()  # before the slow imports: a typo fails in a second
  source = _source()
  max_new, origin = _max_new()
  print(f"max_new_tokens {max_new} ({origin})")
  from opd_jax import evaluation  # pylint: disable=g-import-not-at-top

  if _SKIP.value:
    source = evaluation.drop_ungradable(
        source,
        num_workers=_GRADING.workers.value,
        timeout=_GRADING.timeout.value,
    )
  with evaluation.grader_for(
      source,
      num_workers=_GRADING.workers.value,
      timeout=_GRADING.timeout.value,
  ) as grader:
    evaluation.check_gradable(grader, source)  # before loading the model
    result, dataset, name, default_out = _generate(source, grader)
    if isinstance(grader, evaluation.MathGrader):
      print(f"grading: {grader.pool.stats['timed_out']} answer(s) timed out")
  k = result.num_samples
  print(f"model     {name}\ndata      {source.name}\ngrader    {grader.name}")
  print(f"{'questions':>10} {'accuracy':>9} {f'pass@{k}':>8} {'mean len':>9}")
  print(
      f"{result.num_questions:>10} {result.accuracy:>9.3f}"
      f" {result.pass_at_k:>8.3f} {result.mean_length:>9.1f}"
  )
  out_dir = _fresh_out_dir(_OUT.value or default_out)
  scores = {
      "model": name,
      "data": source.name,
      "grader": grader.name,
      "questions": result.num_questions,
      "k": k,
      "accuracy": result.accuracy,
      f"pass@{k}": result.pass_at_k,
      "mean_length": result.mean_length,
      "seconds": round(time.time() - start, 1),
      "out_dir": out_dir,
  }
  _write(out_dir, scores, dataset, result)
  print(json.dumps(scores))


def main(argv):
  _run()


if __name__ == "__main__":
  flags.mark_flag_as_required("model")
  cli.run(main)
