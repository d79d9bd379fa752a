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
"""The catalogue of a user's mistakes per script, run as a user runs them.

One table per entry point (export, sample, evaluate, make_student, train's
config files): each case is a command line, the exit code it must give and
the fragment its one `error:` line must hold. Every error case prints that
one line and nothing else: no traceback, no orbax / absl INFO lines, no
"Unable to initialize backend", no HF-config warning, no TensorStore dump.
All the command lines run in one `tests/scripts_worker.py` process, each in
a fork of it (a case costs what the script does, not its imports), against
one tiny run made without training (`_fake_run`).

The training loop's own cases (interrupts, an unreadable only checkpoint,
`--restart`) follow the tables.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
from flax import nnx
import scripts_worker  # tests/, on the path beside conftest.py

from opd_jax import testing
from opd_jax.models import load_hf
from opd_jax.trainer import checkpointing, workdir as workdir_lib
from opd_jax.trainer.config import to_run_config
from opd_jax.trainer.plan import plan_run

_ROOT = os.path.dirname(os.path.dirname(__file__))
_STEP = 3  # the fake run's checkpoint


def _fake_run(pair, workdir: str, difficulty: str = "easy") -> str:
  """A run's workdir (config.json + one checkpoint), without training."""
  c = testing.tiny_train_config(pair)
  c.data.difficulty = difficulty
  plan = plan_run(to_run_config(c))
  _, state = nnx.split(load_hf(pair["student"]))
  os.makedirs(workdir)
  ck = checkpointing.Checkpointer(workdir, async_save=False)
  ck.save(_STEP, plan.init_state(state.to_pure_dict()), {"epoch": 0})
  ck.close()
  with open(os.path.join(workdir, workdir_lib.CONFIG_FILE), "w") as f:
    f.write(c.to_json(indent=2))
  return workdir


def _truncate_checkpoint(workdir: str) -> None:
  for root, _, files in os.walk(os.path.join(workdir, "checkpoints")):
    for name in files:
      if os.sep + "d" in root:  # the array chunks
        os.truncate(os.path.join(root, name), 0)


_TYPO_CONFIG = """
from opd_jax import testing
def get_config():
  c = testing.tiny_train_config({{"student": {s!r}, "teacher": {t!r}}})
  {line}
  return c
"""

# File name -> text of the config files the train cases use ({s}/{t}: the
# pair's student and teacher).
_CONFIG_FILES = {
    "syntax.py": "def get_config(:\n  pass\n",
    "dict.py": "def get_config():\n  return {{'seed': 1}}\n",
    "import.py": "import no_such_module_here\ndef get_config():\n  pass\n",
    "no_get_config.py": "seed = 1\n",
    "optimiser.py": _TYPO_CONFIG.replace("{line}", "c.optimiser = c.optimizer"),
    "eval_evry.py": _TYPO_CONFIG.replace("{line}", "c.eval_evry = 10"),
    "temprature.py": _TYPO_CONFIG.replace(
        "{line}", "c.sampling.temprature = 0.5"
    ),
    # A field renamed since (config.RENAMED_FIELDS).
    "renamed.py": _TYPO_CONFIG.replace(
        "{line}", "c.tip.tip_divergence = 'reverse_kl'"
    ),
}

_TINY = os.path.join(_ROOT, "tests", "trainer", "tiny_run_config.py")

# (name, argv: script then flags with {names} of `_paths` filled in,
#  expected exit code, fragment of the last stderr line or of stdout).
EXPORT = [
    (
        "export: --out is a file",
        ["export", "--workdir={run}", "--out={file}"],
        2,
        "--out: {file} is a file",
    ),
    (
        "export: --out not empty, refused before loading",
        ["export", "--workdir={run}", "--out={full}"],
        2,
        "--out: {full} is not empty",
    ),
    (
        "export: --workdir missing",
        ["export", "--workdir={tmp}/nope", "--out={tmp}/o1"],
        2,
        "--workdir: {tmp}/nope does not exist",
    ),
    (
        "export: --workdir empty",
        ["export", "--workdir={empty}", "--out={tmp}/o1"],
        2,
        "--workdir: {empty} holds no config.json",
    ),
    (
        "export: --workdir is an HF directory",
        ["export", "--workdir={student}", "--out={tmp}/o1"],
        2,
        "--workdir: {student} is a model directory",
    ),
    (
        "export: only checkpoint truncated",
        ["export", "--workdir={truncated}", "--out={tmp}/o1"],
        2,
        "no checkpoint in {truncated}/checkpoints can be restored (step 3:",
    ),
    (
        "export: the run's student directory moved, its checkpoints fine",
        ["export", "--workdir={moved}", "--out={tmp}/o1"],
        2,
        (
            "the run's student directory {tmp}/moved_student (config.student)"
            " is not on this machine: restoring reads the model's shapes from"
            " its config.json. The checkpoints in {moved}/checkpoints are"
            " unchanged; put the directory back at that path"
        ),
    ),
    (
        "export: the student moved, and its preset does not fit",
        ["export", "--workdir={moved_preset}", "--out={tmp}/o1"],
        2,
        (
            "put the directory back at that path"
            " (config.student_preset='qwen3_0p6b', tried in its place, does"
            " not fit the checkpoints)"
        ),
    ),
    (
        "export: a run",
        ["export", "--workdir={run}", "--out={exported}"],
        0,
        "exported step 3 of {run} to {exported}",
    ),
]

