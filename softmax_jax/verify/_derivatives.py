"""Verify analytic derivatives against JAX's autodiff and finite differences.

``check_jacobian``, ``check_grad``, ``check_jvp`` and ``check_vjp`` compare a
derivative you wrote (or one of this package's) with ``jax.jacfwd``,
``jax.jacrev``, ``jax.grad``, ``jax.jvp`` / ``jax.vjp`` and central finite
differences, on any pytree input with any leading batch dimensions, jitted or
not.  Each returns a :class:`CheckResult` with, per method, the largest
absolute and relative error, the worst index and pass/fail against a bound
scaled to the derivative (``softmax_jax.verify._tolerances``):

.. math::

   |got - ref| \\le rtol \\cdot \\max(M, S), \\qquad
   rtol = c\\,\\varepsilon + 2\\,\\varepsilon_{acc}\\sqrt{n}

with ``S = max|ref|`` over each leaf (block of a Jacobian, example of a
batch), ``M`` the ``Σ|terms|`` behind each entry in JAX's own program for the
derivative (the scale of rounding where terms cancel) and ``n`` the number of
entries of the input or output, the longest sum an entry can hold.  So a 1 %
error of the derivative is caught in float32 at any size, and a correct one
passes.  Each :class:`MethodError` records the bound it was held to and why.

The comparison is ``softmax_jax.verify._compare``, the finite differences
``softmax_jax.verify._finite_differences``, the pytree and batch plumbing
``softmax_jax.verify._pytrees``.

Example::

    >>> import jax.numpy as jnp
    >>> from softmax_jax import softmax, softmax_jacobian
    >>> from softmax_jax.verify import check_jacobian
    >>> result = check_jacobian(softmax, softmax_jacobian, jnp.array([0.5, -1.0, 2.0]))
    >>> result.passed
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from softmax_jax.verify import _finite_differences as fd
from softmax_jax.verify import _pytrees
from softmax_jax.verify._compare import (
  CheckResult,
  compare,
  lowest_precision,
  max_per_segment,
)
from softmax_jax.verify._tolerances import bound, term_magnitude


class Magnitude(NamedTuple):
  """``M``, the ``Σ|terms|`` behind each entry (``None`` where it could not be propagated),
  and the scale rule it makes, for the report."""

  terms: np.ndarray | None
  rule: str


def _terms_magnitude(linear_fn, tangent, *, batched: bool = False, per: str = "leaf"):
  """The :class:`Magnitude` of ``linear_fn(tangent)``, flattened (``batched``: of
  ``jax.vmap(linear_fn)``, as a pytree)."""
  m, reason = term_magnitude(jax.vmap(linear_fn) if batched else linear_fn, tangent)
  if m is None:
    return Magnitude(None, f"max|ref| per {per} (Σ|terms| not propagated: {reason})")
  rule = f"max(Σ|terms| of JAX's derivative, max|ref| per {per})"
  if batched:
    return Magnitude(m, rule)
  return Magnitude(np.asarray(ravel_pytree(m)[0], np.float64), rule)


# ---------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------

_JAC_METHODS = ("jacfwd", "jacrev", "fd")


class _Reference(NamedTuple):
  """A reference derivative, flat, and the further allowance its own error earns
  (``None`` for autodiff; twice the error estimate for finite differences)."""

  values: np.ndarray | jax.Array
  allowance: np.ndarray | None = None


def _compare_with_references(kind, got, x, methods, references, rtol, atol, index_of, *, n,
                             sizes, magnitude: Magnitude) -> CheckResult:
  """Compares ``got`` with ``references[m]()`` (a :class:`_Reference`) for each ``m``."""
  got_v = np.asarray(ravel_pytree(got)[0], np.float64)
  dtype = lowest_precision((x, got))
  errors = []
  for m in methods:
    if m not in references:
      raise ValueError(f"check_{kind}: unknown method {m!r}; use one of {tuple(references)}.")
    want, extra = references[m]()
    b = bound(dtype, n, fd=(m == "fd"), rtol=rtol, atol=atol)
    errors.append(compare(got_v, want, m, bound=b, magnitude=magnitude.terms,
                          scale=max_per_segment(want, sizes), extra_atol=extra,
                          index_of=index_of, scale_rule=magnitude.rule))
  return CheckResult(kind, jnp.dtype(dtype).name, got_v.shape, tuple(errors))


def check_jacobian(
    fn: Callable,
    jac_fn: Callable,
    x,
    *,
    methods: Sequence[str] = _JAC_METHODS,
    batch_dims: int = 0,
    rtol: float | None = None,
    atol: float | None = None,
) -> CheckResult:
  """Checks an analytic Jacobian ``jac_fn(x)`` of ``fn`` at ``x``.

  Each entry is held to ``rtol·max(M, S)``: ``S`` the largest entry of the
  reference in its block (one output leaf by one input leaf, one example),
  ``M`` the ``Σ|terms|`` behind the entry in JAX's forward-mode program, and
  ``n`` in ``rtol`` the larger of the input and output sizes of one example.

  Args:
    fn: the function, pytree to pytree.
    jac_fn: your Jacobian, laid out as ``jax.jacfwd(fn)(x)`` (for arrays:
      ``fn(x).shape + x.shape``).  With ``batch_dims=k`` it holds one Jacobian
      per example: ``batch + out_example_shape + in_example_shape``, as
      ``softmax_jacobian`` does.
    x: the point, any pytree of floating arrays.
    methods: any of ``"jacfwd"``, ``"jacrev"``, ``"fd"`` (central differences
      in float64, four evaluations of ``fn`` per input coordinate of one
      example; twice their error estimate is added to the bound).
    batch_dims: number of leading axes of every leaf of ``x`` (and of
      ``fn(x)``) that index independent examples.
    rtol, atol: replace the defaults of the bound ``rtol·max(M, S) + atol``:
      ``rtol = c ε + 2 ε_acc √n`` from the dtype (``softmax_jax.verify._tolerances``)
      and ``atol`` its underflow floor (``c`` times the smallest normal number).

  Returns:
    A :class:`CheckResult`; ``worst_index`` is ``(batch…, output…, input…)``.

  Raises:
    ValueError: if ``x`` is not floating point, or ``jac_fn(x)`` does not have
      the structure and shapes of the autodiff Jacobian (both are named).
  """
  _pytrees.require_float(x, "x")
  bad = set(methods) - set(_JAC_METHODS)
  if bad:
    raise ValueError(f"check_jacobian: unknown methods {sorted(bad)}; use {_JAC_METHODS}.")
  k = int(batch_dims)
  batch = _pytrees.batch_shape(x, k)
  single = _pytrees.per_example(fn, k) if k else fn
  reference = {m: _pytrees.vmap_leading((jax.jacfwd if m == "jacfwd" else jax.jacrev)(single), k)
               for m in ("jacfwd", "jacrev")}
  got = jac_fn(x)
  _pytrees.require_same_structure(got, jax.eval_shape(reference["jacfwd"], x), "jac_fn(x)",
                                  "jax.jacfwd(fn)(x)")
  in_one = _pytrees.example_structure(x, k)
  out_one = jax.eval_shape(single, in_one) if k else jax.eval_shape(fn, x)
  got_m = _pytrees.dense_jacobian(got, out_one, in_one)
  n_examples, m_out, n_in = got_m.shape
  out_index, in_index = _pytrees.flat_index_of(out_one), _pytrees.flat_index_of(in_one)

  def index_of(pos):
    b, rest = divmod(pos, m_out * n_in)
    i, j = divmod(rest, n_in)
    lead = tuple(int(a) for a in np.unravel_index(b, batch)) if k else ()
    return (*lead, *out_index(i), *in_index(j))

  magnitude = _jacobian_terms_magnitude(fn, x, k, n_in, n_examples)
  dtype = lowest_precision((x, got))
  errors = []
  for m in methods:
    extra = None
    if m == "fd":
      if k:
        want, extra = fd.batched_jacobian_by_differences(fn, x, k, n_in)
      else:
        want, extra = (a.reshape(1, m_out, n_in) for a in fd.jacobian_by_differences(fn, x))
      extra = 2 * extra
    else:
      want = _pytrees.dense_jacobian(reference[m](x), out_one, in_one)
    per_input_leaf = max_per_segment(want, _pytrees.leaf_sizes(in_one))
    scale = max_per_segment(np.swapaxes(per_input_leaf, 1, 2), _pytrees.leaf_sizes(out_one))
    b = bound(dtype, max(m_out, n_in), fd=(m == "fd"), rtol=rtol, atol=atol)
    errors.append(compare(got_m, want, m, bound=b, magnitude=magnitude.terms,
                          scale=np.swapaxes(scale, 1, 2), extra_atol=extra,
                          index_of=index_of, scale_rule=magnitude.rule))
  return CheckResult("jacobian", jnp.dtype(dtype).name, got_m.shape[1:] if not k else
                     (*batch, m_out, n_in), tuple(errors))


def _jacobian_terms_magnitude(fn, x, k: int, n_in: int, n_examples: int) -> Magnitude:
  """Σ|terms| of every Jacobian entry in JAX's JVP program, [batch, outputs, inputs]."""
  _, lin = jax.linearize(fn, x)
  example = _pytrees.example_structure(x, k)
  _, unravel_one = ravel_pytree(jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype),
                                                       example))
  basis = jax.vmap(unravel_one)(jnp.eye(n_in, dtype=ravel_pytree(x)[0].dtype))
  tangents = jax.tree_util.tree_map(
      lambda a, leaf: jnp.broadcast_to(a.reshape((n_in,) + (1,) * k + a.shape[1:]),
                                       (n_in, *np.shape(leaf))), basis, x)
  m = _terms_magnitude(lin, tangents, batched=True, per="block of an example")
  if m.terms is None:
    return m
  leaves = [np.asarray(leaf, np.float64).reshape(n_in, n_examples, -1)
            for leaf in jax.tree_util.tree_leaves(m.terms)]
  return Magnitude(np.transpose(np.concatenate(leaves, axis=2), (1, 2, 0)), m.rule)


