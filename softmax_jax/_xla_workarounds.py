"""Working around a known miscompilation of the XLA CPU compiler that JAX ships.

jaxlib 0.10.2 (and 0.11.0) hand reductions fused with their operands on the CPU to
YNNPACK (XLA's ``__ynn_fusion``), which returns wrong values for some shapes — with no
error: ``jax.jit(lambda y, v: y * (v - (y * v).sum(-1, keepdims=True)))`` on a
``[64, 15, 50]`` tangent is off by 15, ``jax.jacfwd`` of any jitted softmax with a
custom JVP is off by 0.07 at ``[15, 50]``, and the vmapped matrix–vector product of
jax-ml/jax#39103 loses its last digits — or crashes (jax-ml/jax#39257, #40412).  The XLA
flag ``--xla_cpu_experimental_ynn_fusion_type=-reduce`` keeps reductions out of YNNPACK
and gives the right values again (the workaround of jax-ml/jax#37465).

:func:`apply` adds that flag to ``XLA_FLAGS`` when ``softmax_jax`` is imported, if the
installed jaxlib is one of those versions, the flag is not set already (a user's own
setting of ``xla_cpu_experimental_ynn_fusion_type`` is kept) and JAX has not started its
CPU backend yet (XLA reads its flags once, when a backend starts).  If the backend has
started, it warns instead.  ``SOFTMAX_JAX_KEEP_XLA_FLAGS=1`` turns all of this off.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
import warnings

AFFECTED_JAXLIB = ("0.10.2", "0.11.0")
FLAG = "--xla_cpu_experimental_ynn_fusion_type=-reduce"
OPT_OUT = "SOFTMAX_JAX_KEEP_XLA_FLAGS"


def _cpu_backend_started() -> bool:
  """Whether JAX has started its CPU backend (after which XLA_FLAGS are not read again)."""
  bridge = sys.modules.get("jax._src.xla_bridge")
  backends = getattr(bridge, "_backends", None) or {}
  return "cpu" in backends


def apply() -> str:
  """Add :data:`FLAG` to ``XLA_FLAGS`` where it is needed and still takes effect.

  Returns what was done: ``"set"``, ``"late"`` (the backend had started: warned),
  ``"kept"`` (the user's setting stands), ``"unaffected"`` (another jaxlib, or none) or
  ``"off"`` (``SOFTMAX_JAX_KEEP_XLA_FLAGS`` is set).
  """
  if os.environ.get(OPT_OUT, "") not in ("", "0"):
    return "off"
  try:
    version = importlib.metadata.version("jaxlib")
  except importlib.metadata.PackageNotFoundError:
    return "unaffected"
  if version not in AFFECTED_JAXLIB:
    return "unaffected"
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_cpu_experimental_ynn_fusion_type" in flags:
    return "kept"
  if _cpu_backend_started():
    warnings.warn(
        f"softmax_jax: jaxlib {version}'s CPU compiler can return wrong values for fused "
        f"reductions (jax-ml/jax#39103); JAX's CPU backend had started before softmax_jax "
        f"was imported, so set XLA_FLAGS={FLAG} before JAX starts (or import softmax_jax "
        f"first)", RuntimeWarning, stacklevel=3)
    return "late"
  os.environ["XLA_FLAGS"] = f"{flags} {FLAG}".strip()
  return "set"
