"""Device meshes and multi-process start-up for data-parallel training.

``softmax-jax train --mesh data=8`` (or ``--data-parallel`` for every visible
device) trains with :func:`softmax_jax.train.fit`'s ``mesh``.  Across hosts,
every process runs the same command; :func:`initialize` calls
``jax.distributed.initialize`` first, from explicit flags or, with
``--distributed``, from the environment JAX recognises (Cloud TPU pods, SLURM,
Open MPI, or ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` /
``JAX_PROCESS_ID``).
"""

from __future__ import annotations

import math

import numpy as np

AXES = ("data",)


def parse_mesh(text: str) -> dict[str, int]:
  """``"data=8"`` → ``{"data": 8}``; ``-1`` (or ``all``) means every device."""
  spec: dict[str, int] = {}
  for part in text.split(","):
    name, sep, size = part.partition("=")
    name = name.strip()
    if not sep or name not in AXES:
      raise ValueError(f"--mesh {text!r}: write it as data=N (the axis that splits the "
                       f"batch), e.g. data=8 or data=-1 for every device")
    try:
      value = -1 if size.strip().lower() in ("-1", "all") else int(size)
    except ValueError:
      value = 0
    if value == 0 or value < -1:
      raise ValueError(f"--mesh {text!r}: {name} must be a positive number of devices or -1")
    spec[name] = value
  return spec


def make_mesh(spec: dict[str, int]):
  """A ``Mesh`` with automatic axes over the first devices (all of them for ``-1``)."""
  import jax
  from jax.sharding import Mesh

  devices = jax.devices()
  sizes = {k: (len(devices) if v == -1 else v) for k, v in spec.items()}
  need = math.prod(sizes.values())
  if need > len(devices):
    raise ValueError(f"--mesh {spec}: needs {need} devices but JAX sees {len(devices)} "
                     f"({jax.default_backend()}); for CPU tests set "
                     "XLA_FLAGS=--xla_force_host_platform_device_count=8")
  grid = np.array(devices[:need]).reshape(tuple(sizes.values()))
  return Mesh(grid, tuple(sizes))


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
  """``jax.distributed.initialize`` with the given values, or auto-detected ones."""
  import jax

  kwargs = {k: v for k, v in (("coordinator_address", coordinator),
                              ("num_processes", num_processes),
                              ("process_id", process_id)) if v is not None}
  jax.distributed.initialize(**kwargs)
