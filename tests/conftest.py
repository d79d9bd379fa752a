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
Subprocesses inherit the flag; the demo test, which runs 150 steps, drops it.
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

# The files that run longest on a cold compile cache (two workers, measured
# 2026-11-26: about 285, 205, 250, 160 and 165 s). xdist hands out whole files
# in collection order (`--no-loadscope-reorder` in the Makefile), so these
# start first and the two workers finish together instead of one of them
# running the demo alone at the end.
LONGEST_FIRST = (
    "tests/test_demo.py",
    "tests/trainer/test_methods_train.py",
    "tests/trainer/test_resume.py",
    "tests/test_reproduce.py",
    "tests/trainer/test_multidevice.py",
    "tests/trainer/test_loop.py",
    "tests/test_script_bad_inputs.py",
    "tests/diagnostics/test_diagnose_script.py",
    "tests/diagnostics/test_token_map_script.py",
)


def pytest_collection_modifyitems(items):
  rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
  key = lambda item: rank.get(item.nodeid.split("::")[0], len(rank))
  items.sort(key=key)  # stable: the other files keep their order