SAMPLE = [
    (
        "sample: prompts file missing",
        ["sample", "--workdir={run}", "--prompts={tmp}/nope.txt"],
        2,
        "--prompts: {tmp}/nope.txt does not exist",
    ),
    (
        "sample: prompts file empty, no usage text",
        ["sample", "--workdir={run}", "--prompts={empty_txt}"],
        2,
        "--prompts: {empty_txt} holds no prompts",
    ),
    (
        "sample: bad JSONL line",
        ["sample", "--workdir={run}", "--prompts={bad_jsonl}"],
        2,
        "--prompts: {bad_jsonl} line 2: not valid JSON",
    ),
    (
        "sample: JSONL line without the field",
        [
            "sample",
            "--workdir={run}",
            "--prompts={bad_jsonl}",
            "--question_field=q",
        ],
        2,
        "line 1: no field 'q' (--question_field",
    ),
    (
        "sample: --workdir missing",
        ["sample", "--workdir={tmp}/nope", "--prompts={prompts}"],
        2,
        "--workdir: {tmp}/nope does not exist",
    ),
    (
        "sample: --workdir is an exported HF directory",
        ["sample", "--workdir={student}", "--prompts={prompts}"],
        2,
        "--workdir: {student} is a model directory",
    ),
    (
        "sample: negative temperature",
        [
            "sample",
            "--workdir={run}",
            "--prompts={prompts}",
            "--temperature=-1",
        ],
        2,
        "--temperature: expected a finite number >= 0 (0 is greedy), got -1.0",
    ),
    (
        "sample: a positional argument",
        ["sample", "--workdir={run}", "--prompts={prompts}", "extra"],
        2,
        "unexpected arguments: ['extra'] (every option is a --flag)",
    ),
    (
        "export: a positional argument",
        ["export", "--workdir={run}", "--out={tmp}/o2", "{tmp}/o3"],
        2,
        "unexpected arguments: ['{tmp}/o3']",
    ),
    (
        "sample: top_p 0",
        ["sample", "--workdir={run}", "--prompts={prompts}", "--top_p=0"],
        2,
        "--top_p: expected a value in (0, 1]",
    ),
    (
        "sample: no samples",
        ["sample", "--workdir={run}", "--prompts={prompts}", "--num_samples=0"],
        2,
        "--num_samples: expected an integer >= 1, got 0",
    ),
    (
        "sample: beyond the model's positions",
        [
            "sample",
            "--workdir={run}",
            "--prompts={prompts}",
            "--max_new_tokens=5000",
        ],
        2,
        "+ 5000 new tokens exceeds the model's max_position_embeddings (512)",
    ),
    (
        "sample: words the tokenizer lacks are refused, not read as <unk>",
        ["sample", "--workdir={run}", "--prompts={prompts}"],
        2,
        (
            "--prompts: {prompts} line 1: the words ['What', 'is'] are not in"
            " the vocabulary of the run's tokenizer {student}"
        ),
    ),
    (
        (
            "sample: a prompt longer than the model's positions is refused,"
            " not cut"
        ),
        ["sample", "--workdir={run}", "--prompts={long_txt}"],
        2,
        (
            "--prompts: {long_txt} line 2: the prompt is 609 tokens; expected"
            " at most 500 (the model's max_position_embeddings 512 - 12 new"
            " tokens, --max_new_tokens)"
        ),
    ),
    (
        "sample: several greedy samples would be identical",
        [
            "sample",
            "--workdir={run}",
            "--prompts={ok_txt}",
            "--num_samples=3",
        ],
        2,
        (
            "--num_samples=3: greedy decoding (--temperature=0, the default)"
            " gives 3 identical samples; expected --temperature > 0"
        ),
    ),
    (
        "sample: a prompt longer than the run's max_prompt_len is kept whole",
        [
            "sample",
            "--workdir={run}",
            "--prompts={ok_txt}",
            "--num_samples=2",
            "--temperature=0.7",
            "--max_new_tokens=4",
        ],
        0,
        '"sample": 1, "question": "Ann has 5 coins. She buys 3 more.',
    ),
]

_OK_EVAL = [
    "evaluate",
    "--model={run}",
    "--num_questions=1",
    # The task's shortest reference response (easy: 11 tokens with <eos>).
    "--max_new_tokens=12",
    "--batch_size=1",
]
EVALUATE = [
    (
        "evaluate: unknown difficulty names the flag",
        ["evaluate", "--model={run}", "--difficulty=medium"],
        2,
        "--difficulty=medium: value should be one of",
    ),
    (
        "evaluate: --out_dir is a file, refused first",
        ["evaluate", "--model={run}", "--out_dir={file}"],
        2,
        "--out_dir: {file} is a file",
    ),
    (
        "evaluate: no samples",
        ["evaluate", "--model={run}", "--num_samples=0"],
        2,
        "--num_samples: expected an integer >= 1, got 0",
    ),
    (
        "evaluate: beyond the model's positions (HF export, no warning)",
        ["evaluate", "--model={exported}", "--max_new_tokens=5000"],
        2,
        "+ 5000 new tokens exceeds the model's max_position_embeddings (512)",
    ),
    (
        "evaluate: a workdir, the run's difficulty",
        ["evaluate", "--model={run}", "--max_new_tokens=5000"],
        2,
        "+ 5000 new tokens exceeds",
    ),
    (
        "evaluate: a run",
        _OK_EVAL,
        0,
        "difficulty easy (the run's)",
    ),
    (
        "evaluate: the same again keeps the first scores",
        _OK_EVAL,
        0,
        (
            "{run}/eval/step_3 holds earlier scores (kept); writing to"
            " {run}/eval/step_3-2"
        ),
    ),
]

