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
r"""Writes a per-token map of a batch of student rollouts as one HTML page.

  # a training run's newest student and its teacher, on the built-in task
  python scripts/token_map.py --workdir=/tmp/run --out=/tmp/map.html
  # two HF directories and a jsonl of questions (answers graded by math-verify)
  python scripts/token_map.py --student=/ckpt/student --teacher=/ckpt/teacher \
      --questions=questions.jsonl --num_rollouts=8 --out=/tmp/map.html

The student samples one response per question (cycling through the
questions); the teacher scores it. Open the page in a browser: each token is
coloured by the chosen channel, the chosen selector's tokens are outlined
(the run's method with its settings, every other method at its defaults),
hovering shows a token's numbers; `#channel=NAME&selector=NAME` in the URL
picks both. Bad input (a workdir without a checkpoint, a teacher whose
vocabulary differs, an empty question file, ...) ends with one error line
(`error: ...`) and exit status 2, and writes nothing.
"""

import dataclasses
import json
import os

from absl import flags

from opd_jax import cli, script_flags
from opd_jax.cli import InputError

_WORKDIR = flags.DEFINE_string(
    "workdir",
    None,
    "Training workdir (newest student; the run's teacher and tokenizer).",
)
_STUDENT = flags.DEFINE_string("student", None, "Student HF directory.")
_TEACHER = flags.DEFINE_string(
    "teacher", None, "Teacher HF directory (default with --workdir: the run's)."
)
_TOKENIZER = flags.DEFINE_string("tokenizer", None, "Default: the student's.")
_TASK = flags.DEFINE_enum(
    "task",
    None,
    ["arithmetic", "countdown"],
    "Built-in task unless --questions (default: the run's task, or the"
    " file it trained on, else 'arithmetic').",
)
_QUESTIONS = flags.DEFINE_string(
    "questions", None, "jsonl / parquet file of questions (and answers)."
)
_SRC = script_flags.source_flags(
    difficulty_default=None,  # the run's, else 'default' (_dataset)
    difficulty_help=(
        "Built-in task difficulty (default: the run's, else 'default')."
    ),
    answer_help="Answer field ('' for none: no verdicts).",
)
_N = flags.DEFINE_integer("num_rollouts", 8, "Rollouts on the page.")
_MAX_NEW = flags.DEFINE_integer(
    "max_new_tokens", 0, "Response budget (0: the run's, else 64)."
)
_MAX_PROMPT = flags.DEFINE_integer(
    "max_prompt_len", 0, "Prompt width (0: the run's, else 256)."
)
_TEMPERATURE = flags.DEFINE_float(
    "temperature", None, "Sampling temperature (default: the run's, else 1)."
)
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_TOPD = flags.DEFINE_bool(
    "topd",
    None,
    "Also run TOPD's stage (it samples branched windows from both models)"
    " and show its candidates, divergent states and false alarms, at the"
    " run's TOPD settings or TOPD's defaults (default: on for a TOPD run's"
    " workdir, else off).",
)
_OUT = flags.DEFINE_string("out", None, "The HTML page to write.")
_JSON_OUT = flags.DEFINE_string("json_out", None, "Also write the data here.")
# No --grading_timeout: the page grades with the pool's default timeout.
_GRADING = script_flags.grading_flags(timeout=False)


def _check_flags():
  if not _OUT.value:
    raise InputError("--out: the HTML file to write is required")
  if bool(_WORKDIR.value) == bool(_STUDENT.value):
    raise InputError(
        "give either --workdir=DIR or --student=HF_DIR (with"
        " --teacher=HF_DIR), not both or neither"
    )
  if _STUDENT.value and not _TEACHER.value:
    raise InputError("--teacher: required with --student")
  if _QUESTIONS.value and flags.FLAGS["task"].present:
    raise InputError("give either --task or --questions, not both")
  if _N.value < 1:
    raise InputError(f"--num_rollouts: expected >= 1, got {_N.value}")
  if _QUESTIONS.value:
    _check_questions_file(_QUESTIONS.value)
    # A built-in task's flags cannot act on a file of questions.
    for flag in (_SRC.split, _SRC.difficulty):
      if flag.present:
        raise InputError(
            f"--{flag.name}={flag.value}: picks a built-in task's"
            f" {'level' if flag is _SRC.difficulty else 'split'}; --questions"
            f" is the file {_QUESTIONS.value}"
        )


