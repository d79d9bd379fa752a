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
"""resize_vocab: mean-initialised new rows, old logits unchanged."""

import jax.numpy as jnp
import numpy as np
import pytest

from opd_jax import testing
from opd_jax.models import resize_vocab


@pytest.mark.parametrize("tied", [True, False])
def test_resize_vocab_keeps_old_logits(tied):
  model = testing.random_model(testing.tiny_config("qwen2", tied=tied))
  big = resize_vocab(model, 256)
  assert big.config.vocab_size == 256
  tokens = jnp.arange(12)[None] % 211
  old = model(tokens).logits
  new = big(tokens).logits
  np.testing.assert_allclose(new[..., :211], old, atol=1e-6)
  emb = np.asarray(big.embedder.embedding[...])
  np.testing.assert_allclose(
      emb[211:],
      np.broadcast_to(
          np.asarray(model.embedder.embedding[...]).mean(0), (45, 48)
      ),
      atol=1e-6,
  )
  with pytest.raises(ValueError, match="cannot shrink"):
    resize_vocab(model, 100)