_BANANA_EVAL = [
    "evaluate",
    "--model={student}",
    "--data={banana}",
    "--max_new_tokens=4",
    "--batch_size=2",
    "--out_dir={tmp}/ev_banana",
]
EVALUATE += [
    (
        "evaluate: a word as a reference answer is refused, naming its row",
        _BANANA_EVAL,
        2,
        "banana.jsonl line 2: answer 'banana' is text ('banana'), not math",
    ),
    (
        "evaluate: --skip_ungradable drops and counts it",
        _BANANA_EVAL + ["--skip_ungradable"],
        0,
        "--skip_ungradable: 1 of 2 evaluation rows of",
    ),
]

EVALUATE += [
    (
        "evaluate: pass@k of greedy samples is refused",
        ["evaluate", "--model={run}", "--num_samples=4"],
        2,
        (
            "--num_samples=4: pass@4 of greedy decoding (--temperature=0, the"
            " default) is pass@1 of 4 identical samples; expected"
            " --temperature > 0"
        ),
    ),
    (
        "evaluate: more countdown problems than exist, refused at once",
        [
            "evaluate",
            "--model={student}",
            "--data=countdown",
            "--num_questions=100000000",
        ],
        2,
        (
            "--num_questions: expected at most 2400 (countdown (default) has"
            " 2400 distinct test problems), got 100000000"
        ),
    ),
    (
        "evaluate: arithmetic questions without end are capped, at once",
        [
            "evaluate",
            "--model={student}",
            "--data=arithmetic",
            "--num_questions=100000000",
        ],
        2,
        (
            "--num_questions: expected at most 100000 (arithmetic's test"
            " problems are drawn without end; more would take hours and"
            " measure accuracy no better than +-0.3%), got 100000000"
        ),
    ),
    (
        "evaluate: more problems than a split at a level holds",
        [
            "evaluate",
            "--model={student}",
            "--data=countdown",
            "--difficulty=easy",
            "--split=validation",
            "--num_questions=498",
        ],
        2,
        (
            "--num_questions: expected at most 497 (countdown (easy) has 497"
            " distinct validation problems), got 498"
        ),
    ),
    (
        "evaluate: a prompt over --max_prompt_len is refused, not cut",
        [
            "evaluate",
            "--model={student}",
            "--data={ok_eval}",
            "--max_prompt_len=20",
            "--max_new_tokens=4",
        ],
        2,
        (
            "--max_prompt_len=20: {ok_eval} line 2 is a 64-token prompt (1 of"
            " 2 are longer); prompts are never cut"
        ),
    ),
    (
        "evaluate: an HF directory's scores go beside it, not into the cwd",
        [
            "evaluate",
            "--model={student}",
            "--data={ok_eval}",
            "--max_new_tokens=4",
            "--batch_size=2",
        ],
        0,
        '"out_dir": "{student}_eval"',
    ),
    (
        "evaluate: --skip_ungradable, words the tokenizer lacks are said",
        [
            "evaluate",
            "--model={student}",
            "--data={banana_first}",
            "--skip_ungradable",
            "--max_new_tokens=4",
            "--out_dir={tmp}/ev_index",
        ],
        0,
        (
            "warning: 1 of 1 questions of {banana_first} hold words the"
            " tokenizer {student} reads as <unk> (first: line 2: ['What',"
            " 'is']): the model reads other questions than written"
        ),
    ),
]

# What a second look at the README's commands and --help turned up.
EVALUATE += [
    (
        "evaluate: a level the task lacks is one line, not a traceback",
        [
            "evaluate",
            "--model={student}",
            "--data=countdown",
            "--difficulty=two_step",
        ],
        2,
        "--difficulty: task 'countdown' has difficulties ('easy', 'default',",
    ),
    (
        "evaluate: an unknown split names --split",
        ["evaluate", "--model={run}", "--split=tset"],
        2,
        "--split: expected one of ('train', 'validation', 'test'), got 'tset'",
    ),
    (
        "evaluate: --split with a file is refused, not ignored",
        ["evaluate", "--model={student}", "--data={ok_eval}", "--split=train"],
        2,
        "--split=train: a file has no splits ({ok_eval})",
    ),
    (
        "evaluate: a nan temperature is refused",
        ["evaluate", "--model={run}", "--temperature=nan"],
        2,
        "--temperature: expected a finite number >= 0 (0 is greedy), got nan",
    ),
    (
        "evaluate: a batch wider than the data is not padded to its width",
        [
            "evaluate",
            "--model={student}",
            "--data={ok_eval}",
            "--batch_size=100000000",
            "--max_new_tokens=4",
            "--out_dir={tmp}/ev_batch",
        ],
        0,
        '"questions": 2',
    ),
]
EVALUATE += [
    (
        "evaluate: --difficulty with a file is refused, not ignored",
        [
            "evaluate",
            "--model={student}",
            "--data={ok_eval}",
            "--difficulty=easy",
        ],
        2,
        (
            "--difficulty: picks a built-in task's level; --data is the file"
            " {ok_eval} (--data)"
        ),
    ),
    (
        "evaluate: --question_field with a built-in task is refused",
        ["evaluate", "--model={run}", "--question_field=problem"],
        2,
        (
            "--question_field: names a field of a --data file; the built-in"
            " task arithmetic (the run's) has none"
        ),
    ),
    (
        "evaluate: a run on a file without eval_path, not arithmetic instead",
        ["evaluate", "--model={file_run}"],
        2,
        (
            "--data: the run in {file_run} trained on a file ({ok_eval}) and"
            " has no config.data.eval_path; expected --data=FILE"
        ),
    ),
    (
        "evaluate: a workdir's response budget is its run's, not 64",
        [
            "evaluate",
            "--model={run}",
            "--num_questions=1",
            "--batch_size=1",
            "--out_dir={tmp}/ev_budget",
        ],
        0,
        "max_new_tokens 12 (the run's)",
    ),
    (
        "evaluate: a workdir's prompts carry its run's system prompt",
        [
            "evaluate",
            "--model={sys_run}",
            "--max_prompt_len=64",
            "--max_new_tokens=4",
        ],
        2,
        # 64 tokens bare, 7 more with the run's system turn.
        "--max_prompt_len=64: {ok_eval} line 2 is a 71-token prompt",
    ),
    (
        "evaluate: a run on a file without eval_path, on its held-out rows",
        [
            "evaluate",
            "--model={file_run_held}",
            "--max_new_tokens=4",
            "--out_dir={tmp}/ev_held",
        ],
        0,
        (
            "data {ok_eval} (the run's held-out rows)\nrows {ok_eval} (1 of 2"
            " questions held out, 0.5)"
        ),
    ),
    (
        "evaluate: a run on a file is evaluated on its eval_path",
        [
            "evaluate",
            "--model={file_run_eval}",
            "--max_new_tokens=4",
            "--num_questions=1",
        ],
        0,
        "data {ok_eval} (the run's eval_path)",
    ),
]
SAMPLE += [
    (
        "sample: a missing --flagfile is named (was 'error: 2')",
        [
            "sample",
            "--workdir={run}",
            "--prompts={ok_txt}",
            "--flagfile={tmp}/nope.flags",
        ],
        2,
        (
            "--flagfile={tmp}/nope.flags: [Errno 2] No such file or directory:"
            " '{tmp}/nope.flags'"
        ),
    ),
    (
        "sample: a JSON array file is not read line by line as questions",
        ["sample", "--workdir={run}", "--prompts={prompts_json}"],
        2,
        (
            "--prompts: {prompts_json} is a .json file; expected a text file"
            " (one question per line) or a .jsonl file"
        ),
    ),
    (
        "sample: a short flag keeps its closing quote",
        ["sample", "--workdir={run}", "--prompts={ok_txt}", "-n", "3"],
        2,
        "error: Unknown command line flag 'n'",
    ),
    (
        "sample: top_p under greedy decoding would do nothing",
        ["sample", "--workdir={run}", "--prompts={ok_txt}", "--top_p=0.5"],
        2,
        (
            "--top_p=0.5: has no effect with greedy decoding (--temperature=0,"
            " the default)"
        ),
    ),
    (
        "sample: a question that is not a string",
        [
            "sample",
            "--workdir={run}",
            "--prompts={bad_jsonl}",
            "--question_field=n",
        ],
        2,
        "--prompts: {bad_jsonl} line 1: field 'n': expected a string, got int",
    ),
]

