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
"""Hand-written XLA:CPU kernels for what XLA:CPU's own fusions do slowly.

Each kernel has a pure-JAX twin it must equal, and falls back to it when the
kernel cannot be used (another backend, no C++ compiler, or
`OPD_JAX_CPU_KERNELS=0`).
"""

from opd_jax.kernels.attention import sequence_attention
from opd_jax.kernels.attention import sequence_attention_supported
from opd_jax.kernels.cpu import KERNEL_DTYPES
from opd_jax.kernels.cpu import cpu_kernels_enabled
from opd_jax.kernels.cpu import decode_attention
from opd_jax.kernels.cpu import rows_dot
from opd_jax.kernels.cpu import rows_dot_uses_kernel
