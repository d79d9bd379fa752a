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
r"""Gradient alignment of distillation with success ("Unmasking OPD").

  # the built-in task with the shipped demo pair (CPU, minutes)
  python scripts/diagnose.py --student=assets/demo/student_init \
      --teacher=assets/demo/teacher --task=arithmetic --num_questions=8 \
      --budget=512 --out=/tmp/align
  # HF directories and a jsonl of questions and answers (math-verify)
  python scripts/diagnose.py --student=/ckpt/qwen3_0p6b \
      --teacher=/ckpt/qwen3_8b \
      --task=/data/math.jsonl --question_field=problem --answer_field=answer \
      --max_new_tokens=512 --budget=4096 --out=/tmp/align
  # several teacher configurations on the same trees: the external teacher
  # and the student's own weights under each privileged context
  python scripts/diagnose.py --student=assets/demo/student_init \
      --teacher=assets/demo/teacher --teachers=teacher,self:solution,\
self:summary,self:correct_wrong --num_questions=8 --out=/tmp/align_teachers

--student is an HF directory or a training workdir (its newest checkpoint);
--teacher an HF directory with the same vocabulary. --teachers lists the
teacher configurations, each `teacher` (the --teacher checkpoint) or `self`
(the student's own weights), optionally `:TEMPLATE`, a context preset of
`opd_jax/data/context.py` (empty, solution, summary, correct_wrong) that
becomes the teacher's own prompt. Writes report.md, summary.json, nodes.json
and PNG plots to --out (atomically: a failed run leaves --out untouched;
a previous report there moves to --out/previous_reports/<time>/);
with several configurations report.md compares them and each has its full
report under teachers/. Bad input is one `error:` line, exit 2.
See docs/diagnostics.md.
"""

import os
import time

from absl import flags

from opd_jax import cli, script_flags
from opd_jax.cli import InputError

_STUDENT = flags.DEFINE_string("student", None, "HF dir or training workdir.")
_TEACHER = flags.DEFINE_string(
    "teacher", None, "HF dir (needed by a 'teacher' configuration)."
)
_TEACHERS = flags.DEFINE_list(
    "teachers",
    ["teacher"],
    "Teacher configurations: 'teacher' (--teacher) or 'self' (the student's"
    " weights), each optionally ':TEMPLATE' (a data/context.py preset).",
)
_TEACHER_PROMPT = flags.DEFINE_integer(
    "teacher_prompt_len",
    0,
    "Teacher prompt budget with a context (0: the longest; longer ones are"
    " cut from the left of the context).",
)
_SOLUTION = flags.DEFINE_string(
    "solution_field", "", "File field of {solution}."
)
_SUMMARY = flags.DEFINE_string("summary_field", "", "File field of {summary}.")
_WRONG = flags.DEFINE_string("wrong_field", "", "File field of {wrong}.")
_TOKENIZER = flags.DEFINE_string("tokenizer", "", "Default: the student's.")
_TASK = flags.DEFINE_string(
    "task",
    "arithmetic",
    "A built-in task ('arithmetic', 'countdown') or a jsonl / parquet file"
    " of questions and answers (graded by math-verify).",
)
# The demo pair's task is the easy one.
_SRC = script_flags.source_flags(
    difficulty_default="easy", difficulty_help="Built-in task."
)
_N = flags.DEFINE_integer("num_questions", 8, "Questions.")
_BUDGET = flags.DEFINE_integer("budget", 512, "Rollouts per question.")
_G = flags.DEFINE_integer("num_rollouts", 16, "Student rollouts per question.")
_C = flags.DEFINE_integer("top_c", 4, "Student top tokens branched per node.")
_CONT = flags.DEFINE_integer("continuations", 8, "Continuations per child.")
_M = flags.DEFINE_integer("nodes_per_window", 4, "Nodes per depth window.")
_MIN_VISITS = flags.DEFINE_integer("min_visits", 4, "Visits to enter K_u.")
_SELECT = flags.DEFINE_enum(
    "select",
    "grad_norm",
    ["grad_norm", "prob_gap"],
    "Node ranking within a depth window.",
)
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "Sampling temperature.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 24, "Response length T.")
_MAX_PROMPT = flags.DEFINE_integer(
    "max_prompt_len", 0, "Prompt width (0: the longest question)."
)
_GRADING = script_flags.grading_flags()
_SEED = flags.DEFINE_integer("seed", 0, "PRNG seed.")
_OUT = flags.DEFINE_string("out", None, "Report directory.")