MAKE_STUDENT = [
    (
        "make_student: zero layers",
        [
            "make_student",
            "--teacher={student}",
            "--num_layers=0",
            "--out={tmp}/ms",
        ],
        2,
        "--num_layers: expected an integer >= 1, got 0",
    ),
]

TRAIN = [
    (
        f"train: config {name}",
        ["train", f"--config={{tmp}}/{name}", "--workdir={tmp}/w", "--dry_run"],
        2,
        fragment,
    )
    for name, fragment in (
        ("syntax.py", "--config={tmp}/syntax.py: syntax error in"),
        ("dict.py", "--config={tmp}/dict.py: get_config() returned dict"),
        ("import.py", "No module named 'no_such_module_here'"),
        ("no_get_config.py", "defines no get_config() function"),
        ("nope.py", "--config={tmp}/nope.py: no such file"),
        (
            "optimiser.py",
            "config.optimiser: no such field; did you mean config.optimizer?",
        ),
        (
            "eval_evry.py",
            "config.eval_evry: no such field; did you mean config.eval_every?",
        ),
        (
            "temprature.py",
            (
                "config.sampling.temprature: no such field; did you mean"
                " config.sampling.temperature?"
            ),
        ),
        (
            "renamed.py",
            (
                "config.tip.tip_divergence: no such field; it is"
                " config.tip.score_divergence now"
            ),
        ),
    )
] + [
    (
        "train: bad boolean names the flag",
        ["train", "--config={tiny}", "--dry_run=maybe"],
        2,
        "--dry_run=maybe: expected true or false",
    ),
    (
        "train: another method's field is refused, before any compile",
        [
            "train",
            "--config={tiny}",
            "--config.method=rkl",
            "--config.tip.rho=0.2",
            "--dry_run",
        ],
        2,
        (
            "--config.tip.rho: a field of method 'tip', but config.method is"
            " 'rkl': it has no effect in this run"
        ),
    ),
    (
        "train: a forgotten teacher is refused, not a random preset",
        [
            "train",
            "--config={tiny}",
            "--config.teacher=",
            "--config.teacher_preset=qwen3_0p6b",
            "--dry_run",
        ],
        2,
        "config.teacher: expected an HF checkpoint directory (or 'self')",
    ),
    (
        "train: data.path with the built-in task",
        [
            "train",
            "--config={tiny}",
            "--config.data.path={prompts}",
            "--dry_run",
        ],
        2,
        "config.data.path: expected '' with the built-in task",
    ),
    (
        "train: the flag whose value failed is named, not an earlier one",
        [
            "train",
            "--config={tiny}",
            "--config.eval_every=0",
            "--config.total_steps=1.5",
            "--dry_run",
        ],
        2,
        "error: --config.total_steps=1.5: invalid literal for int()",
    ),
    (
        "train: a typo in a block name suggests the block",
        ["train", "--config={tiny}", "--config.tipp.rho=0.5", "--dry_run"],
        2,
        (
            "error: --config.tipp: no such block; did you mean 'tip'? (in"
            " --config.tipp.rho)"
        ),
    ),
    (
        "train: a bad boolean of a config field names it",
        [
            "train",
            "--config={tiny}",
            "--config.async_checkpointing=maybe",
            "--dry_run",
        ],
        2,
        "error: --config.async_checkpointing=maybe: expected true or false",
    ),
    (
        "train: a warm-up as long as the run, refused before any compile",
        [
            "train",
            "--config={tiny}",
            "--config.optimizer.warmup_steps=6",
            "--dry_run",
        ],
        2,
        (
            "config.optimizer.warmup_steps: expected an integer <"
            " config.total_steps=6 (the warm-up must end inside the run), got 6"
        ),
    ),
    (
        "train: student is a file",
        ["train", "--config={tiny}", "--config.student={file}", "--dry_run"],
        2,
        "config.student: '{file}' is a file",
    ),
]

