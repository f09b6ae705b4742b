"""Error bounds for comparing a computed result with its reference.

A result passes when, at every entry ``i``,

.. math::

   |got_i - ref_i| \\le rtol \\cdot \\max(M_i, S) + atol, \\qquad
   rtol = c\\,\\varepsilon + 2\\,\\varepsilon_{acc}\\sqrt{n}

* ``ε`` is the machine epsilon of the inputs' dtype and ``c`` a handful of
  roundings per element: ``c = 16`` for float64 / float32, computed in their
  own precision; ``c = 4`` for bfloat16 / float16, computed in float32 with a
  few roundings to the half dtype (the operands of a product, the output), so
  about 3 % of the scale (bfloat16) is what they resolve — their bound is the
  looser one, and a 1 % error there can pass.
* ``ε_acc`` is the epsilon of the dtype sums accumulate in (float32 for the
  half dtypes) and ``n`` the length of the longest sum behind an entry: the
  error of a sum of ``n`` rounded terms grows like ``√n·ε·Σ|terms|`` (a random
  walk of roundings; tree-shaped sums do better).
* ``S`` is the scale of the result: ``max|ref|`` over the result (one leaf of a
  pytree, or one example of the verification grid).  A bound proportional to
  it catches an error of 1 % of the derivative anywhere, whatever the number of
  classes, where an absolute tolerance would pass a derivative whose entries
  are all smaller than it.
* ``M_i`` (the *magnitude*) is ``Σ|terms|`` behind entry ``i`` — for
  ``Σ_j a_j b_j`` it is ``Σ_j |a_j| |b_j|`` — the scale rounding is
  proportional to where terms cancel (a saturated softmax, whose derivative is
  far below the size of its terms).  :func:`term_magnitude` computes it for a
  linear map traced by JAX.

``atol`` is the floor below which a dtype cannot resolve anything: ``c``
times the larger of the smallest normal number of the accumulation dtype
(smaller results flush to zero) and the smallest subnormal of the dtype (the
spacing of float16 near zero, 6e-8).  It matters only for results that
underflow, such as a saturated softmax's derivative in float16.  Finite
differences add their own error estimate on top.

:func:`tolerance` is the elementwise pair ``(rtol, atol) = (c ε, c ε)`` of a
value computed once with no sums behind it (``c = 2`` for the half dtypes:
one rounding), as the tests' ``assert_close`` uses it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend.core import Literal

_FACTOR = {"float64": 16.0, "float32": 16.0, "bfloat16": 2.0, "float16": 2.0}  # elementwise
_ROUNDINGS = {"float64": 16.0, "float32": 16.0, "bfloat16": 4.0, "float16": 4.0}  # c of the bound
_ACCUMULATES_IN = {"float64": "float64", "float32": "float32", "bfloat16": "float32",
                   "float16": "float32"}
_GROWTH = 2.0  # the factor of ε_acc·√n


def _name(dtype) -> str:
  name = jnp.dtype(dtype).name
  if name not in _FACTOR:
    raise ValueError(f"tolerance: no tolerance for dtype {name}; expected one of {list(_FACTOR)}.")
  return name


def _eps(name: str) -> float:
  return float(jnp.finfo(jnp.dtype(name)).eps)


class Tolerance(NamedTuple):
  """An elementwise tolerance: ``|got − ref| ≤ atol + rtol·|ref|``."""

  rtol: float
  atol: float


def tolerance(dtype) -> Tolerance:
  """Returns the elementwise ``(rtol, atol) = (c ε, c ε)`` of ``dtype``.

  Examples:
    >>> tolerance("float32")
    Tolerance(rtol=1.9073486328125e-06, atol=1.9073486328125e-06)
  """
  name = _name(dtype)
  tol = _FACTOR[name] * _eps(name)
  return Tolerance(tol, tol)


def fd_tolerance(compute_dtype) -> float:
  """Relative tolerance of central differences computed in ``compute_dtype``.

  With the step ``h = ε^{1/3}·max(1, |x|)`` the truncation and rounding errors
  are both of order ``ε^{2/3}`` times the scale of the third derivative; the
  factor 1000 allows third derivatives up to 1000 times the function's scale.
  """
  return 1e3 * float(jnp.finfo(compute_dtype).eps) ** (2.0 / 3.0)


class Bound(NamedTuple):
  """The bound ``rtol·max(M, S) + atol`` of one comparison and where ``rtol`` comes from."""

  rtol: float
  atol: float
  n: int
  rule: str  # how they were made, e.g. "16ε + 2ε√n, ε = 1.2e-07, n = 50000; atol = ..."


def underflow(dtype) -> float:
  """The floor of :func:`bound`: ``c·max(tiny of the accumulation dtype, smallest subnormal)``."""
  name = _name(dtype)
  tiny = float(jnp.finfo(jnp.dtype(_ACCUMULATES_IN[name])).tiny)
  return _ROUNDINGS[name] * max(tiny, float(jnp.finfo(jnp.dtype(name)).smallest_subnormal))


def bound(dtype, n: int, *, fd: bool = False, rtol: float | None = None,
          atol: float | None = None) -> Bound:
  """The default :class:`Bound` for results of ``dtype`` behind sums of ``n`` terms.

  ``fd``: the reference is a float64 central difference, so ``rtol`` is at
  least :func:`fd_tolerance`.  An explicit ``rtol`` / ``atol`` replaces the
  default one (``atol`` defaults to :func:`underflow`).
  """
  name = _name(dtype)
  n = max(int(n), 1)
  acc = _ACCUMULATES_IN[name]
  eps, eps_acc = _eps(name), _eps(acc)
  sub = "" if acc == name else "₃₂"
  value = _ROUNDINGS[name] * eps + _GROWTH * eps_acc * math.sqrt(n)
  rule = (f"{_ROUNDINGS[name]:g}ε + {_GROWTH:g}ε{sub}√n, ε = {eps:.1e}"
          + (f", ε{sub} = {eps_acc:.1e}" if sub else "") + f", n = {n}")
  if fd and fd_tolerance(jnp.float64) > value:
    value, rule = fd_tolerance(jnp.float64), "finite differences: 1000·ε₆₄^(2/3)"
  if rtol is not None:
    value, rule = float(rtol), "rtol given"
  if atol is None:
    atol = underflow(name)
    rule += f"; atol = {_ROUNDINGS[name]:g}·tiny = {atol:.1e} (underflow)"
  return Bound(value, float(atol), n, rule)


# ---------------------------------------------------------------------------
# Σ|terms| of a linear map traced by JAX
# ---------------------------------------------------------------------------

# Primitives with |op(a, b)| ≤ op(|a|, |b|) entrywise when op is linear in its linear operand:
# structure, sums, and products with a constant.
_MONOTONE = frozenset({
    "add", "add_any", "mul", "div", "dot_general", "reduce_sum", "cumsum", "broadcast_in_dim",
    "reshape", "transpose", "squeeze", "expand_dims", "slice", "dynamic_slice",
    "dynamic_update_slice", "gather", "scatter", "scatter-add", "concatenate", "pad", "rev",
    "select_n", "convert_element_type", "copy", "copy_p", "reduce_precision",
    "sharding_constraint", "split"})
_CALLS = {"jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr",
          "core_call": "call_jaxpr", "checkpoint": "jaxpr", "remat": "jaxpr",
          "custom_jvp_call": "call_jaxpr"}


def _absolute(v):
  """|v| for floating values, keeping their type (a literal stays a literal of its dtype)."""
  if isinstance(v, float):
    return abs(v)
  if isinstance(v, bool | int) or not jnp.issubdtype(jnp.result_type(v), jnp.floating):
    return v
  return np.abs(v) if isinstance(v, np.ndarray | np.generic) else jnp.abs(v)


class _Propagated(NamedTuple):
  """The outputs of a program evaluated on magnitudes, and which of them are linear."""

  values: list
  linear: list[bool]


def _interpret(jaxpr, consts, args, linear) -> _Propagated | str:
  """Evaluates ``jaxpr`` on magnitudes: constants as they are, linear values as Σ|terms|.

  Returns the :class:`_Propagated` outputs, or a string naming what it cannot propagate
  (a reason, not an exception: the caller falls back to another scale).
  """
  env, lin = {}, {}

  def read(a):
    return (a.val, False) if isinstance(a, Literal) else (env[a], lin[a])

  for var, value, flag in [*((v, c, False) for v, c in zip(jaxpr.constvars, consts, strict=True)),
                           *zip(jaxpr.invars, args, linear, strict=True)]:
    env[var], lin[var] = value, flag
  for eqn in jaxpr.eqns:
    vals, flags = [], []
    for a in eqn.invars:
      value, flag = read(a)
      vals.append(value)
      flags.append(flag)
    name = eqn.primitive.name
    if not any(flags):
      params, subfuns = eqn.primitive.get_bind_params(eqn.params), ()
      if isinstance(params, tuple):  # older JAX: (subfuns, params)
        subfuns, params = params
      outs = eqn.primitive.bind(*subfuns, *vals, **params)
      outs, out_flags = (list(outs) if eqn.primitive.multiple_results else [outs]), None
    elif name in _CALLS:
      inner = eqn.params[_CALLS[name]]
      inner_consts = getattr(inner, "consts", [])
      result = _interpret(getattr(inner, "jaxpr", inner), inner_consts, vals, flags)
      if isinstance(result, str):
        return result
      outs, out_flags = result
    elif name == "cond" and not flags[0]:  # the branch taken is data: propagate through each
      branches = []
      for branch in eqn.params["branches"]:
        result = _interpret(branch.jaxpr, branch.consts, vals[1:], flags[1:])
        if isinstance(result, str):
          return result
        branches.append(result)
      out_flags = [any(b.linear[i] for b in branches) for i in range(len(eqn.outvars))]
      which = jnp.clip(vals[0], 0, len(branches) - 1)
      outs = [branches[0].values[i] if len(branches) == 1 else
              lax.select_n(which, *(jnp.asarray(b.values[i]) for b in branches))
              for i in range(len(eqn.outvars))]
    elif name == "neg":
      outs, out_flags = [vals[0]], [True]
    elif name in _MONOTONE or name == "sub":
      if name in ("mul", "dot_general") and all(flags):
        return f"{name} of two values that depend on the tangent"
      if name == "div" and flags[1]:
        return "division by a value that depends on the tangent"
      prim = lax.add_p if name == "sub" else eqn.primitive  # |a − b| ≤ |a| + |b|
      outs = prim.bind(*map(_absolute, vals), **eqn.params)
      outs = list(outs) if prim.multiple_results else [outs]
      out_flags = [True] * len(outs)
    else:
      return f"primitive {name} on a value that depends on the tangent"
    out_flags = out_flags or [False] * len(outs)
    for var, value, flag in zip(eqn.outvars, outs, out_flags, strict=True):
      env[var], lin[var] = value, flag
  outs = [read(v) for v in jaxpr.outvars]
  return _Propagated([o for o, _ in outs], [f for _, f in outs])


class TermMagnitude(NamedTuple):
  """``Σ|terms|`` shaped like the linear map's output, or ``None`` and the reason why not."""

  magnitude: object  # a pytree of arrays, or None
  reason: str | None