def _source():
  """The question source for --task, checked before any model loads."""
  from opd_jax.data import sources  # pylint: disable=g-import-not-at-top

  from opd_jax.data import tasks  # pylint: disable=g-import-not-at-top

  if _TASK.value in tasks.NAMES:
    return script_flags.task_source(
        _TASK.value,
        _SRC.difficulty.value,
        _SRC.split.value,
        _N.value,
        _MAX_NEW.value,
    )
  path = _TASK.value
  if not os.path.exists(path):
    raise InputError(
        f"--task {path!r}: no such task or file (expected one of"
        f" {tasks.NAMES} or a jsonl / parquet file of questions and answers)"
    )
  if os.path.isfile(path) and not open(path, "rb").read(4096).strip():
    raise InputError(f"--task {path}: the question file is empty")
  _check_file_flags(path, "--task")
  try:
    source = sources.FileSource(
        path,
        question_field=_SRC.question_field.value,
        answer_field=_SRC.answer_field.value,
        context_fields=_context_columns() or None,
        # A saved DatasetDict is read at --split (default 'test', held-out
        # questions as with a built-in task), not at its training split.
        split=_SRC.split.value,
    )
  except ValueError as e:
    raise InputError(f"--task {path}: {e}") from e
  for i in range(min(len(source), _N.value)):
    if not source[i].answer:
      raise InputError(
          f"--task {path}: question {i} has no answer in field"
          f" {_SRC.answer_field.value!r}; the diagnostic needs a verifier for"
          " every question"
      )
  return source


def _check_file_flags(path: str, flag: str) -> None:
  """Refuses a built-in task's flag that cannot act on the file `path`."""
  if _SRC.split.present and not os.path.isdir(path):
    raise InputError(
        f"--split={_SRC.split.value}: a file has no splits ({flag} {path});"
        " --split picks a built-in task's split or a saved DatasetDict's"
    )
  if _SRC.difficulty.present:
    raise InputError(
        f"--difficulty: picks a built-in task's level; {flag} is the file"
        f" {path}"
    )


def _context_columns() -> dict[str, str]:
  """{placeholder: file field} of the --*_field context flags."""
  flags_ = {"solution": _SOLUTION, "summary": _SUMMARY, "wrong": _WRONG}
  return {k: f.value for k, f in flags_.items() if f.value}


def _configurations() -> list[tuple[str, str, str]]:
  """(name, 'teacher' | 'self', template or '') of each --teachers entry."""
  from opd_jax.data import context as contexts  # pylint: disable=g-import-not-at-top

  out = []
  for entry in _TEACHERS.value:
    who, _, template = entry.partition(":")
    if who not in ("teacher", "self"):
      raise InputError(
          f"--teachers: entry {entry!r}: expected 'teacher' or 'self',"
          " optionally followed by ':TEMPLATE'"
      )
    if template and template not in contexts.TEMPLATES:
      raise InputError(
          f"--teachers: entry {entry!r}: template {template!r} is not one of"
          f" {sorted(contexts.TEMPLATES)}"
      )
    if who == "self" and template in ("", "empty"):
      raise InputError(
          f"--teachers: entry {entry!r}: the student against its own weights"
          " on its own prompt has no distillation direction (every objective"
          " is 0); give it a context, e.g. 'self:solution'"
      )
    if entry in [name for name, _, _ in out]:
      raise InputError(f"--teachers: entry {entry!r} is given twice")
    out.append((entry, who, template))
  if not out:
    raise InputError("--teachers: expected at least one configuration")
  if any(who == "teacher" for _, who, _ in out) and not _TEACHER.value:
    raise InputError(
        "--teacher: required by the --teachers entry 'teacher' (or list only"
        " 'self:TEMPLATE' configurations)"
    )
  return out