# demo.py and train_teacher.py run through cli.run as the others do.
DEMO = [
    (
        "demo: --workdir is a training run, never deleted",
        ["demo", "--workdir={run}"],
        2,
        "--workdir={run} is not empty and is not a demo run (no .opd_jax_demo",
    ),
    (
        "demo: --workdir is a file",
        ["demo", "--workdir={file}"],
        2,
        "--workdir={file} is a file, not a directory",
    ),
    (
        "demo: a config file that does not exist",
        ["demo", "--config={tmp}/nope.py", "--workdir={tmp}/d1"],
        2,
        "--config={tmp}/nope.py: no such file",
    ),
    (
        "demo: a typo in a field",
        ["demo", "--config.total_stepz=5", "--workdir={tmp}/d1"],
        2,
        "--config.total_stepz: no such field; did you mean 'total_steps'?",
    ),
    (
        "demo: zero steps, refused before the workdir is made",
        ["demo", "--config.total_steps=0", "--workdir={tmp}/d1"],
        2,
        "config.total_steps: expected an integer >= 1, got 0",
    ),
    (
        "demo: fewer steps than its warm-up, refused before the workdir",
        ["demo", "--config.total_steps=5", "--workdir={tmp}/d1"],
        2,
        (
            "config.optimizer.warmup_steps: expected an integer <"
            " config.total_steps=5 (the warm-up must end inside the run), got"
            " 10"
        ),
    ),
    (
        "demo: a bad flag value is one line, not absl's FATAL",
        ["demo", "--resume=maybe", "--workdir={tmp}/d1"],
        2,
        "--resume=maybe: expected true or false (--resume / --noresume)",
    ),
    (
        "demo: a positional argument",
        ["demo", "--workdir={tmp}/d1", "extra"],
        2,
        "unexpected arguments: ['extra']",
    ),
]

_TINY_SFT = [
    "--num_steps=1",
    "--num_examples=4",
    "--batch_size=4",
    "--num_layers=1",
    "--embed_dim=16",
    "--eval_examples=1",
]
TRAIN_TEACHER = [
    (
        "train_teacher: --out is a file",
        ["train_teacher", "--out={file}"],
        2,
        "--out: {file} is a file, not a directory",
    ),
    (
        "train_teacher: zero steps",
        ["train_teacher", "--out={tmp}/tt", "--num_steps=0"],
        2,
        "--num_steps: expected an integer >= 1, got 0",
    ),
    (
        "train_teacher: a bad flag value",
        ["train_teacher", "--out={tmp}/tt", "--num_steps=abc"],
        2,
        "--num_steps=abc: invalid literal for int()",
    ),
    (
        "train_teacher: no --out",
        ["train_teacher"],
        2,
        "--out is required",
    ),
    (
        "train_teacher: a model in --out is kept",
        ["train_teacher", "--out={model_out}", *_TINY_SFT],
        0,
        (
            "--out: the previous contents of {model_out} moved to"
            " {model_out}.previous-"
        ),
    ),
]

CONTEXT_ACCURACY = [
    (
        "context_accuracy: no model",
        ["context_accuracy", "--model={tmp}/nope"],
        2,
        "--model: tokenizer directory '{tmp}/nope' does not exist",
    ),
    (
        "context_accuracy: unknown template, before loading",
        ["context_accuracy", "--model={tmp}/nope", "--templates=empty,nosuch"],
        2,
        "config.teacher_context.template: expected one of",
    ),
    (
        "context_accuracy: a context prompt is refused, not cut from the left",
        [
            "context_accuracy",
            "--model={student}",
            "--templates=empty,solution",
            "--num_questions=4",
            "--max_new_tokens=12",
            "--max_prompt_len=40",
        ],
        2,
        (
            "max_prompt_len: 4 of 4 prompts of template 'solution' are longer"
            " than 40 tokens (the longest 60) and would be cut; expected >= 60"
        ),
    ),
    (
        "context_accuracy: more countdown problems than exist",
        [
            "context_accuracy",
            "--model={student}",
            "--task=countdown",
            "--difficulty=easy",
            "--num_questions=100000000",
        ],
        2,
        (
            "--num_questions: expected at most 480 (countdown (easy) has 480"
            " distinct test problems), got 100000000"
        ),
    ),
    (
        "context_accuracy: bare and with the solution",
        [
            "context_accuracy",
            "--model={student}",
            "--templates=empty,solution",
            "--num_questions=4",
            "--max_new_tokens=12",
        ],
        0,
        "solution: accuracy",
    ),
]

