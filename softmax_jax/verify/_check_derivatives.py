"""Every mode of a derivative and their consistency in one call: :func:`check_derivatives`
and, for test suites, :func:`assert_derivatives`.

First order (``_projections.first_order_checks``): forward and reverse mode against float64
central differences and against each other (the dot-product test ``⟨u, J v⟩ = ⟨Jᵀu, v⟩``),
by full Jacobians or, when those would be large, by random projections.  Then
(``_batching``): ``jax.vmap`` of each mode against a loop of unbatched ones, ``jax.jit``
of each against eager, and with ``order=2`` (``_second_order``) the Hessian-vector product
by forward-over-reverse and reverse-over-reverse against finite differences of the
gradient.  A mode JAX
refuses for the function (forward mode of a ``custom_vjp``) is reported, not raised.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from softmax_jax.verify import _batching, _consistency, _second_order
from softmax_jax.verify._report import DerivativeReport

_MODES = ("fwd", "rev")


def _describe(args) -> str:
  def leaf(a):
    return f"{tuple(jnp.shape(a))} {jnp.result_type(a)}"
  parts = [jax.tree_util.tree_map(leaf, a) for a in args]
  return "(" + ", ".join(str(p) for p in parts) + ")"


def _validate(fn, args, order, modes, fast, projections, batch_size,
              consistency) -> tuple[str, ...]:
  if not callable(fn):
    raise TypeError(f"check_derivatives: fn must be callable, got {type(fn).__name__}.")
  if not args:
    raise ValueError("check_derivatives: no args; pass the point as check_derivatives(fn, x, ...).")
  if isinstance(order, bool) or order not in (1, 2):
    raise ValueError(f"check_derivatives: order must be 1 or 2, got {order!r}.")
  modes = (modes,) if isinstance(modes, str) else tuple(modes)
  bad = [m for m in modes if m not in _MODES]
  if bad or not modes:
    raise ValueError(f"check_derivatives: modes must be a non-empty subset of {_MODES}, "
                     f"got {modes!r}.")
  if fast not in (None, True, False):
    raise ValueError(f"check_derivatives: fast must be None, True or False, got {fast!r}.")
  if isinstance(projections, bool) or not isinstance(projections, int) or projections < 1:
    raise ValueError(f"check_derivatives: projections must be an integer ≥ 1, got "
                     f"{projections!r}.")
  if not isinstance(consistency, bool):
    raise ValueError(f"check_derivatives: consistency must be True or False, got "
                     f"{consistency!r}.")
  if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 2:
    raise ValueError(f"check_derivatives: batch_size must be an integer ≥ 2, got "
                     f"{batch_size!r}.")
  return tuple(dict.fromkeys(modes))


def check_derivatives(fn: Callable, *args, order: int = 1, modes: Sequence[str] = _MODES,
                      fast: bool | None = None, key=None, projections: int = 3,
                      holomorphic: bool = False, batch_size: int = 3,
                      consistency: bool = True) -> DerivativeReport:
  """Checks every mode of the derivatives of ``fn`` at ``args``, and their consistency.

  For ``y = fn(*args)`` with Jacobian ``J`` (over the floating and complex leaves of
  ``args``; integer leaves are held fixed), each mode is held to a bound scaled to the
  derivative, ``|got − ref| ≤ rtol·max(M, S) + atol`` with ``rtol = c ε + 2 ε_acc √n``
  (``softmax_jax.verify._tolerances``), so a 1 % error is caught in float32 at any size
  and a correct derivative passes in float64, float32 and bfloat16 (about 3 % there).

  * ``fwd vs fd``, ``rev vs fd``, ``rev vs fwd`` (the dot-product test): ``jax.jvp`` and
    ``jax.vjp`` against float64 central differences and against each other; full
    Jacobians, or with ``fast`` random projections ``⟨u, J v⟩``.
  * ``vmap(fwd) vs loop``, ``vmap(rev) vs loop``: ``jax.vmap`` of ``v ↦ J v`` and
    ``u ↦ Jᵀ u`` over ``batch_size`` perturbed copies of ``args`` (``args`` itself and
    copies ``x·(1 + 0.1 z)``) and directions against a Python loop of the unbatched ones;
    ``vmap(fwd, x fixed)``, ``vmap(rev, x fixed)``: over the directions alone, as
    ``jax.jacfwd`` / ``jax.jacrev`` batch: a wrong batching rule.
  * ``jit(fwd) vs eager``, ``jit(rev) vs eager``: the same under ``jax.jit``.
  * ``order=2``: ``fwd-over-rev vs fd``, ``rev-over-rev vs fd`` and ``fwd-over-rev vs
    rev-over-rev``: the Hessian-vector product of ``⟨u, fn(*args)⟩`` along a random ``v``,
    against the float64 central difference of its gradient.

  Args:
    fn: the function, any pytrees in and out (floating or complex outputs).
    *args: the point: any pytrees.
    order: 1, or 2 for the second-order checks too.
    modes: which of ``"fwd"`` (JVP) and ``"rev"`` (VJP) to check.
    fast: ``True`` for random projections, ``False`` for full Jacobians, ``None`` to pick
      projections when a full Jacobian would be large.
    key: a ``jax.random`` key for the directions and perturbations (default ``key(0)``:
      the same report every run).
    projections: how many random projections in fast mode.
    holomorphic: ``fn`` is holomorphic in complex inputs (compare the complex
      derivative; otherwise Wirtinger derivatives of the real and imaginary parts).
    batch_size: how many examples the ``vmap`` checks batch (at least 2).
    consistency: run the ``vmap`` and ``jit`` checks.  They evaluate each mode about
      ``3·batch_size + 1`` times, batched and not (plus their ``Σ|terms|``), whatever
      ``fast`` is: at a large size they cost more than the first-order checks in fast
      mode, which ``consistency=False`` runs alone (with ``order=2``, the second order too).

  Returns:
    A :class:`~softmax_jax.verify.DerivativeReport`: ``.passed``, ``.failures()``,
    ``str(report)`` a table (per check the worst element by leaf path and index, the
    largest absolute and relative errors, the bound and how it was made),
    ``to_json()`` / ``save_json(path)`` and, for full Jacobians, ``plot(path)``.

  Raises:
    ValueError / TypeError: one line naming the argument that is wrong.

  Examples:
    >>> import jax.numpy as jnp
    >>> from softmax_jax import log_softmax
    >>> from softmax_jax.verify import check_derivatives
    >>> report = check_derivatives(log_softmax, jnp.array([0.5, -1.0, 2.0]))
    >>> report.passed
    True
    >>> report["vmap(rev) vs loop"].status
    'ok'
  """
  modes = _validate(fn, args, order, modes, fast, projections, batch_size, consistency)
  target = _consistency.target(fn, args)
  key = jax.random.key(0) if key is None else key
  key_first, key_consistency, key_second = jax.random.split(key, 3)
  from softmax_jax.verify._projections import first_order_checks  # the first-order checks

  first = first_order_checks(fn, tuple(args), modes=modes, fast=fast, key=key_first,
                             projections=projections, holomorphic=holomorphic)
  checks = list(first.checks)
  if consistency:
    checks += _batching.batching_and_jit_checks(target, modes, key_consistency,
                                                batch_size=batch_size)
  if order == 2:
    checks += _second_order.second_order_checks(target, modes, key_second)
  return DerivativeReport(getattr(fn, "__name__", type(fn).__name__), _describe(args), order,
                          first.jacobian_errors is None, tuple(checks), first.jacobian_errors)


def assert_derivatives(fn: Callable, *args, **options) -> DerivativeReport:
  """:func:`check_derivatives`, raising ``AssertionError(str(report))`` unless it passed.

  For test suites: the message is the whole report, so pytest shows which mode is wrong,
  where and by how much.  Returns the report when it passed.

  Examples:
    >>> import jax.numpy as jnp
    >>> from softmax_jax.verify import assert_derivatives
    >>> assert_derivatives(jnp.tanh, jnp.array([0.5, -1.0, 2.0]), modes=("rev",)).passed
    True
  """
  report = check_derivatives(fn, *args, **options)
  if not report.passed:
    raise AssertionError(str(report))
  return report
