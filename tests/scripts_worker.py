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
"""Runs many script command lines cheaply: each in a fork of one process.

  python tests/scripts_worker.py CASES.json OUT_DIR

CASES.json is a list of argv lists (`[["scripts/export.py", "--out=..."],
...]`). This process imports the heavy libraries once (JAX, flax, orbax,
transformers, the trainer; no backend is started), then forks one child per command line,
which runs the script as `__main__` with its stdout / stderr in OUT_DIR and
exits with the script's code. Prints one JSON list of {rc, stdout, stderr,
seconds}.
A case costs what the script does, not the ~5 s of its imports.

Tests call `run_in_forks(argvs, tmp_dir)`, which runs this worker and
returns its list.
"""

import json
import os
import runpy
import subprocess
import sys
import time
import traceback

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_in_forks(
    argvs: list[list[str]], tmp_dir: str, env: dict[str, str] | None = None
) -> list[dict]:
  """Runs each argv (a script path, then its flags) in a fork of one worker.

  Returns one {rc, stdout, stderr, seconds} per argv, in order; the worker
  writes its case files under `tmp_dir/forks`. Runs in the repository root.
  """
  work = os.path.join(tmp_dir, "forks")
  os.makedirs(work)
  cases = os.path.join(work, "cases.json")
  with open(cases, "w") as f:
    json.dump(argvs, f)
  proc = subprocess.run(
      [sys.executable, os.path.abspath(__file__), cases, work],
      capture_output=True,
      text=True,
      timeout=900,
      cwd=_ROOT,
      env=env,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout)


def run_device_worker(name: str, timeout: int) -> str:
  """Runs tests/`name` (a multi-device worker) in its own process.

  The worker adds its fake CPU devices to XLA_FLAGS before JAX starts,
  which a process that already started JAX cannot. Asserts that it exited
  0 and printed 'OK' last; returns its stdout (also printed, for -s).
  """
  proc = subprocess.run(
      [sys.executable, os.path.join(_ROOT, "tests", name)],
      env=dict(os.environ),
      capture_output=True,
      text=True,
      timeout=timeout,
  )
  print(proc.stdout)
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert proc.stdout.strip().endswith("OK")
  return proc.stdout


def _warm_up() -> None:
  # pylint: disable=g-import-not-at-top,unused-import
  import jax
  import ml_collections.config_flags
  import orbax.checkpoint
  import transformers
  from transformers import AutoTokenizer, PreTrainedTokenizerFast
  from opd_jax import cli, evaluation, rollouts
  from opd_jax.trainer import loop, restore

  del jax, ml_collections, orbax, transformers, AutoTokenizer
  del PreTrainedTokenizerFast, cli, evaluation, rollouts, loop, restore


def _child(argv: list[str], out: str, err: str) -> None:
  for fd, path in ((1, out), (2, err)):
    f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(f, fd)
    os.close(f)
  sys.argv = list(argv)
  code = 0
  try:
    runpy.run_path(argv[0], run_name="__main__")
  except SystemExit as e:
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
  except BaseException:  # pylint: disable=broad-except
    traceback.print_exc()
    code = 1
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)  # pylint: disable=protected-access


def main() -> None:
  with open(sys.argv[1]) as f:
    cases = json.load(f)
  out_dir = sys.argv[2]
  start = time.time()
  _warm_up()
  print(f"warm-up {time.time() - start:.1f} s", file=sys.stderr)
  results = []
  for i, argv in enumerate(cases):
    out = os.path.join(out_dir, f"{i}.out")
    err = os.path.join(out_dir, f"{i}.err")
    sys.stdout.flush()
    sys.stderr.flush()
    start = time.time()
    pid = os.fork()
    if pid == 0:
      _child(argv, out, err)
    _, status = os.waitpid(pid, 0)
    with open(out) as fo, open(err) as fe:
      results.append({
          "rc": os.waitstatus_to_exitcode(status),
          "stdout": fo.read(),
          "stderr": fe.read(),
          "seconds": round(time.time() - start, 2),
      })
  json.dump(results, sys.stdout)


if __name__ == "__main__":
  main()
