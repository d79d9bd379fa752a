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
"""Validation of a method's config block: errors name `config.<method>.<field>`.

Every check raises `ValueError` with the field, the allowed range and the
value it got, so a bad flag is fixed from the message alone, before any
compile.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Iterable, Mapping

from opd_jax import heads
from opd_jax import losses
from opd_jax.methods import common


def check_real(
    method: str,
    field: str,
    value: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
) -> float:
  """Returns ``value`` as a float in the given interval, or raises.

  Examples:
    >>> check_real("tip", "rho", 0.5, lo=0.0, hi=1.0, lo_open=True)
    0.5
    >>> check_real("tip", "rho", 0.0, lo=0.0, hi=1.0, lo_open=True)
    Traceback (most recent call last):
    ...
    ValueError: config.tip.rho must be in (0, 1], got 0.0.
  """
  lb = "(" if lo_open else "["
  rb = ")" if hi_open else "]"
  interval = (
      f"{lb}{'-inf' if lo is None else f'{lo:g}'},"
      f" {'inf' if hi is None else f'{hi:g}'}{rb}"
  )
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise ValueError(
        f"config.{method}.{field} must be a number in {interval}, got"
        f" {value!r}."
    )
  ok = True
  if lo is not None:
    ok &= value > lo if lo_open else value >= lo
  if hi is not None:
    ok &= value < hi if hi_open else value <= hi
  if not ok:
    raise ValueError(
        f"config.{method}.{field} must be in {interval}, got {value!r}."
    )
  return float(value)


def check_int(method: str, field: str, value: Any, *, lo: int) -> int:
  """Returns ``value`` as an int >= ``lo``, or raises."""
  if (
      isinstance(value, bool)
      or not isinstance(value, numbers.Integral)
      or value < lo
  ):
    raise ValueError(
        f"config.{method}.{field} must be an int >= {lo}, got {value!r}."
    )
  return int(value)


def check_choice(
    method: str, field: str, value: Any, choices: Iterable[str]
) -> str:
  """Returns ``value`` if it is one of ``choices``, or raises."""
  choices = sorted(choices)
  if value not in choices:
    raise ValueError(
        f"config.{method}.{field} must be one of {choices}, got {value!r}."
    )
  return value


def check_bool(method: str, field: str, value: Any) -> bool:
  """Returns ``value`` if it is a bool, or raises."""
  if not isinstance(value, bool):
    raise ValueError(
        f"config.{method}.{field} must be True or False, got {value!r}."
    )
  return value


def check_common(method: str, cfg: Any) -> None:
  """Checks the loss-pass fields most methods share, if present."""
  names = {f.name for f in dataclasses.fields(cfg)}
  if "divergence" in names:
    check_choice(method, "divergence", cfg.divergence, heads.DIVERGENCES)
  if "reduction" in names:
    check_choice(method, "reduction", cfg.reduction, losses.REDUCTIONS)
  if "temperature" in names:
    check_real(method, "temperature", cfg.temperature, lo=0.0, lo_open=True)
  if "skew_alpha" in names:
    check_real(method, "skew_alpha", cfg.skew_alpha, lo=0.0, hi=1.0)
  if "jsd_beta" in names:
    check_real(method, "jsd_beta", cfg.jsd_beta, lo=0.0, hi=1.0)
  if "chunk_size" in names and cfg.chunk_size is not None:
    # None is one dense pass.
    check_int(method, "chunk_size", cfg.chunk_size, lo=1)


def check_loss_pass(method: Any) -> common.LossPass:
  """Returns ``method.loss_pass`` as a checked `common.LossPass`.

  A mapping (the config block, e.g. ``{"divergence": "jsd"}``) sets the
  fields it names over the method's default block (GKD's is JSD at
  temperature 0.9); a field it does not know is refused by name.

  Examples:
    >>> from opd_jax import methods
    >>> methods.GKD(loss_pass={"jsd_beta": 0.2}).loss_pass.divergence
    'jsd'
    >>> methods.TIP(loss_pass={"divergance": "jsd"})
    Traceback (most recent call last):
    ...
    ValueError: config.tip.loss_pass.divergance: no such field; expected one of ['chunk_size', 'divergence', 'jsd_beta', 'reduction', 'skew_alpha', 'temperature'].
  """
  where = f"{method.NAME}.loss_pass"
  value = method.loss_pass
  if isinstance(value, Mapping):
    known = sorted(f.name for f in dataclasses.fields(common.LossPass))
    for key in value:
      if key not in known:
        raise ValueError(
            f"config.{where}.{key}: no such field; expected one of {known}."
        )
    (field,) = [f for f in dataclasses.fields(method) if f.name == "loss_pass"]
    value = dataclasses.replace(field.default, **value)
  if not isinstance(value, common.LossPass):
    raise ValueError(
        f"config.{where} must be a LossPass or a mapping of its fields, got"
        f" {type(value).__name__}."
    )
  check_common(where, value)
  return value
