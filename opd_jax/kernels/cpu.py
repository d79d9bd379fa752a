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
"""Builds, loads and calls the C++ CPU kernels (`cpu_kernels.cc`, `cpu_attention.cc`).

The shared library is compiled on first use with the host's C++ compiler
(`$CXX`, else `g++`, else `c++`), for this host's CPU (`-march=native`), and
cached under `$OPD_JAX_CACHE` (default `~/.cache/opd_jax`) keyed by the
source, jaxlib's FFI headers, the compiler and the CPU, so a cache shared by
different machines never loads code built for another CPU. Compiling takes a
few seconds once; with no compiler, a failed build or `OPD_JAX_CPU_KERNELS=0`
the callers run their pure-JAX twins (one warning says why).
"""

from __future__ import annotations

import functools
import hashlib
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

_DIR = pathlib.Path(__file__).parent
# Compiled together into one library; the header is part of the cache key.
_SOURCES = (_DIR / "cpu_kernels.cc", _DIR / "cpu_attention.cc")
_HEADERS = (_DIR / "cpu_common.h",)
# FFI target name -> symbol of its handler in the library.
_TARGETS = {
    "opd_rows_dot": "OpdRowsDot",
    "opd_decode_attention": "OpdDecodeAttention",
    "opd_rows_dot_bf16": "OpdRowsDotBf16",
    "opd_decode_attention_bf16": "OpdDecodeAttentionBf16",
    "opd_sequence_attention": "OpdSequenceAttention",
    "opd_sequence_attention_backward": "OpdSequenceAttentionBackward",
}
# The element types of weights and caches the kernels read, and the suffix
# of their handlers' target names.
_SUFFIX = {jnp.dtype(jnp.float32): "", jnp.dtype(jnp.bfloat16): "_bf16"}
KERNEL_DTYPES = tuple(_SUFFIX)
_FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-w")
_lock = threading.Lock()
_registered = False  # XLA refuses a second handler under the same name


def _compiler() -> str | None:
  for name in (os.environ.get("CXX"), "g++", "c++"):
    path = shutil.which(name) if name else None
    if path:
      return path
  return None


def _cpu_signature() -> str:
  """Model and feature flags of this CPU: part of the build cache key."""
  try:
    lines = pathlib.Path("/proc/cpuinfo").read_text().splitlines()
  except OSError:
    return platform.machine() + platform.processor()
  keep = [l for l in lines if l.startswith(("model name", "flags", "Features"))]
  return platform.machine() + "\n".join(sorted(set(keep)))


def _build(cxx: str) -> pathlib.Path:
  """The compiled library, from the cache or compiled now (atomic write)."""
  key = hashlib.sha256(
      "\0".join([
          *(path.read_text() for path in _SOURCES + _HEADERS),
          jaxlib.__version__,
          cxx,
          " ".join(_FLAGS),
          _cpu_signature(),
      ]).encode()
  ).hexdigest()[:16]
  root = pathlib.Path(
      os.environ.get("OPD_JAX_CACHE", "~/.cache/opd_jax")
  ).expanduser()
  lib = root / "kernels" / f"cpu_kernels-{key}.so"
  if lib.exists():
    return lib
  lib.parent.mkdir(parents=True, exist_ok=True)
  # Several processes (pytest-xdist workers) may build at once: each writes
  # its own temporary file and renames it into place.
  fd, tmp = tempfile.mkstemp(suffix=".so", dir=lib.parent)
  os.close(fd)
  try:
    cmd = [
        cxx,
        *_FLAGS,
        f"-I{jax.ffi.include_dir()}",
        *map(str, _SOURCES),
        "-o",
        tmp,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
      raise RuntimeError(
          f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr[-800:]}"
      )
    os.replace(tmp, lib)
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)
  return lib