def traced_term_magnitude(linear_fn, tangent) -> TermMagnitude:
  """:func:`term_magnitude` evaluated in the trace it is called from (under ``jax.jit``,
  say), so that it compiles once with the program around it instead of once per call.

  ``linear_fn`` may close over values of that trace (the residuals of a ``jax.vjp``
  taken inside it); they become constants of its program, evaluated as they are.
  """
  closed, out_shape = jax.make_jaxpr(linear_fn, return_shape=True)(tangent)
  leaves = jax.tree_util.tree_leaves(tangent)
  result = _interpret(closed.jaxpr, closed.consts, [jnp.abs(a) for a in leaves],
                      [True] * len(leaves))
  if isinstance(result, str):
    return TermMagnitude(None, result)
  return TermMagnitude(
      jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shape), result.values), None)


def term_magnitude(linear_fn, tangent) -> TermMagnitude:
  """``Σ|terms|`` of each entry of ``linear_fn(tangent)``, as JAX computes it.

  ``linear_fn`` is linear in ``tangent`` (a ``jax.linearize`` JVP, or a
  ``jax.vjp`` pullback).  Its program is evaluated with every constant and
  every input replaced by its absolute value, and every ``a − b`` by
  ``|a| + |b|``: for an entry ``Σ_j a_j t_j`` the result is
  ``Σ_j |a_j| |t_j|``, the size of the terms before they cancel, which is the
  scale rounding error is proportional to.

  Returns:
    A :class:`TermMagnitude`: ``(magnitude, None)`` with ``magnitude`` shaped like
    ``linear_fn(tangent)``, or ``(None, reason)`` when the program holds an operation
    this does not propagate (a loop, say); the caller then falls back to ``max|ref|``.
  """
  closed, out_shape = jax.make_jaxpr(linear_fn, return_shape=True)(tangent)
  leaves = jax.tree_util.tree_leaves(tangent)
  reasons = []

  def run(consts, args):
    result = _interpret(closed.jaxpr, consts, [jnp.abs(a) for a in args], [True] * len(args))
    if isinstance(result, str):
      reasons.append(result)
      return []
    return result.values

  traced = jax.jit(run).trace(closed.consts, leaves)  # tracing finds what cannot be propagated
  if reasons:
    return TermMagnitude(None, reasons[0])
  outs = traced.lower().compile()(closed.consts, leaves)
  return TermMagnitude(
      jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shape), outs), None)
