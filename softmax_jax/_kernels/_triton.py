"""The Pallas Triton backend: whether it is there, the largest block it takes, its options.

A kernel that the backend cannot take raises :class:`KernelUnsupported` while it is
traced; :func:`softmax_jax._kernels.choose` then uses XLA (``impl="auto"``) or names the
reason (``impl="pallas"``).
"""

from __future__ import annotations

import functools

from jax.experimental import pallas as pl

MAX_BLOCK_ELEMS = 2**20  # the most elements a Triton block may hold


class KernelUnsupported(ValueError):
  """The Pallas Triton backend cannot take this kernel (raised at trace time)."""


@functools.cache
def why_unavailable() -> str | None:
  """Why the Pallas Triton backend cannot be used here (``None`` when it can)."""
  try:
    from jax.experimental.pallas import triton as pltriton

    pltriton.CompilerParams(num_warps=4, num_stages=1)
  except Exception as err:  # noqa: BLE001 - any failure means: no Triton backend
    return f"the Pallas Triton backend is not available ({type(err).__name__}: {err})"
  return None


def compiler_params(elements: int):
  """The Triton compiler options for a block of ``elements``; raises
  :class:`KernelUnsupported` when the backend is missing or the block is too large."""
  problem = why_unavailable()
  if problem is None and elements > MAX_BLOCK_ELEMS:
    problem = (f"a block of {elements} elements exceeds the Triton backend's "
               f"{MAX_BLOCK_ELEMS}")
  if problem is not None:
    raise KernelUnsupported(problem)
  from jax.experimental.pallas import triton as pltriton

  return pltriton.CompilerParams(num_warps=_warps(elements), num_stages=1)


def _warps(elements: int) -> int:
  """Warps per program: more for wider blocks (4 up to 2048 elements, at most 16)."""
  return int(min(16, max(4, pl.next_power_of_2(elements) // 1024)))