@functools.cache
def _load() -> bool:
  """Builds and registers the kernels once per process; False if it cannot."""
  global _registered
  cxx = _compiler()
  if cxx is None:
    warnings.warn(
        "opd_jax: no C++ compiler ($CXX, g++, c++) found; decoding on CPU"
        " uses XLA's dots (slower, equal up to float32 rounding)."
    )
    return False
  try:
    import ctypes  # pylint: disable=g-import-not-at-top

    library = ctypes.cdll.LoadLibrary(str(_build(cxx)))
    if not _registered:
      for target, symbol in _TARGETS.items():
        jax.ffi.register_ffi_target(
            target, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu"
        )
      _registered = True
  except (OSError, RuntimeError, AttributeError) as e:
    warnings.warn(
        "opd_jax: building the CPU kernels failed, decoding on CPU uses"
        f" XLA's dots (slower, equal up to float32 rounding): {e}"
    )
    return False
  return True


def cpu_kernels_enabled() -> bool:
  """Whether computations traced now use the C++ CPU kernels.

  True when JAX's default backend is the CPU, `OPD_JAX_CPU_KERNELS` is not
  "0" and the kernels built. Checked at trace time, so a function traced
  before the environment variable changed keeps its choice.
  """
  if os.environ.get("OPD_JAX_CPU_KERNELS", "1") == "0":
    return False
  if jax.default_backend() != "cpu":
    return False
  with _lock:
    return _load()


def rows_dot(x: jax.Array, w_rows: jax.Array) -> jax.Array:
  """x @ w_rows.T: [M, K] x [N, K] -> [M, N], accumulated in float32.

  Runs the C++ kernel when `cpu_kernels_enabled()` for float32 operands,
  and for bfloat16 w_rows with bfloat16 or float32 x (read as float32: a
  bfloat16 widens exactly), `jax.lax.dot_general` otherwise. The kernel
  sums each dot product in a different order from XLA's, so results agree
  to float32 rounding, not bitwise.
  """
  if x.ndim != 2 or w_rows.ndim != 2 or x.shape[1] != w_rows.shape[1]:
    raise ValueError(
        f"rows_dot: expected x [M, K] and w_rows [N, K], got {x.shape} and"
        f" {w_rows.shape}"
    )
  if rows_dot_uses_kernel(x.dtype, w_rows.dtype):
    return _rows_dot_kernel(x, w_rows)
  return _rows_dot_xla(x, w_rows)


def rows_dot_uses_kernel(x_dtype, w_dtype) -> bool:
  """Whether `rows_dot` of these dtypes runs the C++ kernel (at trace time).

  float32 or bfloat16 w, with x of w's dtype or float32 (bfloat16 x against
  float32 w would round w in the dot: not the kernel's product), and
  `cpu_kernels_enabled()`.
  """
  return (
      jnp.dtype(w_dtype) in KERNEL_DTYPES
      and jnp.dtype(x_dtype) in (jnp.dtype(w_dtype), jnp.dtype(jnp.float32))
      and cpu_kernels_enabled()
  )


def _rows_dot_xla(x: jax.Array, w_rows: jax.Array) -> jax.Array:
  return jax.lax.dot_general(
      x,
      w_rows.astype(x.dtype),
      (((1,), (1,)), ((), ())),
      preferred_element_type=jnp.float32,
  )


@jax.custom_jvp
def _rows_dot_kernel(x: jax.Array, w_rows: jax.Array) -> jax.Array:
  out = jax.ShapeDtypeStruct((x.shape[0], w_rows.shape[0]), jnp.float32)
  target = "opd_rows_dot" + _SUFFIX[jnp.dtype(w_rows.dtype)]
  return jax.ffi.ffi_call(target, out)(x.astype(jnp.float32), w_rows)


@_rows_dot_kernel.defjvp
def _rows_dot_kernel_jvp(primals, tangents):
  """d(x w^T) = dx w^T + x dw^T, with XLA's dot: transposable, so `grad`
  works through the kernel (the custom call itself has no derivative)."""
  (x, w_rows), (dx, dw) = primals, tangents
  return _rows_dot_kernel(x, w_rows), (
      _rows_dot_xla(dx, w_rows) + _rows_dot_xla(x, dw)
  )


