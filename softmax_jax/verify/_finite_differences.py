"""Central finite differences in float64, with an estimate of their own error.

The reference a derivative is compared with when autodiff itself is in doubt:
``(f(x + h v) − f(x − h v)) / 2h`` with ``h = ε₆₄^{1/3}·max(1, max|x|) / max|v|``,
computed in float64 whatever the global ``jax_enable_x64`` setting (inside
:func:`float64_enabled`).  Each result comes with the estimate of its error that the
checks add to their bound.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from softmax_jax.verify import _pytrees


class Difference(NamedTuple):
  """A finite-difference derivative and the estimate of its error, entry by entry."""

  value: jax.Array | np.ndarray
  error: jax.Array | np.ndarray


def float64_enabled():
  """A context in which float64 exists, whatever the global setting (``jax.enable_x64``)."""
  if jax.config.jax_enable_x64:
    return contextlib.nullcontext()
  return jax.enable_x64(True)


def central_difference(fn, x, v, *, batched: bool = False, richardson: bool = True,
                       xmax=None, vmax=None) -> Difference:
  """``(f(x + h v) − f(x − h v)) / 2h`` in float64 and its error estimate, as JAX arrays,
  flat over the leaves of ``fn(x)``.

  Entries where ``f`` is not finite are set to 0.  The error estimate is
  ``|D(h) − D(2h)| / 3``, the Richardson estimate of the truncation error (a
  central difference errs by ``≈ c h²``), plus
  ``ε (|f(x + hv)| + |f(x − hv)| + 2 max|x|) / 2h``, the rounding of ``f``
  divided by the step (``max|x|`` for functions such as a loss ``lse(z) − z_t``,
  whose rounding is that of their terms, not of their value).  Traceable, so
  it can run under ``jax.jit`` (the verification grid does); ``batched``
  evaluates the four points ``x ± hv, x ± 2hv`` as one ``jax.vmap`` of ``fn``
  (one copy of ``fn`` in the program instead of four).  ``richardson=False`` evaluates
  only ``x ± hv`` (half the cost) and estimates the rounding alone: the caller then
  allows for truncation itself (the fast checks add ``1000·ε₆₄^(2/3)·|D|``, the rule of
  :func:`softmax_jax.verify._tolerances.fd_tolerance`).  ``xmax``: ``max|x|`` over the
  finite entries, and ``vmax``, ``max|v|`` or a bound of it, when the caller has them
  already (one pass over ``x`` or ``v`` fewer per call).

  Examples:
    >>> import jax.numpy as jnp
    >>> d = central_difference(lambda z: z ** 3, jnp.array([2.0]), jnp.array([1.0]))
    >>> round(float(d.value[0]), 6), float(d.error[0]) < 1e-6
    (12.0, True)
  """
  with float64_enabled():
    # the points x ± s·v leaf by leaf (no flat copy of x: a large x is perturbed in place)
    x64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), x)
    v64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), v)
    tiny = jnp.finfo(jnp.float64).tiny
    xmax = largest(x64, finite_only=True) if xmax is None else xmax
    vmax = jnp.maximum(largest(v64) if vmax is None else vmax, tiny)
    h = float(jnp.finfo(jnp.float64).eps) ** (1 / 3) * jnp.maximum(1.0, xmax) / vmax

    def f(s):
      point = jax.tree_util.tree_map(lambda a, b: a + s * b, x64, v64)
      out, _ = ravel_pytree(fn(point))
      return out.astype(jnp.float64)

    steps = (h, -h, 2 * h, -2 * h) if richardson else (h, -h)
    if batched:
      values = list(jax.vmap(f)(jnp.stack(steps)))
    else:
      values = [f(s) for s in steps]

    def central(hi, lo, step):
      ok = jnp.isfinite(hi) & jnp.isfinite(lo)
      rounding = jnp.finfo(jnp.float64).eps * (jnp.abs(hi) + jnp.abs(lo) + 2 * xmax) / (2 * step)
      return Difference(jnp.where(ok, (hi - lo) / (2 * step), 0.0), jnp.where(ok, rounding, 0.0))

    d1, rounding = central(values[0], values[1], h)
    if not richardson:
      return Difference(d1, rounding)
    d2, _ = central(values[2], values[3], 2 * h)
    return Difference(d1, jnp.abs(d1 - d2) / 3 + rounding)


def largest(tree, *, finite_only: bool = False):
  """``max|a|`` over every entry of every leaf (0 for none; non-finite entries skipped with
  ``finite_only``)."""
  def of_leaf(a):
    a = jnp.abs(a)
    return jnp.max(jnp.where(jnp.isfinite(a), a, 0.0) if finite_only else a, initial=0.0)
  return jnp.max(jnp.stack([of_leaf(a) for a in jax.tree_util.tree_leaves(tree)] or
                           [jnp.float64(0.0)]))


def directional_difference(fn, x, v) -> Difference:
  """:func:`central_difference` as NumPy arrays."""
  d, err = central_difference(fn, x, v)
  return Difference(np.asarray(d), np.asarray(err))


def jacobian_by_differences(fn, x) -> Difference:
  """The dense [outputs, inputs] Jacobian by central differences, one input at a time, and the
  error estimate of each entry."""
  xf, unravel = ravel_pytree(x)
  cols = [directional_difference(fn, x, unravel(jnp.asarray(b, xf.dtype)))
          for b in np.eye(xf.size, dtype=np.float64)]
  return Difference(np.stack([c.value for c in cols], 1), np.stack([c.error for c in cols], 1))


def batched_jacobian_by_differences(fn, x, k: int, n_in: int) -> Difference:
  """[batch, outputs, inputs] by central differences, one coordinate of every example at once
  (``k`` leading batch axes, ``n_in`` inputs per example), and the error estimate of each
  entry."""
  example = _pytrees.example_structure(x, k)
  _, unravel_one = ravel_pytree(jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype),
                                                       example))
  n_examples = int(np.prod(_pytrees.batch_shape(x, k)))
  out = jax.eval_shape(fn, x)
  cols, errs = [], []
  for b in np.eye(n_in, dtype=np.float64):
    one = unravel_one(jnp.asarray(b))
    v = jax.tree_util.tree_map(lambda a, leaf: jnp.broadcast_to(a, np.shape(leaf)), one, x)
    col, err = directional_difference(fn, x, v)  # flat over the output leaves
    cols.append(_pytrees.rows_per_example(col, out, n_examples))
    errs.append(_pytrees.rows_per_example(err, out, n_examples))
  return Difference(np.stack(cols, axis=2), np.stack(errs, axis=2))
