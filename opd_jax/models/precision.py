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
"""Parameter dtypes by name, and the mixed-precision cast of a parameter tree."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

# The dtypes a config may name for parameters or compute.
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def dtype_by_name(name: str, field: str = "dtype"):
  """The jnp dtype called `name`; errors name the config `field`.

  Examples:
    >>> dtype_by_name("bfloat16")
    <class 'jax.numpy.bfloat16'>
  """
  if name not in DTYPES:
    raise ValueError(
        f"config.{field}: expected one of {sorted(DTYPES)}, got {name!r}"
    )
  return DTYPES[name]


def cast_floating(tree: Any, dtype) -> Any:
  """Casts every floating leaf of `tree` to `dtype` (None: unchanged).

  Integer and boolean leaves (ids, masks, counters) keep their dtype. Used
  for mixed precision: the step and the sampler compute with parameters
  cast to `dtype` while the master copy stays in its own dtype.

  Examples:
    >>> import jax.numpy as jnp
    >>> out = cast_floating({"w": jnp.ones(2), "n": jnp.arange(2)},
    ...                     jnp.bfloat16)
    >>> out["w"].dtype, out["n"].dtype
    (dtype(bfloat16), dtype('int32'))
  """
  if dtype is None:
    return tree
  return jax.tree.map(
      lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x,
      tree,
  )
