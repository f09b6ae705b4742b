"""The logistic function and softmax, with the lecture's derivatives.

Lecture (``softmax_lecture.md``):

* logistic function ``σ(z) = 1 / (1 + e^{-z})``;
* softmax ``y_c = e^{z_c} / Σ_d e^{z_d}``;
* its derivative ``∂y_i/∂z_j = y_i (δ_ij − y_j)``.

Masking rule used everywhere in the package: an entry is *valid* when its
``where`` flag is true (or absent) and its logit is not ``-inf``.  Invalid
entries get probability 0 and gradient exactly 0; a row without a valid entry
gives zeros from :func:`softmax` and ``-inf`` from :func:`log_softmax` and
:func:`logsumexp`, with zero gradients in every mode.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from softmax_jax import _arguments, _kernels
from softmax_jax import _numerics as nx


def _fix_empty_rows(out, xm, axis, fill):
  """Rows without a valid entry set to ``fill`` (0 for softmax, ``-inf`` for the logs).

  The fast path is the plain ``exp(x − max) / Σ`` that XLA fuses into one
  kernel; on a row whose entries are all ``-inf`` it gives NaN.  Such rows
  show as a NaN in the row's first entry, so that one column is checked and
  the patch (which recomputes the row max) runs only in a batch that has a
  NaN there; a NaN coming from a NaN logit is left as it is.
  """
  axes = (axis,) if isinstance(axis, int) else axis
  first = out
  for a in sorted(axes, reverse=True):
    if first.shape[a] != 1:
      first = lax.index_in_dim(first, 0, a, keepdims=True)
  row_shape = tuple(1 if i in {a % out.ndim for a in axes} else d for i, d in enumerate(out.shape))
  has_nan = jnp.any(jnp.isnan(first))
  fill = jnp.asarray(fill, out.dtype)

  def empty_rows():
    return jnp.max(xm, axis=axis, keepdims=True) == -jnp.inf

  if jnp.dtype(out.dtype).itemsize < 4:
    # Half precision (computed in float32, then converted): patching the whole
    # output inside the branch keeps XLA's CPU kernel fused (measured).
    return lax.cond(has_nan, lambda o: jnp.where(empty_rows(), fill, o), lambda o: o, out)
  # float32/64: only the per-row flag comes out of the branch and the select
  # fuses into the kernel that wrote the output, so no copy of it is made.
  empty = lax.cond(has_nan, empty_rows, lambda: jnp.zeros(row_shape, bool))
  return jnp.where(empty, fill, out)


class _Shifted(NamedTuple):
  """The masked logits and ``x − max x`` (the max a differentiation constant)."""

  masked: jax.Array  # x with the left-out entries at −inf, in the input dtype
  shifted: jax.Array  # x − max x, in the compute dtype (the max is exact in the input dtype)
  max: jax.Array  # the row max, in the compute dtype


def _shifted(x, axis, where) -> _Shifted:
  xm = nx.masked(x, where)
  m = lax.stop_gradient(jnp.max(xm, axis=axis, keepdims=True))
  return _Shifted(xm, nx.upcast(xm) - nx.upcast(m), nx.upcast(m))


def _row_dot(a, b, axis):
  """``⟨a, b⟩`` over the class axis (or axes), kept as size-1 axes."""
  return jnp.sum(a * b, axis=axis, keepdims=True)


# ---------------------------------------------------------------------------
# softmax
# ---------------------------------------------------------------------------


@partial(jax.custom_jvp, nondiff_argnums=(1,))
def _softmax(x, axis, where):
  # Computed in float32 for half-precision inputs; one fused kernel either way.
  s = _shifted(x, axis, where)
  e = jnp.exp(s.shifted)
  y = (e / jnp.sum(e, axis=axis, keepdims=True)).astype(x.dtype)
  return _fix_empty_rows(y, s.masked, axis, 0)


@_softmax.defjvp
def _softmax_jvp(axis, primals, tangents):
  # ∂y_i/∂z_j = y_i(δ_ij − y_j) (lecture, "Derivative of the softmax function"), so
  # J·ż = y ⊙ (ż − ⟨y, ż⟩).
  x, where = primals
  x_dot = nx.upcast(tangents[0])
  y = _softmax(x, axis, where)
  yc = y if y.dtype == x_dot.dtype else _softmax(nx.upcast(x), axis, where)
  return y, (yc * (x_dot - _row_dot(yc, x_dot, axis))).astype(x.dtype)


def _divide_by_temperature(x, temperature):
  return x if temperature is None else x / jnp.asarray(temperature, x.dtype)


def _temperature_arg(temperature, fn):
  """Checks the temperature; a Python 1 becomes ``None`` (no division traced)."""
  _arguments.temperature(temperature, fn)
  if isinstance(temperature, (int, float)) and temperature == 1:
    return None
  return temperature


@partial(jax.jit, static_argnums=(1,))
def _tempered_softmax(x, axis, where, temperature):
  """``softmax(x / T)`` (no division for ``T = None``), jitted."""
  if temperature is None:
    return _softmax(x, axis, where)
  return _softmax(_divide_by_temperature(nx.upcast(x), temperature), axis,
                  where).astype(x.dtype)


def softmax(
    x: ArrayLike,
    axis: int | tuple[int, ...] = -1,
    *,
    where: ArrayLike | None = None,
    temperature: ArrayLike = 1.0,
    impl: str = "auto",
) -> jax.Array:
  r"""Softmax function: probabilities from logits.

  .. math::
    y_c = \frac{e^{z_c / T}}{\sum_{d} e^{z_d / T}}

  computed as ``exp(z − max z)`` normalised, in float32 for half-precision
  inputs.  Its JVP is the lecture's analytic formula
  :math:`\dot y = y \odot (\dot z - \langle y, \dot z\rangle)`.

  Args:
    x: logits, shape ``[..., classes, ...]``, any real floating dtype.
    axis: the class axis (or a tuple of axes).
    where: optional boolean mask broadcastable to ``x``; ``False`` entries are
      left out (probability 0, gradient 0).
    temperature: ``T > 0``; the logits are divided by it.  May be a traced
      value (a learned temperature); a concrete one is checked.
    impl: ``"auto"`` (the fused Pallas kernel on GPU for the last axis without
      ``where`` or ``temperature``, XLA otherwise), ``"xla"`` or ``"pallas"``.

  Returns:
    Probabilities with the shape and dtype of ``x``.

  Masked entries and ``-inf`` logits get probability 0; a row with no valid
  entry gives all zeros (not NaN).  ``+inf`` or NaN logits give NaN.

  Examples:
    >>> import jax.numpy as jnp
    >>> from softmax_jax import softmax
    >>> softmax(jnp.array([1.0, 2.0, -jnp.inf], jnp.float32))
    Array([0.26894143, 0.7310586 , 0.        ], dtype=float32)
  """
  fn = "softmax"
  x = _arguments.float_array(x, "x", fn)
  ax = _arguments.axes(axis, x.ndim, fn)
  _arguments.classes(int(np.prod([x.shape[a] for a in ax])), "x", fn)
  where = _arguments.where_mask(where, x.shape, fn)
  temperature = _temperature_arg(temperature, fn)
  return _kernels.choose(impl, x, ax, fn, kernel=lambda: _kernels.softmax(x, False),
                        xla=lambda: _tempered_softmax(x, ax, where, temperature),
                        where=where is not None, temperature=temperature is not None)


# ---------------------------------------------------------------------------
# log_softmax
# ---------------------------------------------------------------------------


@partial(jax.custom_jvp, nondiff_argnums=(1,))
def _log_softmax(x, axis, where):
  s = _shifted(x, axis, where)
  out = s.shifted - jnp.log(jnp.sum(jnp.exp(s.shifted), axis=axis, keepdims=True))
  return _fix_empty_rows(out.astype(x.dtype), s.masked, axis, -jnp.inf)


@_log_softmax.defjvp
def _log_softmax_jvp(axis, primals, tangents):
  # log y_i = z_i − log Σ_d e^{z_d}: ∂ log y_i/∂z_j = (1/y_i) ∂y_i/∂z_j = δ_ij − y_j (lecture,
  # "Derivative of the softmax function", with ∂ log y/∂y = 1/y).  Invalid entries are
  # the constant −inf, so their tangent is 0.
  x, where = primals
  x_dot = nx.upcast(tangents[0])
  out = _log_softmax(x, axis, where)
  y = jnp.exp(out if out.dtype == x_dot.dtype else _log_softmax(nx.upcast(x), axis, where))
  t = x_dot - _row_dot(y, x_dot, axis)
  return out, jnp.where(out != -jnp.inf, t, jnp.zeros_like(t)).astype(x.dtype)


@partial(jax.jit, static_argnums=(1,))
def _tempered_log_softmax(x, axis, where, temperature):
  """``log_softmax(x / T)`` (no division for ``T = None``), jitted."""
  if temperature is None:
    return _log_softmax(x, axis, where)
  return _log_softmax(_divide_by_temperature(nx.upcast(x), temperature), axis,
                      where).astype(x.dtype)


def log_softmax(
    x: ArrayLike,
    axis: int | tuple[int, ...] = -1,
    *,
    where: ArrayLike | None = None,
    temperature: ArrayLike = 1.0,
    impl: str = "auto",
) -> jax.Array:
  r"""Log-softmax function, computed without forming ``log(softmax(x))``.

  .. math::
    \log y_c = z_c / T - \log \sum_d e^{z_d / T}

  Args:
    x: logits, shape ``[..., classes, ...]``.
    axis: the class axis (or a tuple of axes).
    where: optional boolean mask broadcastable to ``x``.
    temperature: ``T > 0``.
    impl: ``"auto"``, ``"xla"`` or ``"pallas"``, as in :func:`softmax`.

  Returns:
    Log-probabilities with the shape and dtype of ``x``.

  Masked entries and ``-inf`` logits give ``-inf`` with gradient 0; a row with
  no valid entry is all ``-inf`` with zero gradient.

  Examples:
    >>> import jax.numpy as jnp
    >>> from softmax_jax import log_softmax
    >>> log_softmax(jnp.array([0.0, 0.0], jnp.float32))
    Array([-0.6931472, -0.6931472], dtype=float32)
  """
  fn = "log_softmax"
  x = _arguments.float_array(x, "x", fn)
  ax = _arguments.axes(axis, x.ndim, fn)
  _arguments.classes(int(np.prod([x.shape[a] for a in ax])), "x", fn)
  where = _arguments.where_mask(where, x.shape, fn)
  temperature = _temperature_arg(temperature, fn)
  return _kernels.choose(impl, x, ax, fn, kernel=lambda: _kernels.softmax(x, True),
                        xla=lambda: _tempered_log_softmax(x, ax, where, temperature),
                        where=where is not None, temperature=temperature is not None)


# ---------------------------------------------------------------------------
# logsumexp
# ---------------------------------------------------------------------------


@partial(jax.custom_jvp, nondiff_argnums=(1,))
def _logsumexp(x, axis, where):
  s = _shifted(x, axis, where)
  out = jnp.log(jnp.sum(jnp.exp(s.shifted), axis=axis, keepdims=True)) + s.max
  out = jnp.where(s.max == jnp.inf, jnp.inf, out)  # log(e^inf + ...) = inf, as NumPy, torch
  return _fix_empty_rows(out.astype(x.dtype), s.masked, axis, -jnp.inf)


@_logsumexp.defjvp
def _logsumexp_jvp(axis, primals, tangents):
  # ∂/∂z_j log Σ_d e^{z_d} = e^{z_j} / Σ_d e^{z_d} = y_j (lecture, "Softmax function");
  # 0 on a row without a valid entry.
  x, where = primals
  x_dot = nx.upcast(tangents[0])
  y = _softmax(nx.upcast(x), axis, where)
  return _logsumexp(x, axis, where), _row_dot(y, x_dot, axis).astype(x.dtype)


@partial(jax.jit, static_argnums=(1, 3))
def _reduced_logsumexp(x, axis, where, keepdims):
  """:func:`_logsumexp` with the reduced axes kept or squeezed, jitted."""
  out = _logsumexp(x, axis, where)
  return out if keepdims else jnp.squeeze(out, axis)


def logsumexp(
    x: ArrayLike,
    axis: int | tuple[int, ...] = -1,
    *,
    where: ArrayLike | None = None,
    keepdims: bool = False,
) -> jax.Array:
  r"""Log of the softmax denominator, :math:`\log \sum_d e^{z_d}`, computed stably.

  Args:
    x: logits, shape ``[..., classes, ...]``.
    axis: the axis (or axes) to reduce.
    where: optional boolean mask broadcastable to ``x``.
    keepdims: keep the reduced axes with size 1.

  Returns:
    The reduced array, dtype of ``x``.  A row with no valid entry gives
    ``-inf`` with gradient 0 (not NaN); its gradient elsewhere is ``softmax(x)``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from softmax_jax import logsumexp
    >>> logsumexp(jnp.array([1e30, 1e30], jnp.float32))
    Array(1.e+30, dtype=float32)
  """
  fn = "logsumexp"
  x = _arguments.float_array(x, "x", fn)
  ax = _arguments.axes(axis, x.ndim, fn)
  _arguments.classes(int(np.prod([x.shape[a] for a in ax])), "x", fn)
  where = _arguments.where_mask(where, x.shape, fn)
  return _reduced_logsumexp(x, ax, where, bool(keepdims))


# ---------------------------------------------------------------------------
# The logistic function (2-class softmax)
# ---------------------------------------------------------------------------


@jax.jit
def _sigmoid_in_compute_dtype(x):
  # σ(z) = 1 / (1 + e^{−z}) (lecture, "Logistic function"), in float32 for half precision.
  return lax.logistic(x.astype(_arguments.compute_dtype(x.dtype))).astype(x.dtype)


def sigmoid(x: ArrayLike) -> jax.Array:
  r"""The lecture's logistic function :math:`\sigma(z) = 1 / (1 + e^{-z})`.

  It is the 2-class softmax: ``softmax([a, b])[0] == sigmoid(a − b)``.

  Args:
    x: any real floating array.

  Returns:
    :math:`\sigma(x)`, same shape and dtype; saturates to exactly 0 or 1
    without overflow.

  Examples:
    >>> import jax.numpy as jnp
    >>> from softmax_jax import sigmoid
    >>> sigmoid(jnp.array([0.0, 1e30, -1e30], jnp.float32))
    Array([0.5, 1. , 0. ], dtype=float32)
  """
  return _sigmoid_in_compute_dtype(_arguments.float_array(x, "x", "sigmoid"))


@jax.jit
def _log_sigmoid_via_softplus(x):
  # log σ(z) = −softplus(−z), finite for every finite z.
  return (-jax.nn.softplus(-x.astype(_arguments.compute_dtype(x.dtype)))).astype(x.dtype)


def log_sigmoid(x: ArrayLike) -> jax.Array:
  r"""Log of the logistic function, :math:`\log\sigma(z) = -\log(1 + e^{-z})`.

  Args:
    x: any real floating array.

  Returns:
    Same shape and dtype; ``≈ z`` for very negative ``z`` (no ``-inf``).

  Examples:
    >>> import jax.numpy as jnp
    >>> from softmax_jax import log_sigmoid
    >>> log_sigmoid(jnp.array([-100.0], jnp.float32))
    Array([-100.], dtype=float32)
  """
  return _log_sigmoid_via_softplus(_arguments.float_array(x, "x", "log_sigmoid"))


@jax.jit
def _sigmoid_derivative_in_tails(x):
  xc = x.astype(_arguments.compute_dtype(x.dtype))
  # σ'(z) = σ(z)(1 − σ(z)) (lecture, "Derivative of the softmax function", the i = j case)
  # = σ(z)σ(−z): the second form keeps the tails accurate.
  return (lax.logistic(xc) * lax.logistic(-xc)).astype(x.dtype)


def sigmoid_derivative(x: ArrayLike) -> jax.Array:
  r"""Derivative of the logistic function, :math:`\sigma'(z) = \sigma(z)(1 - \sigma(z))`.

  Computed as :math:`\sigma(z)\sigma(-z)`, which equals the lecture's form and
  stays accurate in both tails (``σ'(40) ≈ 4.2e-18`` rather than 0).

  Args:
    x: any real floating array.

  Returns:
    Same shape and dtype as ``x``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from softmax_jax import sigmoid_derivative
    >>> sigmoid_derivative(jnp.array([0.0], jnp.float32))
    Array([0.25], dtype=float32)
  """
  return _sigmoid_derivative_in_tails(_arguments.float_array(x, "x", "sigmoid_derivative"))