def check_grad(
    loss_fn: Callable,
    grad_fn: Callable,
    x,
    *,
    methods: Sequence[str] = ("grad", "fd"),
    rtol: float | None = None,
    atol: float | None = None,
) -> CheckResult:
  """Checks ``grad_fn(x)`` against ``jax.grad(loss_fn)(x)`` and finite differences.

  ``loss_fn`` must return a scalar; ``grad_fn(x)`` must have the structure of
  ``x``.  Each entry is held to ``rtol·max(M, S)``: ``S`` the largest entry of
  the reference gradient in its leaf, ``M`` the ``Σ|terms|`` behind the entry
  in JAX's reverse-mode program, ``n`` in ``rtol`` the size of ``x``.
  ``rtol`` / ``atol`` replace the defaults ``c ε + 2 ε_acc √n`` and the
  dtype's underflow floor.
  """
  _pytrees.require_float(x, "x")
  out = jax.eval_shape(loss_fn, x)
  if jax.tree_util.tree_leaves(out)[0].shape != () or len(jax.tree_util.tree_leaves(out)) != 1:
    raise ValueError(f"check_grad: loss_fn(x) must be a scalar, got {out}.")
  got = grad_fn(x)
  _pytrees.require_same_structure(got, jax.eval_shape(jax.grad(loss_fn), x), "grad_fn(x)",
                                  "jax.grad(loss_fn)(x)")
  _, pullback = jax.vjp(loss_fn, x)
  one = jax.tree_util.tree_map(lambda s: jnp.ones(s.shape, s.dtype), out)

  def by_differences():
    jac, err = fd.jacobian_by_differences(loss_fn, x)
    return _Reference(jac[0], 2 * err[0])

  references = {"grad": lambda: _Reference(ravel_pytree(pullback(one)[0])[0]),
                "fd": by_differences}
  sizes = _pytrees.leaf_sizes(x)
  return _compare_with_references(
      "grad", got, x, methods, references, rtol, atol, _pytrees.flat_index_of(x), n=sum(sizes),
      sizes=sizes, magnitude=_terms_magnitude(lambda c: pullback(c)[0], one))


