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
"""What every command-line entry point shares: one-line errors, quiet logs.

`cli.run(main)` replaces `absl.app.run(main)` in `scripts/`:

- a positional argument (every script takes flags only), a bad flag (an
  unknown `--config.field`, a value of the wrong type), a
  config file that does not load (missing, a syntax error, a failed import,
  no `get_config`, a `get_config` that returns no ConfigDict) and a user's
  mistake raised from `main` (a `ValueError` or `OSError`: bad config,
  missing file, a workdir holding another run, ...) print one line
  `error: ...` to stderr and exit with code 2, without a traceback
  (`OPD_JAX_TRACEBACK=1` shows it);
- Ctrl-C prints one line and exits with code 130 (the training loop first
  saves its step and exits 130 / 143 for SIGINT / SIGTERM, see
  `trainer.loop`);
- absl's, JAX's and orbax's INFO lines stay off the console unless
  `--verbosity` is given, so the progress bar and the eval lines are what a
  user sees;
- freed host memory is kept for reuse (`keep_freed_host_memory`).
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import sys
from typing import Callable, NoReturn, Sequence

from absl import app
from absl import flags
from absl import logging


class InputError(ValueError):
  """A user's mistake found by a script (a flag, a file, a directory)."""


# A user's mistake, as opposed to a bug: shown as one line.
USER_ERRORS = (ValueError, OSError, app.UsageError)


def fail(message: str) -> NoReturn:
  """Prints `error: message` (one line) to stderr and exits with code 2."""
  text = " ".join(str(message).split())
  print(f"error: {text}", file=sys.stderr, flush=True)
  sys.exit(2)


def _root_cause(e: BaseException) -> BaseException:
  while e.__cause__ is not None or (
      e.__context__ is not None and not e.__suppress_context__
  ):
    e = e.__cause__ or e.__context__
  return e


class ConfigFileError(Exception):
  """A `--config` file that does not load (raised while flags parse)."""


def _renamed_config_field(name: str) -> str | None:
  """Today's name of a renamed trainer field flag (`config.tip.divergence` ->
  `config.tip.loss_pass.divergence`), or None."""
  if not name.startswith("config."):
    return None
  # pylint: disable-next=g-import-not-at-top (jax loads only on this path)
  from opd_jax.trainer.config import RENAMED_FIELDS

  new = RENAMED_FIELDS.get(name[len("config.") :])
  return f"config.{new}" if new else None


def flag_error_message(e: BaseException, argv: Sequence[str]) -> str:
  """One line for a flag that did not parse, naming the flag when it can."""
  # absl's own "flag --name=value: reason" for a plain flag (not a config
  # override, whose reason is in the cause).
  plain = re.match(r"flag (--[\w-]+=?[^:]*): (.*)", str(e), re.S)
  if plain and "." not in plain.group(1).split("=")[0]:
    if "Non-boolean argument" in plain.group(2):
      name = plain.group(1).split("=")[0][2:]
      return f"{plain.group(1)}: expected true or false (--{name} / --no{name})"
    return f"{plain.group(1)}: {plain.group(2).splitlines()[0]}"
  chain, x = [], e
  while x is not None:
    chain.append(str(x))
    x = x.__cause__ or x.__context__
  cause = _root_cause(e)
  raw = str(cause.args[0]) if cause.args else str(cause)
  text = raw.strip("'\"").replace("\\n", " ").replace("\\'", "'")
  # ml_collections' KeyError/AttributeError: "'rhoo'\nDid you mean ..."
  field = re.match(r"^'?([\w.]+)'?\s", text + " ")
  if field:
    for arg in argv[1:]:
      name = arg.split("=", 1)[0].lstrip("-")
      if name.endswith("." + field.group(1)) or name == field.group(1):
        suggestion = re.search(r"Did you mean \W*([\w.]+)", " ".join(chain))
        hint = f"; did you mean {suggestion.group(1)!r}?" if suggestion else ""
        renamed = _renamed_config_field(name)
        if renamed:
          hint = f"; it is --{renamed} now"
        return f"--{name}: no such field{hint}"
  for arg in argv[1:]:  # a value that did not convert: name its flag
    name, _, value = arg.partition("=")
    if value and repr(value).strip("'") in raw:
      return f"{name}={value}: {raw}"
  return text