def _check_contexts(source, configurations) -> None:
  """Refuses a template naming a field the question source lacks."""
  from opd_jax.data import context as contexts  # pylint: disable=g-import-not-at-top
  from opd_jax.data import sources  # pylint: disable=g-import-not-at-top

  if isinstance(source, sources.TaskSource):
    available = source.CONTEXT_FIELDS
    hint = f"the {source.task_name} task has these"
  else:
    available = list(_context_columns()) + ["answer"]
    hint = "name the file's field with --<name>_field"
  for entry, _, template in configurations:
    try:
      contexts.check_available(template or "empty", available, hint)
    except contexts.ContextError as e:
      msg = str(e).replace(contexts.FIELD_NAME, f"--teachers entry {entry!r}")
      raise InputError(msg) from None


def _teacher_prompts(source, tokenizer, data, n, template):
  """(ids int32 [n, Pt], mask) of the teacher's prompts under `template`."""
  from opd_jax.data import context as contexts  # pylint: disable=g-import-not-at-top
  from opd_jax.data.dataset import PromptDataset  # pylint: disable=g-import-not-at-top

  try:
    ctx = contexts.TeacherContext(template, _TEACHER_PROMPT.value or 1 << 20)
    with_context = PromptDataset(
        source,
        tokenizer,
        max_prompt_len=_MAX_PROMPT.value or 1 << 20,
        overlong="truncate",
        teacher_context=ctx,
    )
  except contexts.ContextError as e:
    msg = str(e).replace(contexts.FIELD_NAME, "--teacher_prompt_len")
    raise InputError(msg.replace("config.teacher_context.", "--")) from None
  if [list(p) for p in with_context.prompts[:n]] != [
      list(p) for p in data.prompts[:n]
  ]:
    raise RuntimeError("the teacher prompts' rows differ from the questions'")
  return _left_pad(with_context.teacher_prompts.ids[:n], data.pad_id)


def _questions(source, tokenizer):
  """(dataset, number of questions) of tokenized prompts."""
  from opd_jax.data.dataset import PromptDataset  # pylint: disable=g-import-not-at-top

  data = PromptDataset(
      source,
      tokenizer,
      max_prompt_len=_MAX_PROMPT.value or 1 << 20,
      overlong="truncate",
  )
  n = min(len(data), _N.value)
  if not all(data.answers[:n]):  # rows may shift when empty prompts drop
    raise InputError(f"--task {source.name}: a question has no answer")
  return data, n


def _grader(source, data, n):
  """The evaluation's grader for the source, its answers checked first."""
  from opd_jax.evaluation import graders  # pylint: disable=g-import-not-at-top

  grader = graders.grader_for(
      source,
      num_workers=_GRADING.workers.value,
      timeout=_GRADING.timeout.value,
  )
  for i, why in enumerate(grader.unusable(data.answers[:n])):
    if why:
      grader.close()
      raise InputError(f"--task {source.name}: question {i}: {why}")
  return grader


def _graders(data, n, tokenizer, grader):
  """One grader per question (response ids -> correct?) over `grader`."""

  def make(answer):
    def grade(responses):
      texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
      return [bool(v) for v in grader(texts, [answer] * len(texts))]

    return grade

  return [make(data.answers[i]) for i in range(n)]