# A built-in task's --split and --difficulty cannot act on a file of
# questions: refused; diagnose reads a saved DatasetDict at --split.
_DIAGNOSE = [
    "diagnose",
    "--student={student}",
    "--teacher={teacher}",
    "--out={tmp}/diagnosis",
]
DIAGNOSE = [
    (
        "diagnose: --split with a file",
        _DIAGNOSE + ["--task={ok_eval}", "--split=validation"],
        2,
        (
            "--split=validation: a file has no splits (--task {ok_eval});"
            " --split picks a built-in task's split or a saved DatasetDict's"
        ),
    ),
    (
        "diagnose: --difficulty with a file",
        _DIAGNOSE + ["--task={ok_eval}", "--difficulty=easy"],
        2,
        "--difficulty: picks a built-in task's level; --task is the file",
    ),
    (
        "diagnose: a saved DatasetDict is read at --split",
        _DIAGNOSE + ["--task={dataset_dict}", "--split=validation"],
        2,
        "split 'validation' not found; splits are ['train']",
    ),
    (
        "diagnose: arithmetic questions without end are capped",
        _DIAGNOSE + ["--num_questions=100000000"],
        2,
        (
            "--num_questions: expected at most 100000 (arithmetic's test"
            " problems are drawn without end; more would take hours"
        ),
    ),
]
_TOKEN_MAP = [
    "token_map",
    "--student={student}",
    "--teacher={teacher}",
    "--out={tmp}/map.html",
]
TOKEN_MAP = [
    (
        # Was: the built-in arithmetic task, silently.
        "token_map: a run trained on a file samples that file's questions",
        [
            "token_map",
            "--workdir={file_run}",
            "--out={tmp}/file_run_map.html",
            "--num_rollouts=1",
        ],
        0,
        "questions: {ok_eval} (the run's own; --questions to change)",
    ),
    (
        "token_map: a run trained on a file that is not here",
        ["token_map", "--workdir={gone_file_run}", "--out={tmp}/map.html"],
        2,
        (
            "--questions: the run in {gone_file_run} trained on the file"
            " {tmp}/gone.jsonl, which is not on this machine"
        ),
    ),
    (
        "token_map: --split with a file",
        _TOKEN_MAP + ["--questions={ok_eval}", "--split=validation"],
        2,
        (
            "--split=validation: picks a built-in task's split; --questions"
            " is the file {ok_eval}"
        ),
    ),
    (
        "token_map: --difficulty with a file",
        _TOKEN_MAP + ["--questions={ok_eval}", "--difficulty=easy"],
        2,
        (
            "--difficulty=easy: picks a built-in task's level; --questions is"
            " the file {ok_eval}"
        ),
    ),
]

CASES = (
    EXPORT
    + SAMPLE
    + EVALUATE
    + MAKE_STUDENT
    + TRAIN
    + DEMO
    + DIAGNOSE
    + TOKEN_MAP
    + TRAIN_TEACHER
    + CONTEXT_ACCURACY
)
_NOISE = re.compile(
    r"^[IW]\d{4} |Traceback|Unable to initialize backend|fields without"
    r" effect|TensorStore|coroutine"
)


_BUYS = " She buys 3 more."
_OK_PROMPT = "Ann has 5 coins." + _BUYS * 8 + " How many coins does she have?"


def _paths(pair, tmp) -> dict[str, str]:
  paths = {
      "tmp": tmp,
      "student": pair["student"],
      "teacher": pair["teacher"],
      "dataset_dict": os.path.join(tmp, "dataset_dict"),
      "run": _fake_run(pair, os.path.join(tmp, "run")),
      "truncated": _fake_run(pair, os.path.join(tmp, "truncated")),
      "exported": os.path.join(tmp, "exported"),
      "file": os.path.join(tmp, "a_file"),
      "full": os.path.join(tmp, "full"),
      "empty": os.path.join(tmp, "empty"),
      "prompts": os.path.join(tmp, "q.txt"),
      "long_txt": os.path.join(tmp, "long.txt"),
      "ok_txt": os.path.join(tmp, "ok.txt"),
      "prompts_json": os.path.join(tmp, "prompts.json"),
      "empty_txt": os.path.join(tmp, "empty.txt"),
      "bad_jsonl": os.path.join(tmp, "bad.jsonl"),
      "banana": os.path.join(tmp, "banana.jsonl"),
      "banana_first": os.path.join(tmp, "banana_first.jsonl"),
      "ok_eval": os.path.join(tmp, "ok_eval.jsonl"),
      "model_out": os.path.join(tmp, "model_out"),
      "tiny": f"{_TINY}:{os.path.dirname(pair['student'])}",
  }
  _truncate_checkpoint(paths["truncated"])
  for name, preset in (("moved", ""), ("moved_preset", "qwen3_0p6b")):
    paths[name] = _fake_run(pair, os.path.join(tmp, name))
    config = os.path.join(paths[name], workdir_lib.CONFIG_FILE)
    with open(config) as f:
      saved = json.load(f)
    saved["student"] = os.path.join(tmp, "moved_student")
    saved["student_preset"] = preset
    with open(config, "w") as f:
      json.dump(saved, f)
  for name, eval_path, system in (
      ("file_run", "", "default"),
      ("file_run_held", "", "default"),
      ("file_run_eval", "ok_eval", "default"),
      ("gone_file_run", "", "default"),
      ("sys_run", "ok_eval", "Ann has 5 coins."),
  ):
    paths[name] = _fake_run(pair, os.path.join(tmp, name))
    config = os.path.join(paths[name], workdir_lib.CONFIG_FILE)
    with open(config) as f:
      saved = json.load(f)
    saved["data"].update(
        source="file",
        path=paths["ok_eval"],
        eval_path=eval_path and paths[eval_path],
        system_prompt=system,
    )
    if name == "file_run_held":  # it evaluated on half its questions
      saved["eval_every"] = 2
      saved["data"]["eval_fraction"] = 0.5
    if name == "gone_file_run":  # its file was never copied here
      saved["data"]["path"] = os.path.join(tmp, "gone.jsonl")
    with open(config, "w") as f:
      json.dump(saved, f)
  for d in ("full", "empty", "model_out"):
    os.makedirs(paths[d])
  files = {
      "a_file": "x",
      "full/x": "x",
      "model_out/config.json": "{}",
      "q.txt": "What is 2 + 3?\n",
      "prompts.json": '[\n  {"question": "Ann has 5 coins."}\n]\n',
      # The run's prompts are at most 40 tokens (testing.tiny_train_config).
      "ok.txt": _OK_PROMPT + "\n",
      "long.txt": _OK_PROMPT + "\n" + "Ann has 5 coins." + _BUYS * 100 + "\n",
      "empty.txt": "\n",
      "bad.jsonl": '{"question": "1 + 1", "n": 2}\n{"question": \n',
      "banana.jsonl": (
          '{"question": "What is 1 + 1?", "answer": "2"}\n'
          '{"question": "A fruit?", "answer": "banana"}\n'
      ),
  }
  files["banana_first.jsonl"] = "".join(
      json.dumps(r) + "\n"
      for r in [
          {"question": "A fruit?", "answer": "banana"},
          {"question": "What is 1 + 1?", "answer": "2"},
      ]
  )
  files["ok_eval.jsonl"] = "".join(
      json.dumps(r) + "\n"
      for r in [
          {
              "question": "Ann has 5 coins. How many coins does she have?",
              "answer": "5",
          },
          {"question": _OK_PROMPT, "answer": "29"},
      ]
  )
  files.update(
      (name, text.format(s=pair["student"], t=pair["teacher"]))
      for name, text in _CONFIG_FILES.items()
  )
  for name, text in files.items():
    with open(os.path.join(tmp, name), "w") as f:
      f.write(text)
  import datasets  # pylint: disable=g-import-not-at-top (slow to import)

  datasets.disable_progress_bars()
  datasets.DatasetDict(
      train=datasets.Dataset.from_list(
          [{"question": "What is 1 + 1?", "answer": "2"}]
      )
  ).save_to_disk(paths["dataset_dict"])
  return paths