def _check_questions_file(path: str) -> None:
  if not os.path.isfile(path):
    raise InputError(f"--questions: {path}: no such file")
  if path.endswith((".jsonl", ".json")):
    with open(path, encoding="utf-8") as f:
      if not any(line.strip() for line in f):
        raise InputError(f"--questions: {path} holds no questions (empty file)")


def _model_config(path: str, role: str):
  from opd_jax.models import from_hf_config  # pylint: disable=g-import-not-at-top

  config = os.path.join(path, "config.json")
  if not os.path.isfile(config):
    raise InputError(
        f"--{role}: {config} not found (expected an HF checkpoint directory)"
    )
  with open(config, encoding="utf-8") as f:
    return from_hf_config(json.load(f))


def _models():
  """(student, teacher, tokenizer dir, run config or None, meta)."""
  from opd_jax.diagnostics import token_map  # pylint: disable=g-import-not-at-top
  from opd_jax.models import dtype_by_name, load_hf  # pylint: disable=g-import-not-at-top
  from opd_jax.trainer import restore  # pylint: disable=g-import-not-at-top

  if _WORKDIR.value:
    c = restore.load_run_config(_WORKDIR.value)
    if c.teacher_context.template or c.teacher == "self":
      # The script scores the student's sequence with a loaded teacher; the
      # training loop's maps score what the step scored.
      raise InputError(
          f"--workdir: the run in {_WORKDIR.value} distills from a"
          " self-teacher or a teacher context, which this script does not"
          " build; its maps come from training with"
          " --config.token_map_every=N"
      )
    teacher_dir = _TEACHER.value or c.teacher
    if not teacher_dir:
      raise InputError(
          f"--workdir: the run in {_WORKDIR.value} has no teacher"
          " directory (a preset); pass --teacher=HF_DIR"
      )
    teacher_vocab = _model_config(teacher_dir, "teacher").vocab_size
    loaded = script_flags.restore_workdir(_WORKDIR.value)
    c = loaded.run_config
    token_map.check_vocabularies(loaded.model.config.vocab_size, teacher_vocab)
  else:
    token_map.check_vocabularies(
        _model_config(_STUDENT.value, "student").vocab_size,
        _model_config(_TEACHER.value, "teacher").vocab_size,
    )
    loaded, c = script_flags.hf_model(_STUDENT.value), None
    teacher_dir = _TEACHER.value
  student, tok_dir = loaded.model, _TOKENIZER.value or loaded.tokenizer_dir
  meta = {"student": loaded.name}
  dtype = dtype_by_name(c.dtype if c else "float32")
  teacher = load_hf(teacher_dir, dtype=dtype)
  meta["teacher"] = teacher_dir
  return student, teacher, tok_dir, c, meta


def _task(c) -> str:
  """--task, else the run's built-in task, else 'arithmetic'."""
  from opd_jax.data import tasks  # pylint: disable=g-import-not-at-top

  if _TASK.value:
    return _TASK.value
  return c.data.source if c and c.data.source in tasks.NAMES else "arithmetic"


def _run_questions_file(c) -> str:
  """A workdir's run that trained on a file: that file (its evaluation
  file if it had one), unless --questions or --task says otherwise; ''."""
  if c is None or c.data.source != "file" or flags.FLAGS["task"].present:
    return ""
  path = c.data.eval_path or c.data.path
  if not os.path.exists(path):
    raise InputError(
        f"--questions: the run in {_WORKDIR.value} trained on the file"
        f" {path}, which is not on this machine; give --questions=FILE"
        " (or --task=NAME for a built-in task)"
    )
  return path


def _budget(c) -> int:
  return _MAX_NEW.value or (c.max_new_tokens if c else 64)


def _dataset(tokenizer, c):
  from opd_jax import data as data_lib  # pylint: disable=g-import-not-at-top

  run_file = _run_questions_file(c)
  if _QUESTIONS.value:
    source = data_lib.FileSource(
        _QUESTIONS.value,
        question_field=_SRC.question_field.value,
        answer_field=_SRC.answer_field.value or None,
    )
  elif run_file:
    print(f"questions: {run_file} (the run's own; --questions to change)")
    source = data_lib.FileSource(
        run_file,
        question_field=c.data.question_field,
        answer_field=c.data.answer_field or None,
    )
  else:
    task = _task(c)
    same_run = c is not None and c.data.source == task
    difficulty = _SRC.difficulty.value or (
        c.data.difficulty if same_run else "default"
    )
    source = script_flags.task_source(
        task, difficulty, _SRC.split.value, _N.value, _budget(c)
    )
  max_prompt = _MAX_PROMPT.value or (c.max_prompt_len if c else 256)
  data = data_lib.PromptDataset(
      source, tokenizer, max_prompt_len=max_prompt, overlong="truncate"
  )
  if len(data) == 0:
    raise InputError(f"{source.name}: no questions to sample from")
  return data, source.name


