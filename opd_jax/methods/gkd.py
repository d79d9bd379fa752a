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
"""GKD and full-vocabulary reverse-KL OPD, plus the config checks of methods.

References:
  Agarwal et al., "On-Policy Distillation of Language Models: Learning from
  Self-Generated Mistakes" (GKD), ICLR 2024, arXiv 2306.13649; TRL's
  ``GKDTrainer``.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, ClassVar, Iterable

import jax
import jax.numpy as jnp

from opd_jax import losses
from opd_jax import selection
from opd_jax.selection import stats
from opd_jax.methods.base import Metrics, register, StepInputs

Array = jax.Array

# Divergences of the loss pass (keys of selection.DIVERGENCES), with the
# short names used in metric keys.
SHORT_NAMES = {
    "reverse_kl": "rkl",
    "forward_kl": "fkl",
    "jsd": "jsd",
    "tvd": "tvd",
    "skew_forward_kl": "skew_fkl",
    "skew_reverse_kl": "skew_rkl",
}
DEFAULT_CHUNK_SIZE = stats.DEFAULT_CHUNK_SIZE


# ------------------------------------------------------ config checks.
# Shared by every method module: errors name ``config.<method>.<field>`` and
# the allowed range, so a bad flag is fixed from the message alone.


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
  """Returns ``value`` as a float in the given interval, or raises."""
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
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise ValueError(
        f"config.{method}.{field} must be an int >= {lo}, got {value!r}."
    )
  if value < lo:
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


def check_chunk_size(method: str, value: Any) -> None:
  """``chunk_size`` is None (one dense pass) or an int >= 1."""
  if value is not None:
    check_int(method, "chunk_size", value, lo=1)


def check_common(method: str, cfg: Any) -> None:
  """Checks the loss-pass fields most methods share, if present."""
  names = {f.name for f in dataclasses.fields(cfg)}
  if "divergence" in names:
    check_choice(method, "divergence", cfg.divergence, SHORT_NAMES)
  if "reduction" in names:
    check_choice(method, "reduction", cfg.reduction, losses.REDUCTIONS)
  if "temperature" in names:
    check_real(method, "temperature", cfg.temperature, lo=0.0, lo_open=True)
  if "skew_alpha" in names:
    check_real(method, "skew_alpha", cfg.skew_alpha, lo=0.0, hi=1.0)
  if "jsd_beta" in names:
    check_real(method, "jsd_beta", cfg.jsd_beta, lo=0.0, hi=1.0)
  if "chunk_size" in names:
    check_chunk_size(method, cfg.chunk_size)


def divergence_kwargs(
    divergence: str, *, beta: float, skew_alpha: float
) -> dict[str, float]:
  """The extra keyword arguments of a loss-pass divergence."""
  if divergence == "jsd":
    return {"beta": beta}
  if divergence in ("skew_forward_kl", "skew_reverse_kl"):
    return {"alpha": skew_alpha}
  return {}


def valid_mean(x: Array, mask: Array) -> Array:
  """Mean of ``x`` [B, T] over the valid tokens (0 if there is none)."""
  return losses.token_mean(jax.lax.stop_gradient(x), mask).value()


# ------------------------------------------------------------- methods.


@register("gkd")
@dataclasses.dataclass(frozen=True)
class GKD:
  r"""Generalized knowledge distillation on every response token.

  .. math::
    L = \frac{\sum_{b,t} m_{bt}\, D(p_T \| p_S)_{bt}}{\sum_{b,t} m_{bt}},
    \qquad p = \mathrm{softmax}(h W / \tau),

  with :math:`D = \mathrm{JSD}_\beta` by default (TRL's convention:
  :math:`\beta = 0` is forward KL, :math:`\beta = 1` reverse KL, exactly).
  The full-vocabulary divergence runs in checkpointed T-chunks, so neither
  pass holds ``[B, T, V]``.

  The on-policy fraction :math:`\lambda` is not part of the loss: it is the
  trainer's ``config.lmbda``. Each step the trainer flips a host-side coin
  with that probability to use fresh student rollouts instead of dataset
  responses (a per-step Bernoulli, as in TRL), then calls this same loss on
  whichever batch it got.

  Attributes:
    beta: JSD teacher weight in [0, 1] (TRL ``beta``; 0.5).
    divergence: one of 'jsd', 'reverse_kl', 'forward_kl', 'tvd',
      'skew_forward_kl', 'skew_reverse_kl'.
    loss_temperature: softmax temperature of both heads in the loss (TRL
      uses its 0.9 for sampling and loss; the sampler's is set separately).
    skew_alpha: mixture weight of the skew KLs, in [0, 1].
    reduction: 'token_mean' (TRL batchmean), 'seq_mean' (the paper's
      per-sequence mean) or 'sum'.
    chunk_size: positions per checkpointed chunk, or None for one pass.
  """

  NAME: ClassVar[str] = "gkd"

  beta: float = 0.5
  divergence: str = "jsd"
  loss_temperature: float = 0.9
  skew_alpha: float = 0.1
  reduction: str = "token_mean"
  chunk_size: int | None = DEFAULT_CHUNK_SIZE

  def __post_init__(self):
    name = self.NAME
    check_real(name, "beta", self.beta, lo=0.0, hi=1.0)
    check_real(
        name, "loss_temperature", self.loss_temperature, lo=0.0, lo_open=True
    )
    check_common(name, self)

  def loss(self, inputs: StepInputs) -> tuple[Array, Metrics]:
    """Returns the token-weighted full-vocabulary divergence and metrics."""
    mean = selection.dense_divergence_loss(
        inputs.student_hidden,
        inputs.student_head,
        inputs.teacher_hidden,
        inputs.teacher_head,
        inputs.mask.astype(jnp.float32),
        divergence=self.divergence,
        divergence_kwargs=divergence_kwargs(
            self.divergence, beta=self.beta, skew_alpha=self.skew_alpha
        ),
        temperature=self.loss_temperature,
        reduction=self.reduction,
        chunk_size=self.chunk_size,
    )
    loss = mean.value()
    metrics = {
        f"loss/{SHORT_NAMES[self.divergence]}": loss,
        "tokens/count": jnp.sum(inputs.mask, dtype=jnp.float32),
    }
    return loss, metrics


@register("rkl")
@dataclasses.dataclass(frozen=True)
class ReverseKL(GKD):
  r"""Full-vocabulary reverse-KL OPD: :math:`\mathrm{KL}(p_S \| p_T)` per token.

  GKD with ``divergence='reverse_kl'`` and
  the loss at temperature 1: the exact-expectation form of the
  Thinking-Machines per-token reverse KL (see ``sampled_rkl`` for the
  sampled-token estimator), and the loss TIP and DEAR restrict to selected
  tokens. ``beta`` only matters if ``divergence`` is switched to 'jsd'.
  """

  NAME: ClassVar[str] = "rkl"

  divergence: str = "reverse_kl"
  loss_temperature: float = 1.0