@pytest.fixture(scope="module")
def results(tmp_path_factory):
  """{case name: (paths, {rc, stdout, stderr})}: every case in one worker."""
  tmp = str(tmp_path_factory.mktemp("scripts"))
  pair = testing.tiny_distillation_pair(os.path.join(tmp, "pair"))
  paths = _paths(pair, tmp)
  argvs = [
      [os.path.join(_ROOT, "scripts", f"{argv[0]}.py")]
      + [a.format(**paths) for a in argv[1:]]
      for _, argv, _, _ in CASES
  ]
  out = scripts_worker.run_in_forks(argvs, tmp)
  for (name, *_), r in zip(CASES, out):  # pytest -s shows where time goes
    print(f"{r['seconds']:6.2f} s  {name}")
  return paths, {name: r for (name, *_), r in zip(CASES, out)}


@pytest.mark.parametrize("name", [case[0] for case in CASES])
def test_each_mistake_gets_one_line(results, name):
  paths, got = results
  _, _, want_rc, fragment = next(c for c in CASES if c[0] == name)
  r = got[name]
  fragment = fragment.format(**paths)
  lines = [l for l in r["stderr"].splitlines() if l.strip()]
  assert r["rc"] == want_rc, (r["stdout"][-2000:], r["stderr"][-3000:])
  assert not [l for l in lines if _NOISE.search(l)], lines[:20]
  if want_rc == 2:
    assert len(lines) == 1 and lines[0].startswith("error: "), lines[:20]
    assert fragment in lines[0], lines[0]
  else:
    assert fragment in r["stdout"], r["stdout"][-2000:]


def test_export_is_readable_and_the_truncated_checkpoint_kept(results):
  paths, _ = results
  umask = os.umask(0)
  os.umask(umask)
  for name in os.listdir(paths["exported"]):
    mode = os.stat(os.path.join(paths["exported"], name)).st_mode & 0o777
    assert mode == 0o666 & ~umask, (name, oct(mode))
  # A refused export wrote nothing; the unreadable checkpoint is untouched.
  assert not os.path.exists(os.path.join(paths["tmp"], "o1"))
  assert workdir_lib.checkpoint_steps(paths["truncated"]) == [_STEP]
  assert not os.path.exists(
      os.path.join(paths["truncated"], "corrupt_checkpoints")
  )


def test_nothing_written_is_lost(results):
  paths, _ = results
  # train_teacher.py --out=<a model>: the old one moved beside the new one.
  (kept,) = [
      n for n in os.listdir(paths["tmp"]) if n.startswith("model_out.previous-")
  ]
  assert os.listdir(os.path.join(paths["tmp"], kept)) == ["config.json"]
  assert "model.safetensors" in os.listdir(paths["model_out"])
  # demo.py --workdir=<a training run>: untouched; refused demos made nothing.
  assert workdir_lib.checkpoint_steps(paths["run"]) == [_STEP]
  assert not os.path.exists(os.path.join(paths["run"], ".opd_jax_demo"))
  assert not os.path.exists(os.path.join(paths["tmp"], "d1"))
  assert not os.path.exists(os.path.join(paths["tmp"], "tt"))


def test_reevaluation_keeps_the_earlier_scores(results):
  paths, got = results
  first = os.path.join(paths["run"], "eval", "step_3")
  second = first + "-2"
  for d in (first, second):
    with open(os.path.join(d, "scores.json")) as f:
      assert json.load(f)["out_dir"] == d
    assert os.path.isfile(os.path.join(d, "responses.jsonl"))
  # The run was trained on easy questions: graded on them, and it says so.
  out = got["evaluate: a workdir, the run's difficulty"]["stdout"]
  assert "difficulty easy (the run's)" in out