def _shown(c, response_len: int):
  """(the run's method or None, the methods compared with it).

  With --workdir the run's method (its settings), else none; --topd adds
  TOPD (its defaults, at most `response_len` candidates per rollout) on
  top of the other registered methods at their defaults.
  """
  from opd_jax import methods  # pylint: disable=g-import-not-at-top
  from opd_jax.diagnostics import token_map  # pylint: disable=g-import-not-at-top
  from opd_jax.trainer import config as config_lib  # pylint: disable=g-import-not-at-top

  method = config_lib.run_method(c) if c else None
  wanted = _TOPD.value
  if wanted is None:
    wanted = bool(c) and c.method == "topd"
  if method is not None and methods.has_stage(method) and not wanted:
    method = None  # --notopd on a TOPD run
  compare = list(token_map.comparison_methods(exclude=[c.method] if c else []))
  if wanted and (method is None or methods.method_name(method) != "topd"):
    topd = methods.build_method("topd")
    if method is None:
      method = topd
    else:
      compare.append(topd)
  fit = lambda m: _fit(m, response_len) if methods.has_stage(m) else m
  return None if method is None else fit(method), [fit(m) for m in compare]


def _fit(topd, response_len: int):
  """TOPD with at most one candidate per response token (--max_new_tokens
  may be shorter than the run's)."""
  return dataclasses.replace(
      topd, max_candidates=min(topd.max_candidates, response_len)
  )


def run():
  """Everything but the error reporting; raises on bad input."""
  _check_flags()
  import jax  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from opd_jax.diagnostics import token_map  # pylint: disable=g-import-not-at-top
  from opd_jax.evaluation import GradingPool  # pylint: disable=g-import-not-at-top
  from opd_jax.evaluation import TaskGrader  # pylint: disable=g-import-not-at-top
  from opd_jax.evaluation import evaluate as evaluation  # pylint: disable=g-import-not-at-top
  from opd_jax.rollouts import default_eos_ids, Sampling, sample  # pylint: disable=g-import-not-at-top

  student, teacher, tok_dir, c, meta = _models()
  tokenizer = transformers.AutoTokenizer.from_pretrained(tok_dir)
  data, data_name = _dataset(tokenizer, c)
  batch = data.batch([i % len(data) for i in range(_N.value)])
  temperature = _TEMPERATURE.value
  if temperature is None:
    temperature = c.sampling.temperature if c else 1.0
  eos = default_eos_ids(student.config, tokenizer)
  rollout = sample(
      student,
      batch["prompt"],
      batch["prompt_mask"],
      jax.random.PRNGKey(_SEED.value),
      max_new_tokens=_budget(c),
      sampling=Sampling(temperature=temperature),
      eos_ids=eos,
      pad_id=data.pad_id,
  )
  method, compare = _shown(c, rollout.response.shape[1])
  meta.update(data=data_name, temperature=temperature, seed=_SEED.value)
  answers = batch["answer"]
  kwargs = dict(
      answers=answers,
      method=method,
      compare=compare,
      stage=token_map.StageSettings(
          sampling=Sampling(temperature=temperature),
          eos_ids=eos,
          pad_id=data.pad_id,
      ),
      seed=_SEED.value,
      meta=meta,
      json_path=_JSON_OUT.value,
  )
  if not _QUESTIONS.value:
    result = token_map.write_token_map(
        _OUT.value,
        student,
        teacher,
        rollout,
        tokenizer,
        grader=TaskGrader(_task(c)),
        **kwargs,
    )
  elif any(a is not None for a in answers):
    with GradingPool(_GRADING.workers.value) as pool:
      result = token_map.write_token_map(
          _OUT.value,
          student,
          teacher,
          rollout,
          tokenizer,
          grader=evaluation.pool_grader(pool),
          **kwargs,
      )
  else:
    result = token_map.write_token_map(
        _OUT.value, student, teacher, rollout, tokenizer, **kwargs
    )
  graded = [v for v in result.verdicts or [] if v is not None]
  print(
      f"wrote {_OUT.value}: {result.ids.shape[0]} rollouts,"
      f" {int(result.mask.sum())} tokens"
      + (f", {sum(graded)} / {len(graded)} correct" if graded else "")
  )


def main(argv):
  run()


if __name__ == "__main__":
  cli.run(main)
