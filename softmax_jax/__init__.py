"""softmax_jax: softmax, its analytic Jacobian and cross-entropy as pure JAX functions.

The public names below are loaded on first use (PEP 562): ``import softmax_jax`` itself
imports no JAX, so the ``softmax-jax`` command answers ``--help`` and argument errors at
once and installs its signal handlers before JAX starts.  ``from softmax_jax import
softmax``, ``softmax_jax.softmax`` and ``dir(softmax_jax)`` behave as with eager imports;
the ``TYPE_CHECKING`` block spells the same imports out for readers and type checkers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from softmax_jax import _xla_workarounds

__version__ = "0.1.0"

# Before JAX starts its CPU backend: see softmax_jax/_xla_workarounds.py.
_xla_workarounds.apply()

# Each public name and the module that defines it.
_EXPORTS = {
    "log_sigmoid": "softmax_jax._softmax",
    "log_softmax": "softmax_jax._softmax",
    "logsumexp": "softmax_jax._softmax",
    "sigmoid": "softmax_jax._softmax",
    "sigmoid_derivative": "softmax_jax._softmax",
    "softmax": "softmax_jax._softmax",
    "softmax_jacobian": "softmax_jax._jacobian",
    "softmax_jvp": "softmax_jax._jacobian",
    "softmax_vjp": "softmax_jax._jacobian",
    "binary_cross_entropy": "softmax_jax.losses",
    "cross_entropy": "softmax_jax.losses",
    "cross_entropy_grad": "softmax_jax.losses",
    "cross_entropy_with_integer_labels": "softmax_jax.losses",
    "linear_cross_entropy": "softmax_jax.losses",
    "validate_labels": "softmax_jax.losses",
}
# Subpackages reachable as attributes after a bare ``import softmax_jax``.
_SUBMODULES = ("losses",)

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
  if name in _EXPORTS:
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
  elif name in _SUBMODULES:
    value = importlib.import_module(f"softmax_jax.{name}")
  else:
    raise AttributeError(f"module 'softmax_jax' has no attribute {name!r}")
  globals()[name] = value  # later lookups skip __getattr__
  return value


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))


if TYPE_CHECKING:
  from softmax_jax import losses as losses
  from softmax_jax._jacobian import softmax_jacobian as softmax_jacobian
  from softmax_jax._jacobian import softmax_jvp as softmax_jvp
  from softmax_jax._jacobian import softmax_vjp as softmax_vjp
  from softmax_jax._softmax import log_sigmoid as log_sigmoid
  from softmax_jax._softmax import log_softmax as log_softmax
  from softmax_jax._softmax import logsumexp as logsumexp
  from softmax_jax._softmax import sigmoid as sigmoid
  from softmax_jax._softmax import sigmoid_derivative as sigmoid_derivative
  from softmax_jax._softmax import softmax as softmax
  from softmax_jax.losses import binary_cross_entropy as binary_cross_entropy
  from softmax_jax.losses import cross_entropy as cross_entropy
  from softmax_jax.losses import cross_entropy_grad as cross_entropy_grad
  from softmax_jax.losses import (
      cross_entropy_with_integer_labels as cross_entropy_with_integer_labels,
  )
  from softmax_jax.losses import linear_cross_entropy as linear_cross_entropy
  from softmax_jax.losses import validate_labels as validate_labels