def _left_pad(rows, pad_id):
  """int32 [n, P] left-padded prompts and their mask, P the longest row."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  width = max(len(r) for r in rows)
  ids = np.full((len(rows), width), pad_id, np.int32)
  mask = np.zeros((len(rows), width), bool)
  for i, r in enumerate(rows):
    ids[i, width - len(r) :], mask[i, width - len(r) :] = r, True
  return ids, mask


def _setup():
  """Validates every input and loads everything; raises InputError."""
  import transformers  # pylint: disable=g-import-not-at-top
  from opd_jax.diagnostics import alignment, report, tree  # pylint: disable=g-import-not-at-top

  if _N.value < 1:
    raise InputError(f"--num_questions: expected >= 1, got {_N.value}")
  try:
    report.check_output_dir(_OUT.value)
    config = tree.TreeConfig(
        num_rollouts=_G.value,
        top_c=_C.value,
        continuations=_CONT.value,
        nodes_per_window=_M.value,
        min_visits=_MIN_VISITS.value,
        budget=_BUDGET.value,
        select=_SELECT.value,
        temperature=_TEMPERATURE.value,
        max_new_tokens=_MAX_NEW.value,
    )
  except ValueError as e:
    raise InputError(str(e).replace("TreeConfig.", "--")) from e
  configurations = _configurations()
  source = _source()
  _check_contexts(source, configurations)
  loaded = script_flags.load_model(
      _STUDENT.value, "student", allow_workdir=True
  )
  student, tok_dir, s_name = loaded.model, loaded.tokenizer_dir, loaded.name
  teacher, t_name = None, None
  if any(who == "teacher" for _, who, _ in configurations):
    loaded = script_flags.load_model(
        _TEACHER.value, "teacher", allow_workdir=False
    )
    teacher, t_name = loaded.model, loaded.name
    if student.config.vocab_size != teacher.config.vocab_size:
      raise InputError(
          f"--teacher {_TEACHER.value}: vocabulary {teacher.config.vocab_size}"
          f" differs from the student's {student.config.vocab_size}"
      )
  tokenizer = transformers.AutoTokenizer.from_pretrained(
      _TOKENIZER.value or tok_dir
  )
  data, n = _questions(source, tokenizer)
  setups = []
  for name, who, template in configurations:
    prompts = mask = None
    if template:
      prompts, mask = _teacher_prompts(source, tokenizer, data, n, template)
    model = teacher if who == "teacher" else student
    setups.append(alignment.TeacherSetup(name, model, prompts, mask))
  grader = _grader(source, data, n)
  meta = {
      "student": s_name,
      "teacher": t_name,
      "teachers": [name for name, _, _ in configurations],
      "task": source.name,
      "questions": n,
      **{k: v for k, v in vars(config).items()},
      "seed": _SEED.value,
      "grader": grader.name,
  }
  return student, setups, tokenizer, data, n, config, meta, grader


def main(argv):
  start = time.time()
  student, setups, tokenizer, data, n, config, meta, grader = _setup()
  import jax  # pylint: disable=g-import-not-at-top
  from opd_jax.diagnostics import alignment, report  # pylint: disable=g-import-not-at-top
  from opd_jax.rollouts import default_eos_ids  # pylint: disable=g-import-not-at-top

  prompt, prompt_mask = _left_pad(data.prompts[:n], data.pad_id)
  eos = default_eos_ids(student.config, tokenizer)

  def progress(r):
    print(
        f"question {r.index + 1}/{n}: rollout accuracy {r.accuracy:.2f},"
        f" {len(r.nodes)} nodes, {r.rollouts} rollouts"
        f" ({time.time() - start:.0f} s)",
        flush=True,
    )

  with grader:
    results = alignment.diagnose(
        student,
        setups,
        prompt,
        prompt_mask,
        _graders(data, n, tokenizer, grader),
        config,
        jax.random.PRNGKey(_SEED.value),
        eos_ids=eos,
        pad_id=data.pad_id,
        progress=progress,
    )
  by_teacher = {
      t.name: [node for r in results for node in r.by_teacher[t.name]]
      for t in setups
  }
  questions = [
      {
          "index": r.index,
          "question": data.questions[r.index],
          "answer": data.answers[r.index],
          "accuracy": r.accuracy,
          "rollouts": r.rollouts,
          "nodes": len(r.nodes),
      }
      for r in results
  ]
  meta["seconds"] = round(time.time() - start, 1)
  summaries = report.write_teacher_report(
      _OUT.value, by_teacher, questions, meta
  )
  for name, summary in summaries.items():
    prefix = f"{name}: " if len(summaries) > 1 else ""
    print(prefix + report.headline(summary))
  print(
      f"report: {os.path.join(_OUT.value, report.REPORT)} ({meta['seconds']} s)"
  )


if __name__ == "__main__":
  flags.mark_flags_as_required(["student", "out"])
  cli.run(main)
