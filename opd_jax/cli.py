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


_WARNED: set[str] = set()


def warn(message: str) -> None:
  """Prints `warning: message` (one line) to stdout, once per process.

  For a setting that is accepted but does less than it seems to (where a
  refusal would break a documented use); stdout, beside the progress bar,
  so that an `error:` line stays the only line on stderr.
  """
  text = " ".join(str(message).split())
  if text in _WARNED:
    return
  _WARNED.add(text)
  print(f"warning: {text}", flush=True)


def config_overrides(flag: str = "config") -> list[str]:
  """The fields of config file flag `flag` set on the command line.

  `--config.tip.rho=0.2` -> 'tip.rho' (ml_collections registers one flag
  per field; `present` says whether the command line gave it).
  """
  prefix = f"{flag}."
  return [
      name[len(prefix) :]
      for name, f in flags.FLAGS._flags().items()  # pylint: disable=protected-access
      if name.startswith(prefix) and f.present
  ]


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
  """One line for a flag that did not parse, naming the flag that failed.

  absl names the flag whose value did not convert ("flag --name=value:
  reason", config overrides `--config.a.b=v` included); a field or block
  that does not exist (ml_collections' KeyError / AttributeError) is found
  among the command line's flags by its name, with the closest known name.
  """
  plain = re.match(r"flag (--([\w.-]+)=?[^:]*): (.*)", str(e), re.S)
  if plain:
    where, name, reason = plain.groups()
    if "Non-boolean argument" in reason:
      forms = "" if "." in name else f" (--{name} / --no{name})"
      return f"{where}: expected true or false{forms}"
    return f"{where}: {reason.splitlines()[0]}"
  chain, x = [], e
  while x is not None:
    chain.append(str(x))
    x = x.__cause__ or x.__context__
  cause = _root_cause(e)
  # An OSError's args[0] is its errno (`--flagfile=nope` printed "error: 2").
  raw = (
      str(cause.args[0])
      if cause.args and not isinstance(cause, OSError)
      else str(cause)
  )
  # A KeyError's message is the quoted key; other messages keep their
  # quotes ("Unknown command line flag 'n'").
  text = raw.strip("'\"") if raw[:1] in "'\"" else raw
  text = text.replace("\\n", " ").replace("\\'", "'")
  # ml_collections' KeyError/AttributeError: "'rhoo'\nDid you mean ..."
  field = re.match(r"^'?([\w.]+)'?\s", text + " ")
  if field:
    suggestion = re.search(r"Did you mean \W*([\w.]+)", " ".join(chain))
    hint = f"; did you mean {suggestion.group(1)!r}?" if suggestion else ""
    for arg in argv[1:]:
      name = arg.split("=", 1)[0].lstrip("-")
      if name.endswith("." + field.group(1)) or name == field.group(1):
        renamed = _renamed_config_field(name)
        if renamed:
          hint = f"; it is --{renamed} now"
        return f"--{name}: no such field{hint}"
      parts = name.split(".")
      if field.group(1) in parts[1:-1]:  # a block: `--config.tipp.rho`
        block = ".".join(parts[: parts.index(field.group(1), 1) + 1])
        return f"--{block}: no such block{hint} (in --{name})"
  for arg in argv[1:]:  # a value that did not convert: name its flag
    name, _, value = arg.partition("=")
    if value and repr(value) in raw:
      return f"{name}={value}: {raw}"
  return text


def define_config_file(name: str, default: str | None, help_string: str):
  """`config_flags.DEFINE_config_file` (locked) with one-line errors.

  With a default file, ml_collections loads it and applies the command
  line's `--name.field=value` overrides when the flag is defined, at
  import, before `run` parses anything: a mistake there is one `error:`
  line too (exit 2), not a traceback.
  """
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

  try:
    return config_flags.DEFINE_config_file(
        name, default, help_string, lock_config=True
    )
  except Exception as e:  # pylint: disable=broad-except
    if os.environ.get("OPD_JAX_TRACEBACK") or default is None:
      raise
    fail(flag_error_message(e, sys.argv))


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
