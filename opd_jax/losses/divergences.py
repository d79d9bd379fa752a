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
"""Per-token teacher/student divergences over the vocabulary, unreduced."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array
ArrayLike = Any

# A finite stand-in for -inf logits (e.g. vocabulary padding). With it,
# 0 * (log p - log q) stays 0 instead of 0 * inf = nan, in values and grads.
_LOGIT_FLOOR = -1e30


def _check_floating(name: str, x: ArrayLike) -> None:
  if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
    raise TypeError(
        f"{name} must be a floating array, got dtype {jnp.result_type(x)}."
    )


def _check_same_shape(name_a: str, a: Array, name_b: str, b: Array) -> None:
  if a.shape != b.shape:
    raise ValueError(
        f"{name_a} and {name_b} must have the same shape, got {a.shape} and"
        f" {b.shape}."
    )


def _check_fraction(name: str, value: Any) -> float:
  """Returns `value` as a Python float in [0, 1] (it selects code paths)."""
  try:
    value = float(value)
  except (TypeError, jax.errors.ConcretizationTypeError) as e:
    raise TypeError(
        f"{name} must be a concrete number in [0, 1], got {value!r}."
    ) from e
  if not 0.0 <= value <= 1.0:
    raise ValueError(f"{name} must be in [0, 1], got {value}.")
  return value


def _check_temperature(temperature: Any) -> None:
  if isinstance(temperature, (int, float)) and temperature <= 0:
    raise ValueError(f"temperature must be > 0, got {temperature}.")


def _norm_axis(axis: int, ndim: int) -> int:
  if not -ndim <= axis < ndim:
    raise ValueError(f"axis must be in [{-ndim}, {ndim}), got {axis}.")
  return axis % ndim


def _check_where(where: ArrayLike | None, shape: tuple[int, ...]) -> None:
  if where is not None and jnp.shape(where) != shape:
    raise ValueError(
        "where must have the logits shape without the vocabulary axis,"
        f" expected {shape}, got {jnp.shape(where)}."
    )


def _upcast(x: ArrayLike) -> Array:
  """bfloat16/float16 -> float32; float32 and float64 stay as they are."""
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _prepare_logits(
    name: str,
    logits: ArrayLike,
    where: ArrayLike | None,
    temperature: Any,
    axis: int,
) -> Array:
  """Upcasts, scales and masks logits so every later op stays finite."""
  _check_floating(name, logits)
  logits = _upcast(logits) / temperature
  logits = jnp.maximum(logits, _LOGIT_FLOOR)
  if where is not None:
    # Masked rows become all-zero logits *before* the softmax: values and
    # gradients there are then finite whatever the row held (-inf, 1e30).
    logits = jnp.where(jnp.expand_dims(where, axis), logits, 0.0)
  return logits


def _log_probs_pair(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    where: ArrayLike | None,
    temperature: Any,
    axis: int,
) -> tuple[Array, Array, int]:
  """Validates the pair; returns upcast log-softmaxes and the axis."""
  student_logits = jnp.asarray(student_logits)
  teacher_logits = jnp.asarray(teacher_logits)
  _check_same_shape(
      "student_logits", student_logits, "teacher_logits", teacher_logits
  )
  _check_temperature(temperature)
  axis = _norm_axis(axis, student_logits.ndim)
  shape = student_logits.shape[:axis] + student_logits.shape[axis + 1 :]
  _check_where(where, shape)
  zs = _prepare_logits(
      "student_logits", student_logits, where, temperature, axis
  )
  zt = _prepare_logits(
      "teacher_logits", teacher_logits, where, temperature, axis
  )
  return jax.nn.log_softmax(zs, axis), jax.nn.log_softmax(zt, axis), axis


def _kl(log_p: Array, log_q: Array, axis: int) -> Array:
  """KL(p || q) from log-probabilities, summed over `axis`."""
  return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=axis)


def _log_mix(log_p: Array, log_q: Array, weight: float) -> Array:
  """log(weight * p + (1 - weight) * q), stable; the endpoints are exact."""
  if weight == 1.0:
    return log_p
  if weight == 0.0:
    return log_q
  return jnp.logaddexp(log_p + jnp.log(weight), log_q + jnp.log1p(-weight))


def _masked(value: Array, where: ArrayLike | None) -> Array:
  return value if where is None else jnp.where(where, value, 0.0)


def forward_kl(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    *,
    where: ArrayLike | None = None,
    temperature: float = 1.0,
    axis: int = -1,
) -> Array:
  r"""Forward KL divergence of the student from the teacher, per token.

  .. math::
    \mathrm{FKL} = \mathrm{KL}(p_T \| p_S)
      = \sum_v p_T(v) (\log p_T(v) - \log p_S(v)),

  with :math:`p = \mathrm{softmax}(z / \tau)`. Mode covering; its student
  logit gradient is :math:`p_S - p_T`.

  Args:
    student_logits: student logits, e.g. ``[batch, seq, vocab]``.
    teacher_logits: teacher logits, same shape as ``student_logits``.
    where: optional boolean mask of shape ``[batch, seq]`` (the logits shape
      without ``axis``); masked positions return 0 with zero gradient.
    temperature: softmax temperature :math:`\tau`, divides both logits.
    axis: the vocabulary axis.

  Returns:
    ``[batch, seq]`` array, float32 (float64 for float64 inputs), unreduced.

  Examples:
    >>> import jax.numpy as jnp
    >>> z = jnp.array([[0.0, 1.0]])
    >>> float(forward_kl(z, z)[0])
    0.0
  """
  log_ps, log_pt, axis = _log_probs_pair(
      student_logits, teacher_logits, where, temperature, axis
  )
  return _masked(_kl(log_pt, log_ps, axis), where)


def reverse_kl(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    *,
    where: ArrayLike | None = None,
    temperature: float = 1.0,
    axis: int = -1,
) -> Array:
  r"""Reverse KL divergence of the teacher from the student, per token.

  .. math::
    \mathrm{RKL} = \mathrm{KL}(p_S \| p_T)
      = \sum_v p_S(v) (\log p_S(v) - \log p_T(v)).

  The on-policy distillation loss (mode seeking). Its student logit gradient
  is :math:`p_{S,j} (\ell_j - \sum_k p_{S,k} \ell_k)` with
  :math:`\ell = \log p_S - \log p_T`.

  Args:
    student_logits: student logits, e.g. ``[batch, seq, vocab]``.
    teacher_logits: teacher logits, same shape as ``student_logits``.
    where: optional boolean mask ``[batch, seq]``; masked positions return 0.
    temperature: softmax temperature, divides both logits.
    axis: the vocabulary axis.

  Returns:
    ``[batch, seq]`` array, float32 (float64 for float64 inputs), unreduced.

  References:
    Agarwal et al., On-Policy Distillation of Language Models, 2024.
  """
  log_ps, log_pt, axis = _log_probs_pair(
      student_logits, teacher_logits, where, temperature, axis
  )
  return _masked(_kl(log_ps, log_pt, axis), where)


def generalized_jsd(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    *,
    beta: float = 0.5,
    where: ArrayLike | None = None,
    temperature: float = 1.0,
    axis: int = -1,
) -> Array:
  r"""Generalized Jensen-Shannon divergence, TRL ``GKDTrainer`` convention.

  .. math::
    M = \beta p_T + (1 - \beta) p_S, \qquad
    \mathrm{JSD}_\beta = \beta \mathrm{KL}(p_T \| M)
      + (1 - \beta) \mathrm{KL}(p_S \| M),

  except at the endpoints, which TRL special-cases: ``beta=0`` is exactly
  :func:`forward_kl` and ``beta=1`` exactly :func:`reverse_kl` (the mixture
  formula would give 0 there). :math:`\log M` is a ``logaddexp`` of the
  weighted log-probabilities.

  Args:
    student_logits: student logits, e.g. ``[batch, seq, vocab]``.
    teacher_logits: teacher logits, same shape as ``student_logits``.
    beta: concrete number in [0, 1], the teacher weight in the mixture.
    where: optional boolean mask ``[batch, seq]``; masked positions return 0.
    temperature: softmax temperature, divides both logits.
    axis: the vocabulary axis.

  Returns:
    ``[batch, seq]`` array, float32 (float64 for float64 inputs), unreduced.

  References:
    Agarwal et al., On-Policy Distillation of Language Models, 2024; TRL
    ``GKDTrainer.generalized_jsd_loss``.
  """
  beta = _check_fraction("beta", beta)
  log_ps, log_pt, axis = _log_probs_pair(
      student_logits, teacher_logits, where, temperature, axis
  )
  if beta == 0.0:
    value = _kl(log_pt, log_ps, axis)
  elif beta == 1.0:
    value = _kl(log_ps, log_pt, axis)
  else:
    log_m = _log_mix(log_pt, log_ps, beta)
    value = beta * _kl(log_pt, log_m, axis) + (1.0 - beta) * _kl(
        log_ps, log_m, axis
    )
  return _masked(value, where)


def skew_forward_kl(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    *,
    alpha: float = 0.1,
    where: ArrayLike | None = None,
    temperature: float = 1.0,
    axis: int = -1,
) -> Array:
  r"""Skew forward KL (DistiLLM): the teacher against a teacher-skewed student.

  .. math::
    \mathrm{SFKL}_\alpha = \mathrm{KL}(p_T \| \alpha p_T + (1 - \alpha) p_S).

  ``alpha=0`` is :func:`forward_kl`; ``alpha=1`` is 0. The skew keeps the
  divergence bounded by :math:`-\log \alpha` where the student puts no mass.

  Args:
    student_logits: student logits, e.g. ``[batch, seq, vocab]``.
    teacher_logits: teacher logits, same shape as ``student_logits``.
    alpha: concrete number in [0, 1], the teacher weight in the mixture.
    where: optional boolean mask ``[batch, seq]``; masked positions return 0.
    temperature: softmax temperature, divides both logits.
    axis: the vocabulary axis.

  Returns:
    ``[batch, seq]`` array, float32 (float64 for float64 inputs), unreduced.

  References:
    Ko et al., DistiLLM: Towards Streamlined Distillation for Large Language
    Models, ICML 2024.
  """
  alpha = _check_fraction("alpha", alpha)
  log_ps, log_pt, axis = _log_probs_pair(
      student_logits, teacher_logits, where, temperature, axis
  )
  value = _kl(log_pt, _log_mix(log_pt, log_ps, alpha), axis)
  return _masked(value, where)


def skew_reverse_kl(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    *,
    alpha: float = 0.1,
    where: ArrayLike | None = None,
    temperature: float = 1.0,
    axis: int = -1,
) -> Array:
  r"""Skew reverse KL (DistiLLM): the student against a student-skewed teacher.

  .. math::
    \mathrm{SRKL}_\alpha = \mathrm{KL}(p_S \| \alpha p_S + (1 - \alpha) p_T).

  ``alpha=0`` is :func:`reverse_kl`; ``alpha=1`` is 0.

  Args:
    student_logits: student logits, e.g. ``[batch, seq, vocab]``.
    teacher_logits: teacher logits, same shape as ``student_logits``.
    alpha: concrete number in [0, 1], the student weight in the mixture.
    where: optional boolean mask ``[batch, seq]``; masked positions return 0.
    temperature: softmax temperature, divides both logits.
    axis: the vocabulary axis.

  Returns:
    ``[batch, seq]`` array, float32 (float64 for float64 inputs), unreduced.

  References:
    Ko et al., DistiLLM: Towards Streamlined Distillation for Large Language
    Models, ICML 2024.
  """
  alpha = _check_fraction("alpha", alpha)
  log_ps, log_pt, axis = _log_probs_pair(
      student_logits, teacher_logits, where, temperature, axis
  )
  value = _kl(log_ps, _log_mix(log_ps, log_pt, alpha), axis)
  return _masked(value, where)


def total_variation(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    *,
    where: ArrayLike | None = None,
    temperature: float = 1.0,
    axis: int = -1,
) -> Array:
  r"""Total variation distance between student and teacher, per token.

  .. math::
    \mathrm{TV} = \tfrac{1}{2} \sum_v |p_S(v) - p_T(v)| \in [0, 1].

  Args:
    student_logits: student logits, e.g. ``[batch, seq, vocab]``.
    teacher_logits: teacher logits, same shape as ``student_logits``.
    where: optional boolean mask ``[batch, seq]``; masked positions return 0.
    temperature: softmax temperature, divides both logits.
    axis: the vocabulary axis.

  Returns:
    ``[batch, seq]`` array, float32 (float64 for float64 inputs), unreduced.
  """
  log_ps, log_pt, axis = _log_probs_pair(
      student_logits, teacher_logits, where, temperature, axis
  )
  value = 0.5 * jnp.sum(jnp.abs(jnp.exp(log_ps) - jnp.exp(log_pt)), axis=axis)
  return _masked(value, where)


def entropy(
    logits: ArrayLike,
    *,
    where: ArrayLike | None = None,
    temperature: float = 1.0,
    axis: int = -1,
) -> Array:
  r"""Shannon entropy of the softmax distribution, per token, in nats.

  .. math::
    H = -\sum_v p(v) \log p(v).

  Args:
    logits: logits, e.g. ``[batch, seq, vocab]``.
    where: optional boolean mask ``[batch, seq]``; masked positions return 0.
    temperature: softmax temperature, divides the logits.
    axis: the vocabulary axis.

  Returns:
    ``[batch, seq]`` array, float32 (float64 for float64 inputs).
  """
  logits = jnp.asarray(logits)
  _check_temperature(temperature)
  axis = _norm_axis(axis, logits.ndim)
  _check_where(where, logits.shape[:axis] + logits.shape[axis + 1 :])
  z = _prepare_logits("logits", logits, where, temperature, axis)
  log_p = jax.nn.log_softmax(z, axis)
  return _masked(-jnp.sum(jnp.exp(log_p) * log_p, axis=axis), where)


def token_logprobs(
    logits: ArrayLike,
    ids: ArrayLike,
    *,
    temperature: float = 1.0,
) -> Array:
  r"""Log-probability of the given token ids under ``softmax(logits / tau)``.

  .. math::
    \log p(y) = z_y / \tau - \mathrm{logsumexp}(z / \tau),

  computed without materialising the full log-softmax.

  Args:
    logits: logits ``[batch, seq, vocab]`` (vocabulary last).
    ids: integer ids ``[batch, seq]``.
    temperature: softmax temperature, divides the logits.

  Returns:
    ``[batch, seq]`` array, float32 (float64 for float64 inputs).
  """
  logits = jnp.asarray(logits)
  ids = jnp.asarray(ids)
  if not jnp.issubdtype(ids.dtype, jnp.integer):
    raise TypeError(f"ids must be an integer array, got dtype {ids.dtype}.")
  if ids.shape != logits.shape[:-1]:
    raise ValueError(
        f"ids must have shape logits.shape[:-1]={logits.shape[:-1]}, got"
        f" {ids.shape}."
    )
  _check_temperature(temperature)
  z = _prepare_logits("logits", logits, None, temperature, -1)
  picked = jnp.take_along_axis(z, ids[..., None], axis=-1)[..., 0]
  return picked - jax.nn.logsumexp(z, axis=-1)


def _k1(log_r: Array) -> Array:
  return -log_r


def _k2(log_r: Array) -> Array:
  return 0.5 * jnp.square(log_r)


def _k3(log_r: Array) -> Array:
  return jnp.expm1(log_r) - log_r


_ESTIMATORS = {"k1": _k1, "k2": _k2, "k3": _k3}


def sampled_kl(
    student_logprobs: ArrayLike,
    teacher_logprobs: ArrayLike,
    *,
    estimator: str = "k1",
    where: ArrayLike | None = None,
) -> Array:
  r"""Single-sample estimators of KL(student || teacher) at sampled tokens.

  With tokens :math:`y \sim p_S` and :math:`\log r = \log p_T(y) - \log
  p_S(y)`, Schulman's estimators are

  .. math::
    k_1 = -\log r, \qquad k_2 = \tfrac{1}{2} (\log r)^2, \qquad
    k_3 = (r - 1) - \log r.

  :math:`k_1` and :math:`k_3` are unbiased for :math:`\mathrm{KL}(p_S \|
  p_T)`; :math:`k_3` is non-negative with low variance.

  Args:
    student_logprobs: :math:`\log p_S(y)` of the sampled tokens ``[batch,
      seq]``.
    teacher_logprobs: :math:`\log p_T(y)` of the same tokens ``[batch, seq]``.
    estimator: one of ``'k1'``, ``'k2'``, ``'k3'``.
    where: optional boolean mask ``[batch, seq]``; masked positions return 0.

  Returns:
    ``[batch, seq]`` array, float32 (float64 for float64 inputs).

  References:
    J. Schulman, Approximating KL Divergence, 2020 (blog post).
  """
  if estimator not in _ESTIMATORS:
    raise ValueError(
        f"estimator must be one of {sorted(_ESTIMATORS)}, got {estimator!r}."
    )
  student_logprobs = jnp.asarray(student_logprobs)
  teacher_logprobs = jnp.asarray(teacher_logprobs)
  _check_floating("student_logprobs", student_logprobs)
  _check_floating("teacher_logprobs", teacher_logprobs)
  _check_same_shape(
      "student_logprobs",
      student_logprobs,
      "teacher_logprobs",
      teacher_logprobs,
  )
  _check_where(where, student_logprobs.shape)
  lps = _upcast(student_logprobs)
  lpt = _upcast(teacher_logprobs)
  if where is not None:
    # Padding often holds -inf log-probs; -inf - (-inf) would be nan.
    lps = jnp.where(where, lps, 0.0)
    lpt = jnp.where(where, lpt, 0.0)
  return _masked(_ESTIMATORS[estimator](lpt - lps), where)