def check_jvp(fn, jvp_fn, x, tangent, *, methods=("jvp", "fd"), rtol=None, atol=None):
  """Checks ``jvp_fn(x, tangent)`` against ``jax.jvp(fn, (x,), (tangent,))`` and a
  directional central difference.

  Each entry is held to ``rtol·max(M, S)``: ``S`` the largest entry of the
  reference in its output leaf, ``M`` the ``Σ|terms|`` behind the entry in
  JAX's JVP program (``jax.linearize``), ``n`` in ``rtol`` the larger of the
  sizes of ``x`` and ``fn(x)``.
  ``rtol`` / ``atol`` replace the defaults ``c ε + 2 ε_acc √n`` and the
  dtype's underflow floor.
  """
  _pytrees.require_float(x, "x")
  _pytrees.require_float(tangent, "tangent")
  _pytrees.require_same_structure(tangent, x, "tangent", "x")
  got = jvp_fn(x, tangent)
  out = jax.eval_shape(fn, x)
  _pytrees.require_same_structure(got, out, "jvp_fn(x, tangent)", "fn(x)")
  _, lin = jax.linearize(fn, x)

  def by_differences():
    d, err = fd.directional_difference(fn, x, tangent)
    return _Reference(d, 2 * err)

  references = {"jvp": lambda: _Reference(ravel_pytree(lin(tangent))[0]), "fd": by_differences}
  sizes = _pytrees.leaf_sizes(out)
  return _compare_with_references(
      "jvp", got, x, methods, references, rtol, atol, _pytrees.flat_index_of(out),
      n=max(sum(_pytrees.leaf_sizes(x)), sum(sizes)), sizes=sizes,
      magnitude=_terms_magnitude(lin, tangent))


