"""The analytic Jacobian of softmax and its matrix-free products.

Lecture: ``∂y_i/∂z_j = y_i(1 − y_i)`` if ``i = j`` and ``−y_i y_j`` otherwise,
that is ``J = diag(y) − y yᵀ``.  ``J`` is symmetric, so ``Jᵀv = Jv`` and the
JVP and VJP share one formula, ``y ⊙ (v − ⟨y, v⟩)``.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from softmax_jax import _arguments
from softmax_jax import _numerics as nx
from softmax_jax._softmax import _softmax, _temperature_arg


def _jacobian_from_probs(y: jax.Array) -> jax.Array:
  """``diag(y) − y yᵀ`` over the last axis of ``y``: shape ``y.shape + (C,)``.

  Lecture ("Derivative of the softmax function"): ``∂y_i/∂z_i = y_i(1 − y_i)`` and
  ``∂y_i/∂z_j = −y_i y_j`` for ``i ≠ j``."""
  c = y.shape[-1]
  yi = y[..., :, None]
  yj = y[..., None, :]
  diag = lax.broadcasted_iota(jnp.int32, (c, c), 0) == lax.broadcasted_iota(jnp.int32, (c, c), 1)
  # One elementwise expression, so XLA writes J in a single pass.
  return jnp.where(diag, yi - yi * yj, -(yi * yj))


@partial(jax.jit, static_argnums=(1,))
def _dense_jacobian(x, axis, temperature):
  """:func:`_jacobian_from_probs` of ``softmax(x / T)`` along ``axis``, jitted."""
  xc = x.astype(_arguments.compute_dtype(x.dtype))
  if temperature is not None:
    xc = xc / jnp.asarray(temperature, xc.dtype)
  y = nx.probabilities(jnp.moveaxis(xc, axis, -1))
  jac = _jacobian_from_probs(y)
  if temperature is not None:
    jac = jac / jnp.asarray(temperature, jac.dtype)  # chain rule through z / T
  # Put the output index i back where the class axis was; j stays last.
  return jnp.moveaxis(jac, -2, axis).astype(x.dtype)


def softmax_jacobian(
    x: ArrayLike, axis: int = -1, *, temperature: ArrayLike = 1.0
) -> jax.Array:
  r"""Dense analytic Jacobian of :func:`softmax`, built directly from ``y``.

  .. math::
    J_{ij} = \frac{\partial y_i}{\partial z_j} = \frac{1}{T}\, y_i(\delta_{ij} - y_j),
    \qquad J = \tfrac{1}{T}(\operatorname{diag}(y) - y y^\top)

  No autodiff is involved.  For products with a vector prefer the matrix-free
  :func:`softmax_jvp` / :func:`softmax_vjp` (O(C) memory instead of O(C²)).

  Args:
    x: logits, shape ``[..., C, ...]`` with the class axis at ``axis``.
    axis: the class axis.
    temperature: ``T > 0``.

  Returns:
    Shape ``x.shape + (C,)``: ``J[..., i, ..., j]`` with ``i`` at ``axis`` and
    ``j`` last; for ``axis=-1`` this is ``[..., C, C]``.  Dtype of ``x``.
    Rows and columns of ``-inf`` logits are zero.

  Examples:
    >>> import jax.numpy as jnp
    >>> from softmax_jax import softmax_jacobian
    >>> softmax_jacobian(jnp.array([0.0, 0.0], jnp.float32))
    Array([[ 0.25, -0.25],
           [-0.25,  0.25]], dtype=float32)
  """
  fn = "softmax_jacobian"
  x = _arguments.float_array(x, "x", fn)
  (ax,) = _arguments.axes(axis, x.ndim, fn, allow_tuple=False)
  return _dense_jacobian(x, ax, _temperature_arg(temperature, fn))


@partial(jax.jit, static_argnums=(2,))
def _jacobian_product(x, v, axis):
  """``J v`` (``= Jᵀ v``) without forming ``J``, jitted."""
  dtype = _arguments.compute_dtype(jnp.result_type(x.dtype, v.dtype))
  y = _softmax(x.astype(dtype), axis, None)
  v = v.astype(dtype)
  # J = diag(y) − y yᵀ (lecture, "Derivative of the softmax function"), so
  # J v = y ⊙ (v − ⟨y, v⟩): O(C) extra memory, J never formed.
  out = y * (v - jnp.sum(y * v, axis=axis, keepdims=True))
  return out.astype(x.dtype)


def _checked_product(fn, x, v, v_name, axis):
  x = _arguments.float_array(x, "x", fn)
  v = _arguments.float_array(v, v_name, fn)
  _arguments.same_shape(v, v_name, x, "x", fn)
  (ax,) = _arguments.axes(axis, x.ndim, fn, allow_tuple=False)
  return _jacobian_product(x, v, ax)


def softmax_jvp(x: ArrayLike, tangent: ArrayLike, axis: int = -1) -> jax.Array:
  r"""Jacobian-vector product of softmax, :math:`J v = y \odot (v - \langle y, v\rangle)`.

  Args:
    x: logits, shape ``[..., C, ...]``.
    tangent: ``v``, same shape as ``x``.
    axis: the class axis.

  Returns:
    ``J v`` with the shape and dtype of ``x``, in O(C) memory per row.

  Examples:
    >>> import jax.numpy as jnp
    >>> from softmax_jax import softmax_jvp
    >>> softmax_jvp(jnp.array([0.0, 0.0], jnp.float32), jnp.array([1.0, 0.0]))
    Array([ 0.25, -0.25], dtype=float32)
  """
  return _checked_product("softmax_jvp", x, tangent, "tangent", axis)


def softmax_vjp(x: ArrayLike, cotangent: ArrayLike, axis: int = -1) -> jax.Array:
  r"""Vector-Jacobian product of softmax, :math:`J^\top u = y \odot (u - \langle y, u\rangle)`.

  Equal to :func:`softmax_jvp` because :math:`J` is symmetric.

  Args:
    x: logits, shape ``[..., C, ...]``.
    cotangent: ``u``, same shape as ``x``.
    axis: the class axis.

  Returns:
    ``Jᵀ u`` with the shape and dtype of ``x``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from softmax_jax import softmax_vjp
    >>> softmax_vjp(jnp.array([0.0, 0.0], jnp.float32), jnp.array([0.0, 1.0]))
    Array([-0.25,  0.25], dtype=float32)
  """
  return _checked_product("softmax_vjp", x, cotangent, "cotangent", axis)
