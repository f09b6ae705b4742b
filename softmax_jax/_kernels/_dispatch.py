"""Which implementation runs: ``impl="auto" | "xla" | "pallas"`` and the platform decide.

``impl="auto"`` builds both paths into the program with ``lax.platform_dependent``:
the kernel where the program is lowered for CUDA, XLA anywhere else.  It is decided
by the platform the program runs on, not by the host that traces it, so a CUDA
export traced on a CPU host holds the Triton kernel and none of the XLA path.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from softmax_jax._kernels import _triton
from softmax_jax._kernels._triton import KernelUnsupported

IMPLS = ("auto", "xla", "pallas")


def _check_impl(impl, fn):
  if impl not in IMPLS:
    raise ValueError(f"{fn}: impl must be one of {IMPLS}, got {impl!r}")


def _kernel_takes(x: jax.Array) -> bool:
  """Whether the kernels take ``x`` (2-D after flattening, classes last, a float dtype)."""
  return x.ndim >= 1 and x.shape[-1] >= 1 and jnp.issubdtype(x.dtype, jnp.floating) and (
      x.dtype != jnp.float64)


def _reasons_against_the_kernel(x, axes, unsupported) -> list[str]:
  """What keeps the kernels from running (empty when nothing does)."""
  reasons = [f"{k}" for k, v in unsupported.items() if v]
  if axes != (x.ndim - 1,):
    reasons.append(f"axis={axes} (the kernels take the last axis only)")
  if not _kernel_takes(x):
    reasons.append(f"dtype {x.dtype} (float16, bfloat16 or float32 only)")
  if (problem := _triton.why_unavailable()) is not None:
    reasons.append(problem)
  return reasons


def choose(impl: str, x: jax.Array, axes: tuple[int, ...], fn: str, *, kernel, xla,
           **unsupported):
  """Runs ``kernel()`` (the Pallas path) or ``xla()`` as ``impl`` and the platform decide.

  ``impl="auto"`` builds both into the program with ``lax.platform_dependent``: the
  kernel where the program is lowered for CUDA, XLA anywhere else.  It uses XLA
  alone when an option is unsupported or the Triton backend refuses the kernel at
  trace time; ``impl="pallas"`` raises a ``ValueError`` naming the reason instead.
  ``unsupported`` maps option names to whether they are set to something the kernels
  do not handle.
  """
  _check_impl(impl, fn)
  if impl == "xla":
    return xla()
  reasons = _reasons_against_the_kernel(x, axes, unsupported)
  if impl == "pallas":
    if reasons:
      raise ValueError(f"{fn}: impl='pallas' does not support " + ", ".join(reasons))
    try:
      return kernel()
    except KernelUnsupported as err:
      raise KernelUnsupported(f"{fn}: impl='pallas' cannot run: {err}") from err
  if reasons:
    return xla()
  try:
    return lax.platform_dependent(cuda=kernel, default=xla)
  except KernelUnsupported:  # the Triton backend refused the kernel while tracing it
    return xla()