def _config_file_message(where: str, e: BaseException) -> str:
  if isinstance(e, SyntaxError):
    return f"{where}: syntax error in {e.filename} line {e.lineno}: {e.msg}"
  if isinstance(e, ImportError):
    return f"{where}: the config file's import failed: {e}"
  if isinstance(e, AttributeError) and "'get_config'" in str(e):
    return f"{where}: the file defines no get_config() function"
  text = str(e).strip().splitlines()
  # ml_collections wraps a TypeError / ValueError with the whole traceback.
  last = text[-1] if text else type(e).__name__
  return (
      f"{where}: get_config() raised"
      f" {last if ':' in last else type(e).__name__ + ': ' + last}"
  )


def _check_config_files() -> None:
  """Makes every `config_flags` file flag fail with one clear line."""
  import ml_collections  # pylint: disable=g-import-not-at-top

  for name, flag in flags.FLAGS._flags().items():  # pylint: disable=protected-access
    parser = flag.parser
    if name != flag.name or type(parser).__name__ != "ConfigFileFlagParser":
      continue
    if getattr(parser, "_opd_jax_checked", False):
      continue

    def parse(argument, _parse=parser.parse, _name=name):
      path = str(argument).split(":", 1)[0]
      where = f"--{_name}={path}"
      if not os.path.exists(path):
        raise ConfigFileError(f"{where}: no such file")
      if not os.path.isfile(path):
        raise ConfigFileError(f"{where}: not a file")
      try:
        config = _parse(argument)
      except Exception as e:  # pylint: disable=broad-except
        raise ConfigFileError(_config_file_message(where, e)) from e
      if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigFileError(
            f"{where}: get_config() returned {type(config).__name__}, expected"
            " an ml_collections.ConfigDict (start from the trainer's"
            " default_config())"
        )
      return config

    parser.parse = parse
    parser._opd_jax_checked = True  # pylint: disable=protected-access


def _parse_flags(argv: list[str]) -> list[str]:
  _check_config_files()
  try:
    return flags.FLAGS(argv)
  except ConfigFileError as e:
    if os.environ.get("OPD_JAX_TRACEBACK"):
      raise
    fail(str(e))
  except (flags.Error, AttributeError, KeyError, ValueError, TypeError) as e:
    if os.environ.get("OPD_JAX_TRACEBACK"):
      raise
    fail(flag_error_message(e, argv))


def _quiet_logs() -> None:
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def keep_freed_host_memory() -> bool:
  """Makes this process reuse the host memory it frees (glibc only).

  XLA:CPU allocates a step's temporaries in one block (365 MB for the demo's
  update step) from its worker threads and frees it when the step ends. glibc
  serves a block that large from a thread's arena with `mmap` and returns it
  with `munmap`, so every step faults in fresh zeroed pages (93k page faults
  per demo update step). With a single arena, no `mmap` and no trimming, the
  freed block stays in the heap and the next step reuses it: no faults, and
  the demo's update step ran 12-15% faster (BENCHMARKS.md). The price is
  that the process keeps its peak host memory until it exits.

  Process-wide, so only entry points call it, before the first computation
  (XLA's threads pick their arena on their first allocation). Set
  OPD_JAX_KEEP_HOST_MEMORY=0 to leave the allocator alone.

  Returns:
    True if glibc took the settings.
  """
  if os.environ.get("OPD_JAX_KEEP_HOST_MEMORY", "1") == "0":
    return False
  if not sys.platform.startswith("linux"):
    return False
  try:
    # The C library already loaded in this process; no library search.
    mallopt = ctypes.CDLL(None).mallopt
  except AttributeError:  # a libc without mallopt
    return False
  return all(
      mallopt(param, value) == 1
      for param, value in (
          (_M_ARENA_MAX, 1),
          (_M_MMAP_MAX, 0),
          (_M_TRIM_THRESHOLD, 2**31 - 1),
      )
  )


def run(main: Callable[[list[str]], None]) -> None:
  """`absl.app.run(main)` with one-line user errors and quiet INFO logs."""
  keep_freed_host_memory()

  def guarded(argv):
    _quiet_logs()
    if len(argv) > 1:  # every script takes flags only
      fail(f"unexpected arguments: {argv[1:]} (every option is a --flag)")
    try:
      main(argv)
    except USER_ERRORS as e:
      if os.environ.get("OPD_JAX_TRACEBACK"):
        raise
      fail(str(e))
    except (
        KeyboardInterrupt
    ) as e:  # Ctrl-C, or the trainer's TrainingInterrupted
      if os.environ.get("OPD_JAX_TRACEBACK"):
        raise
      print(str(e) or "interrupted", file=sys.stderr, flush=True)
      sys.exit(128 + getattr(e, "signum", signal.SIGINT))

  app.run(guarded, flags_parser=_parse_flags)