def decode_attention(
    q: jax.Array,
    k_new: jax.Array,
    v_new: jax.Array,
    k_cache: jax.Array,
    v_cache: jax.Array,
    key_mask: jax.Array,
    start: jax.Array,
    *,
    scale: float,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One decode step of attention with its cache write, by the C++ kernel.

  Writes k_new into slot `start` of k_cache and v_new into v_cache (in
  place: the caches are aliased to the outputs), then for each row b, kv
  head k and group g

    out[b, k, g] = sum_s p[s] v_cache[b, k, s],
    p = softmax_s(scale q[b, k, g] . k_cache[b, k, :, s]) over the slots
        s <= start with key_mask[b, s],

  reading only slots 0..start. A row with no such slot gets the mean of all
  S values, as XLA's softmax over equal floors gives. The twin is
  `models.attention.cached_attention` (float32 rounding apart). The custom
  call has no derivative; `models.attention` differentiates the twin in its
  place.

  Caches in float32 or bfloat16 (read as float32); the sums and the softmax
  run in float32.

  Args:
    q: [B, K, G, H], the step's queries grouped by kv head (any float
      dtype; used as float32).
    k_new, v_new: [B, K, H], the step's key and value, in the caches' dtype.
    k_cache: [B, K, H, S]; v_cache: [B, K, S, H] (`KVCache`'s layout),
      float32 or bfloat16.
    key_mask: bool [B, S], valid slots including this step's.
    start: int32 [], the slot this step writes (clamped into the buffer
      like `dynamic_update_slice`).
    scale: the logits' scale, usually H ** -0.5.

  Returns:
    (out float32 [B, K, G, H], k_cache, v_cache).

  Raises:
    ValueError: on shapes or dtypes other than the above, naming the tensor.
    RuntimeError: when the kernels are not available
      (`cpu_kernels_enabled()` is False).
  """
  if q.ndim != 4 or k_cache.ndim != 4:
    raise ValueError(
        "decode_attention: expected q [B, K, G, H] and k_cache [B, K, H, S],"
        f" got {q.shape} and {k_cache.shape}"
    )
  b, kv, g, h = q.shape
  s = k_cache.shape[-1]
  dtype = jnp.dtype(k_cache.dtype)
  if dtype not in KERNEL_DTYPES:
    raise ValueError(
        f"decode_attention: k_cache must be float32 or bfloat16, got {dtype}"
    )
  expected = {
      "k_new": (k_new, (b, kv, h)),
      "v_new": (v_new, (b, kv, h)),
      "k_cache": (k_cache, (b, kv, h, s)),
      "v_cache": (v_cache, (b, kv, s, h)),
  }
  for name, (x, shape) in expected.items():
    if x.shape != shape or x.dtype != dtype:
      raise ValueError(
          f"decode_attention: {name} must be {dtype} {shape} for q"
          f" {q.shape} and k_cache {k_cache.dtype}, got {x.dtype}{x.shape}"
      )
  if key_mask.shape != (b, s) or jnp.shape(start):
    raise ValueError(
        "decode_attention: expected key_mask [B, S] = "
        f"{(b, s)} and a scalar start, got key_mask {key_mask.shape}, start"
        f" {jnp.shape(start)}"
    )
  if not cpu_kernels_enabled():
    raise RuntimeError(
        "decode_attention: the C++ CPU kernels are not available here"
        " (see cpu_kernels_enabled)"
    )
  out = jax.ShapeDtypeStruct(q.shape, jnp.float32)
  caches = (
      jax.ShapeDtypeStruct(k_cache.shape, dtype),
      jax.ShapeDtypeStruct(v_cache.shape, dtype),
  )
  return jax.ffi.ffi_call(
      "opd_decode_attention" + _SUFFIX[dtype],
      (out, *caches),
      input_output_aliases={3: 1, 4: 2},
  )(
      q.astype(jnp.float32),
      k_new,
      v_new,
      k_cache,
      v_cache,
      key_mask.astype(bool),
      jnp.asarray(start, jnp.int32),
      scale=np.float32(scale),
  )