def test_evaluation_outputs_go_where_they_belong(results):
  paths, _ = results
  # An HF directory's scores beside it; nothing in the current directory
  # (the repository root here).
  beside = paths["student"] + "_eval"
  assert os.path.isfile(os.path.join(beside, "scores.json"))
  name = os.path.basename(paths["student"])
  assert not os.path.exists(os.path.join(_ROOT, f"eval_{name}"))
  # --skip_ungradable: a response's index is its row of --data (line 2 is
  # row 1), not its row among the kept ones.
  with open(os.path.join(paths["tmp"], "ev_index", "responses.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  assert [(r["index"], r["answer"]) for r in rows] == [(1, "2")]


def test_only_checkpoint_unreadable_is_refused_not_restarted(tmp_path):
  pair = testing.tiny_distillation_pair(str(tmp_path / "pair"))
  run = _fake_run(pair, str(tmp_path / "run"))
  _truncate_checkpoint(run)
  c = testing.tiny_train_config(pair)
  abstract = plan_run(to_run_config(c)).abstract_state(
      nnx.split(load_hf(pair["student"]))[1].to_pure_dict()
  )
  ck = checkpointing.Checkpointer(run, async_save=False)
  try:
    with pytest.raises(
        checkpointing.CheckpointRestoreError, match="nothing was changed"
    ) as e:
      ck.restore_latest(abstract)
  finally:
    ck.close()
  assert "\n" not in str(e.value) and "TensorStore details" not in str(e.value)
  assert workdir_lib.checkpoint_steps(run) == [_STEP]


def test_restart_says_where_the_old_run_went(tmp_path, capsys):
  pair = {"student": "s", "teacher": "t"}
  run = str(tmp_path / "run")
  workdir_lib.prepare_workdir(run, testing.tiny_train_config(pair))
  with open(os.path.join(run, workdir_lib.CONFIG_FILE), "w") as f:
    f.write(testing.tiny_train_config(pair, seed=1).to_json())
  capsys.readouterr()
  workdir_lib.prepare_workdir(
      run, testing.tiny_train_config(pair), restart=True
  )
  out = capsys.readouterr().out
  moved = os.listdir(os.path.join(run, "previous_runs"))
  assert f"moved to {os.path.join(run, 'previous_runs', moved[0])}" in out


def _train(workdir, *flags, **kwargs):
  return subprocess.Popen(
      [
          sys.executable,
          os.path.join(_ROOT, "scripts", "train.py"),
          f"--config={_TINY}:{kwargs['pair_dir']}",
          f"--workdir={workdir}",
          "--config.checkpoint_every=1000",
          "--config.eval_every=0",  # one compile less
          *flags,
      ],
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
  )


def _stop_after(proc, metrics: str, steps: int, sig) -> tuple[str, str]:
  """Sends `sig` once metrics.jsonl has `steps` step records."""
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if os.path.exists(metrics):
      with open(metrics) as f:
        if f.read().count("loss/total") >= steps:
          break
    time.sleep(0.2)
  proc.send_signal(sig)
  return proc.communicate(timeout=300)


@pytest.mark.slow
def test_interrupt_saves_the_step_and_resume_continues(tmp_path):
  # SIGTERM (a preemption's notice), then SIGINT (Ctrl-C) in the resumed run.
  pair = testing.tiny_distillation_pair(str(tmp_path / "pair"))
  pair_dir = os.path.dirname(pair["student"])
  run = str(tmp_path / "run")
  metrics = os.path.join(run, "metrics.jsonl")
  proc = _train(run, "--config.total_steps=100000", pair_dir=pair_dir)
  _, err = _stop_after(proc, metrics, 2, signal.SIGTERM)
  assert proc.returncode == 143, err[-3000:]
  assert "Traceback" not in err
  last = err.strip().splitlines()[-1]
  m = re.match(
      r"SIGTERM: stopped at step (\d+) of 100000; checkpoint (\S+),", last
  )
  assert m, last
  step = int(m.group(1))
  assert workdir_lib.checkpoint_steps(run) == [step]
  assert m.group(2) == os.path.join(run, "checkpoints", str(step))
  assert not [
      n for n in os.listdir(os.path.join(run, "checkpoints")) if "tmp" in n
  ]
  with open(metrics) as f:
    before = f.read()
  # The same command resumes from that step.
  proc = _train(run, "--config.total_steps=100000", pair_dir=pair_dir)
  out, err = _stop_after(proc, metrics, step + 2, signal.SIGINT)
  assert proc.returncode == 130, err[-3000:]
  assert "Traceback" not in err
  assert f"at step {step}" in out
  later = workdir_lib.checkpoint_steps(run)
  assert later[0] == step and later[-1] > step + 1, later
  assert f"SIGINT: stopped at step {later[-1]} of 100000" in err
  with open(metrics) as f:
    assert f.read().startswith(before)  # the earlier records are kept


_RAISE = """
import sys
from opd_jax import cli
class Stop(KeyboardInterrupt):  # as trainer.loop.TrainingInterrupted
  def __init__(self, message, signum):
    super().__init__(message)
    self.signum = signum
def main(argv):
  raise {error}
cli.run(main)
"""


@pytest.mark.parametrize(
    "error,rc,line",
    [
        ("KeyboardInterrupt()", 130, "interrupted"),  # Ctrl-C before the loop
        ("Stop('SIGTERM: stopped at step 3', 15)", 143, "SIGTERM: stopped"),
    ],
)
def test_interrupts_exit_in_one_line(error, rc, line):
  proc = subprocess.run(
      [sys.executable, "-c", _RAISE.format(error=error)],
      capture_output=True,
      text=True,
      timeout=60,
  )
  assert proc.returncode == rc, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(line), proc.stderr
