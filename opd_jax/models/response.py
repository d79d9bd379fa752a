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
"""Hidden states aligned with the response tokens they predict."""

from __future__ import annotations

import jax


def response_hidden(
    model, tokens: jax.Array, mask: jax.Array, response_len: int
) -> jax.Array:
  """Hidden states [B, T, D] that predict the last `response_len` tokens.

  The output at position i predicts token i + 1, so response token t (at
  position P + t of the [B, P + T] `tokens`) is predicted by the hidden
  state at P + t - 1. The trainer's step, SFT and the diagnostics all score
  responses through this one alignment.

  Args:
    model: a `Transformer`.
    tokens: int32 [B, P + T] prompt and response ids.
    mask: bool [B, P + T], False on padding.
    response_len: T.

  Returns:
    [B, T, D] final-norm hidden states.
  """
  hidden = model(tokens, attention_mask=mask, return_logits=False).hidden
  prompt_len = tokens.shape[1] - response_len
  return hidden[:, prompt_len - 1 : -1]
