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
"""Multi-controller start-up: `jax.distributed.initialize` when a run spans processes."""

from __future__ import annotations

import os

import jax
from absl import logging


def _spans_processes_by_env() -> bool:
  """Whether a launcher (Slurm, MPI, TPU pod, JAX coordinator) announced
  a multi-process run that `jax.distributed.initialize()` reads itself."""
  if os.environ.get("SLURM_NTASKS", "1") not in ("", "1"):
    return True
  if os.environ.get("OMPI_COMM_WORLD_SIZE", "1") not in ("", "1"):
    return True
  hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  if len([h for h in hosts.split(",") if h]) > 1:
    return True
  return bool(
      os.environ.get("JAX_COORDINATOR_ADDRESS")
      or os.environ.get("MEGASCALE_COORDINATOR_ADDRESS")
  )


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
  """Initialises multi-controller JAX when the run spans processes.

  With explicit arguments (CLI flags) they are used; otherwise the
  platform's environment decides (TPU pods, SLURM, Open MPI, or
  JAX_COORDINATOR_ADDRESS). On CPU, the collectives go through gloo so that
  several local processes form one run. Must be called before any other JAX
  use.

  Returns:
    True if `jax.distributed.initialize` was called.
  """
  explicit = coordinator_address is not None
  if not explicit and not _spans_processes_by_env():
    return False
  if os.environ.get("JAX_PLATFORMS", "").startswith("cpu") or (
      explicit and not os.environ.get("JAX_PLATFORMS")
  ):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if explicit:
    if num_processes is None or process_id is None:
      raise ValueError(
          "--coordinator_address needs --num_processes and --process_id"
      )
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
    )
  else:
    jax.distributed.initialize()
  logging.info(
      "process %d of %d, %d local / %d global devices",
      jax.process_index(),
      jax.process_count(),
      jax.local_device_count(),
      jax.device_count(),
  )
  return True
