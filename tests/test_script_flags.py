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
"""script_flags: shared flag blocks stay the script's own, checks, loading."""

import os
import subprocess
import sys
import types

import pytest

from opd_jax import script_flags, testing
from opd_jax.cli import InputError
from opd_jax.models import hf_io

# A script using every block; run in its own process, as the flags are
# global. It prints the --help text of its own flags, then parsed values.
_SCRIPT = r"""
from absl import flags
from opd_jax import script_flags

src = script_flags.source_flags(
    difficulty_default=None, difficulty_help="Which task."
)
grading = script_flags.grading_flags(timeout=False)
sampling = script_flags.sampling_flags()
flags.FLAGS(["x", "--difficulty=hard", "--top_p=0.5", "--answer_field="])
print(flags.FLAGS.main_module_help())
print("values", src.difficulty.value, repr(src.answer_field.value),
      sampling.top_p.value, grading.workers.value, grading.timeout)
"""


def test_blocks_are_the_calling_scripts_flags(tmp_path):
  script = tmp_path / "script.py"
  script.write_text(_SCRIPT)
  proc = subprocess.run(
      [sys.executable, str(script)],
      capture_output=True,
      text=True,
      timeout=120,
      check=False,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  # absl's --help shows only the main module's flags: the blocks' are there.
  for name in ("question_field", "answer_field", "split", "difficulty"):
    assert f"--{name}:" in proc.stdout, proc.stdout
  assert "--grading_workers: math-verify workers." in proc.stdout
  assert "--temperature: 0 is greedy." in proc.stdout
  assert "--grading_timeout" not in proc.stdout  # timeout=False
  assert "Which task." in proc.stdout
  assert proc.stdout.splitlines()[-1] == "values hard '' 0.5 2 None"


def _holder(value):
  return types.SimpleNamespace(value=value)


@pytest.mark.parametrize(
    "temperature,top_p,message",
    [
        (
            -1.0,
            1.0,
            (
                "--temperature: expected a finite number >= 0 (0 is greedy),"
                " got -1.0"
            ),
        ),
        (
            float("nan"),
            1.0,
            (
                "--temperature: expected a finite number >= 0 (0 is greedy),"
                " got nan"
            ),
        ),
        (
            float("inf"),
            1.0,
            (
                "--temperature: expected a finite number >= 0 (0 is greedy),"
                " got inf"
            ),
        ),
        (0.0, 0.0, "--top_p: expected a value in (0, 1], got 0.0"),
        (0.0, 1.5, "--top_p: expected a value in (0, 1], got 1.5"),
        (
            0.0,
            0.9,
            (
                "--top_p=0.9: has no effect with greedy decoding"
                " (--temperature=0, the default); expected --temperature > 0 or"
                " --top_p=1"
            ),
        ),
    ],
)
def test_check_sampling(temperature, top_p, message):
  flags_ = script_flags.SamplingFlags(_holder(temperature), _holder(top_p))
  with pytest.raises(InputError) as e:
    script_flags.check_sampling(flags_)
  assert str(e.value) == message
  script_flags.check_sampling(
      script_flags.SamplingFlags(_holder(0.7), _holder(1.0))
  )


def test_check_response_length():
  config = types.SimpleNamespace(max_position_embeddings=16)
  script_flags.check_response_length(10, 6, config)  # exactly fits
  with pytest.raises(InputError) as e:
    script_flags.check_response_length(10, 7, config)
  assert str(e.value) == (
      "--max_new_tokens: the longest prompt (10 tokens) + 7 new tokens"
      " exceeds the model's max_position_embeddings (16)"
  )


def test_load_model_errors_name_the_flag(tmp_path):
  missing = str(tmp_path / "nope")
  with pytest.raises(InputError, match=r"^--student '.*nope': no such dir"):
    script_flags.load_model(missing, "student", allow_workdir=True)
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(InputError) as e:
    script_flags.load_model(str(empty), "student", allow_workdir=True)
  assert str(e.value) == (
      f"--student {empty}: no checkpoint (expected config.json and"
      " *.safetensors or a training workdir)"
  )
  with pytest.raises(InputError) as e:
    script_flags.load_model(str(empty), "teacher", allow_workdir=False)
  assert str(e.value).endswith("(expected config.json and *.safetensors)")
  (empty / "config.json").write_text("{}")
  with pytest.raises(InputError, match="a workdir with no checkpoint$"):
    script_flags.load_model(str(empty), "student", allow_workdir=True)
  assert not os.path.exists(empty / "checkpoints")  # not created


def test_load_model_of_an_hf_directory(tmp_path):
  model = testing.random_model(testing.tiny_config("qwen3", vocab_size=64))
  hf_io.save_hf(model, str(tmp_path / "hf"))
  loaded = script_flags.load_model(
      str(tmp_path / "hf"), "teacher", allow_workdir=False
  )
  assert loaded.model.config.vocab_size == 64
  assert loaded.name == loaded.tokenizer_dir == str(tmp_path / "hf")
  assert loaded.step is None and loaded.run_config is None


def test_task_source():
  source = script_flags.task_source("arithmetic", "easy", "test", 3)
  assert len(source) == 3 and all(source[i].answer for i in range(3))
  source = script_flags.task_source("countdown", "default", "test", 2, 512)
  assert source.name == "countdown:test[0:+2]"


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ("countdown", "two_step", "test", 2),
            (
                "--difficulty: task 'countdown' has difficulties ('easy',"
                " 'default', 'hard'), got 'two_step'"
            ),
        ),
        (
            ("countdown", "default", "test", 2, 24),
            (
                "--max_new_tokens: expected >= 55 (the shortest countdown"
                " (default) reference response"
            ),
        ),
    ],
)
def test_task_source_refuses_a_level_or_budget_the_task_lacks(args, message):
  with pytest.raises(InputError) as e:
    script_flags.task_source(*args)
  assert str(e.value).startswith(message) and "\n" not in str(e.value)
