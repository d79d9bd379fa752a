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
"""Shared pytest set-up: CPU only, persistent compilation cache, and a
cheaper XLA backend for the test processes.

Most tests compile a tiny program and run it once, so LLVM's optimisation of
the compiled CPU code costs more than it saves: at optimisation level 0 a
cold run of tests/trainer/test_methods_train.py takes 194 s instead of 276 s.
The HLO and its fusions are the same; only LLVM's code generation differs,
and tests check results against references, not against an optimised build.
Subprocesses inherit the flag; the demo test, which runs 100 steps, drops it.
"""

import os

FAST_COMPILE_FLAG = "--xla_backend_optimization_level=0"
if FAST_COMPILE_FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (
      os.environ.get("XLA_FLAGS", "") + " " + FAST_COMPILE_FLAG
  ).strip()

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(os.path.dirname(os.path.dirname(__file__)), ".cache", "jax"),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

# The files that run longest, longest first (seconds of one worker in the CI
# run of 2026-12-07, .cache/test-report.xml summed per file; refresh them
# from a new report when files grow). xdist hands out whole files in
# collection order (`--no-loadscope-reorder` in the Makefile), so these start
# first and the two workers finish together on the short files, instead of
# one of them running a 200-second file alone at the end (trainer/ is
# collected last).
LONGEST_FIRST = (
    "tests/test_reproduce.py",  # 270
    "tests/trainer/test_self_teacher.py",  # 213
    "tests/trainer/test_methods_train.py",  # 208
    "tests/test_demo.py",  # 207
    "tests/trainer/test_multidevice.py",  # 157
    "tests/trainer/test_moe_pair.py",  # 148
    "tests/test_script_bad_inputs.py",  # 147
    "tests/models/test_moe.py",  # 147
    "tests/trainer/test_resume.py",  # 129
    "tests/rollouts/test_hybrid_sampler.py",  # 128
    "tests/diagnostics/test_diagnose_script.py",  # 126
    "tests/test_benchmarks.py",  # 125
    "tests/rollouts/test_sampler.py",  # 102
    "tests/diagnostics/test_token_map_script.py",  # 101
    "tests/trainer/test_loop.py",  # 95
    "tests/trainer/test_sft.py",  # 92
    "tests/models/test_sequence_attention.py",  # 92
    "tests/diagnostics/test_token_map.py",  # 89
    "tests/trainer/test_micro_batches.py",  # 86
    "tests/trainer/test_moe_student.py",  # 81
    "tests/trainer/test_stage.py",  # 69
    "tests/trainer/test_configs.py",  # 65
    "tests/rollouts/test_branching.py",  # 64
)


def pytest_collection_modifyitems(items):
  rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
  key = lambda item: rank.get(item.nodeid.split("::")[0], len(rank))
  items.sort(key=key)  # stable: the other files keep their order
