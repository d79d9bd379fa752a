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
"""README's "Training from the command line" commands run as written.

The training commands that need nothing but the repository (the shipped
pair on the built-in task, and on the shipped jsonl files) are read from
README.md, run at a few steps, and must train, evaluate and end in the
summary line (issue 38: the documented path works).
"""

import os
import re
import shlex

import pytest
import scripts_worker  # tests/, on the path beside conftest.py

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PREFIX = ".venv/bin/python scripts/train.py --config=configs/"


def readme_commands() -> list[list[str]]:
  """README's train.py command lines on the shipped configs, as argv."""
  with open(os.path.join(_ROOT, "README.md"), encoding="utf-8") as f:
    text = f.read()
  section = text.split("## Training from the command line", 1)[1]
  section = section.split("\n## ", 1)[0]
  out = []
  for block in re.findall(r"```sh\n(.*?)```", section, re.S):
    for command in block.replace("\\\n", " ").splitlines():
      # Commands that need the reader's own paths name DIR or /path/to.
      if command.startswith(_PREFIX) and not re.search(
          r"DIR|/path/to|\.parquet", command
      ):
        out.append(shlex.split(command))
  return out


def test_readme_names_the_shipped_pair_and_the_own_data_example():
  configs = [argv[2] for argv in readme_commands()]
  assert configs == [
      "--config=configs/demo.py",
      "--config=configs/own_data.py",
  ], configs


@pytest.mark.slow
def test_readme_training_commands_run(tmp_path):
  argvs = []
  for i, argv in enumerate(readme_commands()):
    argv = [os.path.join(_ROOT, "scripts", "train.py")] + [
        f"--workdir={tmp_path / f'run{i}'}" if a.startswith("--workdir=") else a
        for a in argv[2:]
    ]
    argvs.append(
        argv
        + [
            "--config.total_steps=3",
            "--config.eval_every=3",
            "--config.eval_examples=16",
            "--config.batch_size=8",
            "--config.optimizer.warmup_steps=1",
            "--config.checkpoint_every=3",
        ]
    )
  for argv, r in zip(argvs, scripts_worker.run_in_forks(argvs, str(tmp_path))):
    assert r["rc"] == 0, (argv, r["stderr"][-3000:])
    assert "step 3: eval/accuracy" in r["stderr"] + r["stdout"], r
    assert "run at step 3: checkpoint" in r["stdout"], r["stdout"][-2000:]
    assert "warning:" not in r["stdout"], r["stdout"][-2000:]
