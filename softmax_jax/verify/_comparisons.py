"""What the verification grid compares, function by function.

Each function of :data:`CHECKS` is a generator of :class:`Comparison` for one
:class:`~softmax_jax.verify._cases.Case`: a derivative path (or value) of one
implementation (``softmax_jax``, or ``jax.nn`` / optax on the same inputs, reported
beside ours), its float64 NumPy reference (``softmax_jax.verify._references``) and the
``Σ|terms|`` behind each entry (``softmax_jax.verify._magnitudes``).  What a generator
yields depends only on the dtype, the class count and whether there is a ``where``
mask, never on the data, so one compiled program per function serves every logit
scale and the programs and references line up.

The library functions are looked up in this module when a comparison runs (a test
can patch ``_comparisons.softmax_jacobian``, say, to plant a bug).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from softmax_jax._jacobian import softmax_jacobian, softmax_jvp, softmax_vjp
from softmax_jax._softmax import log_softmax, logsumexp, sigmoid, sigmoid_derivative, softmax
from softmax_jax.losses import (
  binary_cross_entropy,
  cross_entropy,
  cross_entropy_grad,
  cross_entropy_with_integer_labels,
)
from softmax_jax.verify import _magnitudes as terms
from softmax_jax.verify import _references as ref
from softmax_jax.verify._cases import DENSE_MAX, Case
from softmax_jax.verify._finite_differences import Difference, central_difference


class Comparison(NamedTuple):
  """One row of a check, lazily: ``got`` runs traced under ``jax.jit`` (an ``"fd"`` row's
  returns a :class:`~softmax_jax.verify._finite_differences.Difference`), ``want`` and
  ``magnitude`` run in NumPy."""

  function: str
  variant: str
  method: str
  impl: str
  got: Callable[[], Any]
  want: Callable[[], np.ndarray]
  magnitude: Callable[[], np.ndarray] | None = None  # Σ|terms| behind each entry
  n: int | None = None  # the longest sum behind an entry; default the class count
  finite_only: bool = False  # an elementwise function: no row for -inf or masked logits


Check = Callable[[Case], Iterator[Comparison]]


def _summed(f):
  """``f`` summed over every entry (a per-row loss as one scalar)."""
  return lambda x: jnp.sum(f(x))


def _diagonal_blocks(jac):
  """Rows are independent: the diagonal blocks of a [rows, C, rows, C] Jacobian."""
  return jnp.einsum("bibj->bij", jac)


def softmax_comparisons(case: Case):
  c, w = case, case.where
  fx = lambda x: softmax(x, where=w)  # noqa: E731
  y = functools.cache(lambda: ref.softmax(c.x, -1, c.mask))
  jac = functools.cache(lambda: ref.softmax_jacobian(c.x, c.mask))
  jac_mag = functools.cache(lambda: terms.softmax_jacobian(c.x, c.mask))
  jv = functools.cache(lambda: ref.softmax_jvp(c.x, c.v, c.mask))
  mag = functools.cache(lambda: terms.softmax_product(c.x, c.v, c.mask))
  small = c.classes <= DENSE_MAX
  yield Comparison("softmax", "", "value", "softmax_jax", lambda: fx(c.x), y)
  if small and w is None:
    yield Comparison("softmax_jacobian", "", "analytic", "softmax_jax",
                     lambda: softmax_jacobian(c.x), jac, jac_mag)
  if w is None:
    yield Comparison("softmax_jvp", "", "analytic", "softmax_jax",
                     lambda: softmax_jvp(c.x, c.v), jv, mag)
    yield Comparison("softmax_vjp", "", "analytic", "softmax_jax",
                     lambda: softmax_vjp(c.x, c.v), jv, mag)
  for impl, f in (("softmax_jax", fx), ("jax.nn", lambda x: jax.nn.softmax(x, where=w))):
    if small:
      yield Comparison("softmax", "", "jacfwd", impl,
                       lambda f=f: _diagonal_blocks(jax.jacfwd(f)(c.x)), jac, jac_mag)
      yield Comparison("softmax", "", "jacrev", impl,
                       lambda f=f: _diagonal_blocks(jax.jacrev(f)(c.x)), jac, jac_mag)
    else:
      yield Comparison("softmax", "", "jacfwd", impl,
                       lambda f=f: jax.jvp(f, (c.x,), (c.v,))[1], jv, mag)
      yield Comparison("softmax", "", "jacrev", impl,  # J is symmetric: the caller's J v
                       lambda f=f: jax.vjp(f, c.x)[1](c.v)[0], jv, mag)
  if c.dtype == "float64":
    yield Comparison("softmax", "", "fd", "softmax_jax", lambda: _difference_along(fx, c.x, c.v),
                     jv, mag)
  if w is None:
    ft = lambda x: softmax(x, temperature=2.0)  # noqa: E731
    yield Comparison("softmax", "T=2", "value", "softmax_jax", lambda: ft(c.x),
                     lambda: ref.softmax(ref.f64(c.x) / 2))
    yield Comparison("softmax", "T=2", "jacrev", "softmax_jax",
                     lambda: jax.vjp(ft, c.x)[1](c.v)[0],
                     lambda: ref.softmax_jvp(ref.f64(c.x) / 2, c.v) / 2,
                     lambda: terms.softmax_product(ref.f64(c.x) / 2, c.v) / 2)


def log_softmax_comparisons(case: Case):
  c, w = case, case.where
  want_jvp = lambda: ref.log_softmax_jvp(c.x, c.v, c.mask)  # noqa: E731
  jvp_mag = lambda: terms.log_softmax_jvp(c.x, c.v, c.mask)  # noqa: E731
  for impl, f in (("softmax_jax", lambda x: log_softmax(x, where=w)),
                  ("jax.nn", lambda x: jax.nn.log_softmax(x, where=w))):
    yield Comparison("log_softmax", "", "value", impl, lambda f=f: f(c.x),
                     lambda: ref.log_softmax(c.x, -1, c.mask))
    yield Comparison("log_softmax", "", "jacfwd", impl,
                     lambda f=f: jax.jvp(f, (c.x,), (c.v,))[1], want_jvp, jvp_mag)
    yield Comparison("log_softmax", "", "jacrev", impl, lambda f=f: jax.vjp(f, c.x)[1](c.v)[0],
                     lambda: ref.log_softmax_vjp(c.x, c.v, c.mask),
                     lambda: terms.log_softmax_vjp(c.x, c.v, c.mask))
  if c.dtype == "float64":
    yield Comparison("log_softmax", "", "fd", "softmax_jax",
                     lambda: _difference_along(lambda x: log_softmax(x, where=w), c.x, c.v),
                     want_jvp, jvp_mag)


def logsumexp_comparisons(case: Case):
  c, w = case, case.where
  y = lambda: ref.softmax(c.x, -1, c.mask)  # noqa: E731
  for impl, f in (("softmax_jax", lambda x: logsumexp(x, where=w)),
                  ("jax.nn", lambda x: jax.nn.logsumexp(x, axis=-1, where=w))):
    yield Comparison("logsumexp", "", "value", impl, lambda f=f: f(c.x),
                     lambda: ref.logsumexp(c.x, -1, c.mask))
    yield Comparison("logsumexp", "", "grad", impl, lambda f=f: jax.grad(_summed(f))(c.x), y,
                     lambda: terms.probabilities(c.x, c.mask).rounding)
  if c.dtype == "float64":
    f = lambda x: logsumexp(x, where=w)  # noqa: E731
    yield Comparison("logsumexp", "", "fd", "softmax_jax", lambda: _difference_along(f, c.x, c.v),
                     lambda: np.sum(y() * ref.f64(c.v), -1),
                     lambda: np.sum(terms.probabilities(c.x, c.mask).rounding
                                    * np.abs(ref.f64(c.v)), -1))


def sigmoid_comparisons(case: Case):
  c = case
  d = lambda: ref.sigmoid_derivative(c.x)  # noqa: E731
  s = lambda: ref.sigmoid(c.x)  # noqa: E731
  grad_mag = lambda: s() * (1 + s())  # noqa: E731  Σ|terms| of σ(1 − σ), as autodiff forms it
  yield Comparison("sigmoid", "", "value", "softmax_jax", lambda: sigmoid(c.x), s, n=1,
                   finite_only=True)
  yield Comparison("sigmoid", "", "analytic", "softmax_jax", lambda: sigmoid_derivative(c.x), d,
                   n=1, finite_only=True)
  yield Comparison("sigmoid", "", "grad", "softmax_jax",
                   lambda: jax.grad(_summed(sigmoid))(c.x), d, grad_mag, n=1, finite_only=True)
  yield Comparison("sigmoid", "", "grad", "jax.nn",
                   lambda: jax.grad(_summed(jax.nn.sigmoid))(c.x), d, grad_mag, n=1,
                   finite_only=True)


def _loss_comparisons(name, variant, case, loss, q, baseline=None):
  """value / grad / Hessian / fd rows of a per-row loss ``loss(x) -> [rows]``; ``q()`` gives
  its effective targets."""
  c = case
  total = lambda: np.sum(q(), -1, keepdims=True)  # noqa: E731
  want_g = functools.cache(lambda: ref.xent_grad(c.x, q(), c.mask))
  grad_mag = lambda: total() * terms.probabilities(c.x, c.mask).rounding + q()  # noqa: E731
  impls = [("softmax_jax", loss)] + ([baseline] if baseline else [])
  for impl, f in impls:
    yield Comparison(name, variant, "value", impl, lambda f=f: f(c.x),
                     lambda: ref.xent(c.x, q(), c.mask),
                     lambda: terms.cross_entropy_value(c.x, q(), c.mask))
    yield Comparison(name, variant, "grad", impl, lambda f=f: jax.grad(_summed(f))(c.x),
                     want_g, grad_mag)
  if c.classes <= DENSE_MAX:
    yield Comparison(name, variant, "hessian", "softmax_jax",
                     lambda: _diagonal_blocks(jax.hessian(_summed(loss))(c.x)),
                     lambda: ref.xent_hessian(c.x, q(), c.mask),
                     lambda: total()[..., None] * terms.softmax_jacobian(c.x, c.mask))
  else:
    yield Comparison(name, variant, "hessian", "softmax_jax",
                     lambda: jax.jvp(jax.grad(_summed(loss)), (c.x,), (c.v,))[1],
                     lambda: ref.xent_hvp(c.x, q(), c.v, c.mask),
                     lambda: total() * terms.softmax_product(c.x, c.v, c.mask))
  if c.dtype == "float64":
    yield Comparison(name, variant, "fd", "softmax_jax",
                     lambda: _difference_along(_summed(loss), c.x, c.v),
                     lambda: np.sum(want_g() * ref.f64(c.v)),
                     lambda: np.sum(np.abs(want_g() * ref.f64(c.v))), n=int(np.size(c.x)))


def cross_entropy_comparisons(case: Case):
  c, w = case, case.where
  for eps in (0.0, 0.1):
    variant = f"smoothing={eps}" if eps else ""

    def loss(x, eps=eps):
      return cross_entropy(x, c.targets, where=w, label_smoothing=eps, reduction="none")

    q = functools.cache(lambda eps=eps: ref.soft_targets(c.x, c.targets, eps=eps, where=c.mask))
    base = None if eps else ("optax", lambda x: _optax_cross_entropy(x, c.targets, w))
    yield from _loss_comparisons("cross_entropy", variant, c, loss, q, base)
  if w is None:
    t = lambda: ref.soft_targets(c.x, c.targets)  # noqa: E731
    yield Comparison("cross_entropy_grad", "", "analytic", "softmax_jax",
                     lambda: cross_entropy_grad(c.x, c.targets), lambda: ref.xent_grad(c.x, t()),
                     lambda: (np.sum(t(), -1, keepdims=True) * terms.probabilities(c.x).rounding
                              + t()))


INTEGER_LABEL_VARIANTS = {
    "": {},
    "weights": {"weights": True},
    "ignore_index": {"ignore_index": -100},
    "smoothing=0.1": {"eps": 0.1},
    "weights+ignore+smoothing": {"weights": True, "ignore_index": -100, "eps": 0.1},
}


def integer_label_comparisons(case: Case):
  c, w = case, case.where
  for variant, opts in INTEGER_LABEL_VARIANTS.items():
    labels = c.labels
    if "ignore_index" in opts:
      labels = labels.at[0].set(-100)
    cw = c.weights if opts.get("weights") else None
    eps = opts.get("eps", 0.0)
    ignore = opts.get("ignore_index")

    def loss(x, labels=labels, cw=cw, eps=eps, ii=ignore):
      return cross_entropy_with_integer_labels(x, labels, where=w, class_weights=cw,
                                               ignore_index=ii, label_smoothing=eps,
                                               reduction="none")

    q = functools.cache(lambda labels=labels, cw=cw, eps=eps, ii=ignore: ref.xent_targets(
        c.x, np.asarray(labels), weights=cw, ignore_index=ii, eps=eps, where=c.mask).q)
    base = None if opts else (
        "optax", lambda x, labels=labels: _optax_integer_cross_entropy(x, labels, w))
    yield from _loss_comparisons("cross_entropy_with_integer_labels", variant, c, loss, q, base)


def binary_comparisons(case: Case):
  c = case
  y = functools.cache(lambda: (ref.f64(c.targets) > 1.0 / c.classes).astype(np.float64))
  labels = lambda: (c.targets.astype(jnp.float64) > 1.0 / c.classes).astype(jnp.float64)  # noqa: E731
  f = lambda x: binary_cross_entropy(x, labels(), reduction="none")  # noqa: E731
  want = functools.cache(lambda: ref.binary_cross_entropy_grad(c.x, y()))
  grad_mag = lambda: ref.sigmoid(c.x) + y()  # noqa: E731  Σ|terms| of σ(z) − y
  yield Comparison("binary_cross_entropy", "", "value", "softmax_jax", lambda: f(c.x),
                   lambda: ref.binary_cross_entropy(c.x, y()), n=1, finite_only=True)
  yield Comparison("binary_cross_entropy", "", "grad", "softmax_jax",
                   lambda: jax.grad(_summed(f))(c.x), want, grad_mag, n=1, finite_only=True)
  if c.dtype == "float64":
    yield Comparison("binary_cross_entropy", "", "fd", "softmax_jax",
                     lambda: _difference_along(_summed(f), c.x, c.v),
                     lambda: np.sum(want() * ref.f64(c.v)),
                     lambda: np.sum(np.abs(want() * ref.f64(c.v))), n=int(np.size(c.x)),
                     finite_only=True)


def _optax_cross_entropy(x, t, where):
  import optax

  return optax.softmax_cross_entropy(x, t, where=where)


def _optax_integer_cross_entropy(x, labels, where):
  import optax

  return optax.softmax_cross_entropy_with_integer_labels(x, labels, where=where)


CHECKS: dict[str, Check] = {
    "softmax": softmax_comparisons, "log_softmax": log_softmax_comparisons,
    "logsumexp": logsumexp_comparisons, "sigmoid": sigmoid_comparisons,
    "cross_entropy": cross_entropy_comparisons,
    "cross_entropy_with_integer_labels": integer_label_comparisons,
    "binary_cross_entropy": binary_comparisons,
}


def _difference_along(f, x, v) -> Difference:
  """Directional central difference of ``f`` at ``x`` along ``v`` in float64 and its error
  estimate, shaped like ``f(x)``
  (:func:`softmax_jax.verify._finite_differences.central_difference`)."""
  value, error = central_difference(f, x, v, batched=True)
  shape = jax.eval_shape(f, x).shape
  return Difference(value.reshape(shape), error.reshape(shape))
