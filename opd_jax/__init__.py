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
"""opd_jax: on-policy distillation of language models in JAX / Flax NNX."""

import logging as _logging

__version__ = "0.1.0"


class _NoTorchNotice(_logging.Filter):
  """Drops transformers' "PyTorch was not found. Models won't be available..."

  `import transformers` without torch logs that notice (a `warning_advice`
  on the `transformers` logger, transformers/__init__.py). opd_jax uses
  transformers only for tokenizers and configs and never imports torch, so
  for its users the notice is noise. A filter on that one logger drops that
  one record and nothing else: other transformers warnings still show, no
  environment variable is set (`TRANSFORMERS_NO_ADVISORY_WARNINGS` would
  also hide every other advisory and reach child processes).
  """

  def filter(self, record: _logging.LogRecord) -> bool:
    return not str(record.msg).startswith("PyTorch was not found.")


if not any(
    isinstance(f, _NoTorchNotice)
    for f in _logging.getLogger("transformers").filters
):
  _logging.getLogger("transformers").addFilter(_NoTorchNotice())