def check_vjp(fn, vjp_fn, x, cotangent, *, methods=("vjp", "fd"), rtol=None, atol=None):
  """Checks ``vjp_fn(x, cotangent)`` against ``jax.vjp(fn, x)[1](cotangent)`` and
  ``cotangentᵀ J`` with ``J`` from central differences.

  Each entry is held to ``rtol·max(M, S)``: ``S`` the largest entry of the
  reference in its leaf of ``x``, ``M`` the ``Σ|terms|`` behind the entry in
  JAX's pullback, ``n`` in ``rtol`` the larger of the sizes of ``x`` and
  ``fn(x)``.  The ``"fd"`` method builds the whole Jacobian (four evaluations
  of ``fn`` per input entry): keep it to small inputs.
  ``rtol`` / ``atol`` replace the defaults ``c ε + 2 ε_acc √n`` and the
  dtype's underflow floor.
  """
  _pytrees.require_float(x, "x")
  _pytrees.require_float(cotangent, "cotangent")
  out = jax.eval_shape(fn, x)
  _pytrees.require_same_structure(cotangent, out, "cotangent", "fn(x)")
  got = vjp_fn(x, cotangent)
  _pytrees.require_same_structure(got, x, "vjp_fn(x, cotangent)", "x")
  _, pullback = jax.vjp(fn, x)
  u = np.asarray(ravel_pytree(cotangent)[0], np.float64)

  def by_differences():
    jac, err = fd.jacobian_by_differences(fn, x)
    return _Reference(u @ jac, 2 * (np.abs(u) @ err))

  references = {"vjp": lambda: _Reference(ravel_pytree(pullback(cotangent)[0])[0]),
                "fd": by_differences}
  sizes = _pytrees.leaf_sizes(x)
  return _compare_with_references(
      "vjp", got, x, methods, references, rtol, atol, _pytrees.flat_index_of(x),
      n=max(sum(sizes), sum(_pytrees.leaf_sizes(out))), sizes=sizes,
      magnitude=_terms_magnitude(lambda c: pullback(c)[0], cotangent))
