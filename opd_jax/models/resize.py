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
"""Growing a model's vocabulary to match another tokenizer's id range."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from opd_jax.models.transformer import Transformer


def resize_vocab(model: Transformer, vocab_size: int) -> Transformer:
  """A copy of `model` with `vocab_size` rows, new rows set to the mean row.

  As `transformers`' `resize_token_embeddings` (mean resizing): the new ids
  start at the average embedding (and average head column), so their logits
  are ordinary rather than extreme. Used to give a student the teacher's
  (larger, padded) vocabulary, e.g. Qwen2.5-1.5B (151936) under
  Qwen2.5-14B (152064).
  """
  old = model.config.vocab_size
  if vocab_size < old:
    raise ValueError(
        f"resize_vocab: cannot shrink the vocabulary from {old} to {vocab_size}"
    )
  if vocab_size == old:
    return model
  config = model.config.replace(vocab_size=vocab_size)
  graphdef, state = nnx.split(
      nnx.eval_shape(
          lambda: Transformer(
              config,
              dtype=model.embedder.embedding[...].dtype,
              rngs=nnx.Rngs(0),
          )
      )
  )
  params = nnx.state(model).to_pure_dict()

  def grow(x, axis):
    extra = jnp.repeat(
        jnp.mean(x, axis=axis, keepdims=True, dtype=jnp.float32).astype(
            x.dtype
        ),
        vocab_size - old,
        axis=axis,
    )
    return jax.jit(
        lambda a, b: jnp.concatenate([a, b], axis=axis),
        out_shardings=x.sharding,
    )(x, extra)

  params["embedder"]["embedding"] = grow(params["embedder"]["embedding"], 0)
  if params.get("lm_head") is not None:
    params["lm_head"]["kernel"] = grow(params["lm_head"]["kernel"], 1)
  return nnx.merge(graphdef, params)
