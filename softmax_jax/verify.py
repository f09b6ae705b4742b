"""Verify analytic derivatives against JAX's autodiff and finite differences.

``check_jacobian``, ``check_grad``, ``check_jvp`` and ``check_vjp`` compare a
derivative you wrote (or one of this package's) with ``jax.jacfwd``,
``jax.jacrev``, ``jax.grad``, ``jax.jvp`` / ``jax.vjp`` and central finite
differences, on any pytree input with any leading batch dimensions, jitted or
not.  Each returns a :class:`CheckResult` with, per method, the largest
absolute and relative error, the worst index and pass/fail against
tolerances derived from the dtype (``softmax_jax._tolerances``).

Example::

    >>> import jax.numpy as jnp
    >>> from softmax_jax import softmax, softmax_jacobian
    >>> from softmax_jax.verify import check_jacobian
    >>> result = check_jacobian(softmax, softmax_jacobian, jnp.array([0.5, -1.0, 2.0]))
    >>> result.passed
    True
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ._tolerances import tolerance

__all__ = ["CheckResult", "MethodError", "check_grad", "check_jacobian", "check_jvp",
           "check_vjp", "compare", "fd_tolerance"]


@dataclasses.dataclass(frozen=True)
class MethodError:
  """How far one candidate is from one reference method."""

  method: str
  max_abs_err: float
  max_rel_err: float
  worst_index: tuple
  rtol: float
  atol: float
  passed: bool

  def __str__(self) -> str:
    status = "ok" if self.passed else "FAIL"
    return (f"{self.method:8s} max abs {self.max_abs_err:9.2e}  max rel {self.max_rel_err:9.2e}"
            f"  tol {self.rtol:8.1e}  worst at {self.worst_index}  {status}")


@dataclasses.dataclass(frozen=True)
class CheckResult:
  """The outcome of one check: one :class:`MethodError` per reference method."""

  kind: str
  dtype: str
  shape: tuple
  errors: tuple[MethodError, ...]

  @property
  def passed(self) -> bool:
    return all(e.passed for e in self.errors)

  def __getitem__(self, method: str) -> MethodError:
    for e in self.errors:
      if e.method == method:
        return e
    raise KeyError(method)

  def __str__(self) -> str:
    head = (f"{self.kind} check, {self.dtype}, compared shape {self.shape}: "
            f"{'PASSED' if self.passed else 'FAILED'}")
    return "\n".join([head, *("  " + str(e) for e in self.errors)])


# ---------------------------------------------------------------------------
# Tolerances and comparison
# ---------------------------------------------------------------------------


def fd_tolerance(compute_dtype) -> float:
  """Tolerance of central differences computed in ``compute_dtype``.

  With the step ``h = ε^{1/3}·max(1, |x|)`` the truncation and rounding errors
  are both of order ``ε^{2/3}`` times the scale of the third derivative; the
  factor 1000 allows third derivatives up to 1000 times the function's scale.
  """
  eps = float(jnp.finfo(compute_dtype).eps)
  return 1e3 * eps ** (2.0 / 3.0)


def _low_dtype(tree) -> jnp.dtype:
  dts = [jnp.dtype(leaf.dtype) for leaf in jax.tree_util.tree_leaves(tree)]
  if not dts:
    raise ValueError("verify: nothing to compare (empty pytree).")
  return min(dts, key=lambda d: jnp.finfo(d).bits if jnp.issubdtype(d, jnp.floating) else 64)


def compare(got, want, method: str, *, rtol: float, atol: float, index_of=None,
            magnitude=None, extra_atol=None) -> MethodError:
  """Compares two arrays elementwise: ``|got − want| ≤ atol·M + rtol·|want|``.

  ``M`` (``magnitude``, default 1) is the size of the terms that were summed
  to make each entry — for a sum ``Σ a`` it is ``Σ |a|``, the scale that
  floating-point rounding is proportional to; pass it for results that are
  reductions of many terms.  ``extra_atol`` adds an absolute allowance per
  entry (the estimated error of a finite difference, say).  NaNs in the same
  places, and equal infinities, count as agreement.
  """
  g = np.asarray(got, np.float64).ravel()
  w = np.asarray(want, np.float64).ravel()
  mag = 1.0 if magnitude is None else np.broadcast_to(
      np.maximum(np.asarray(magnitude, np.float64), 1.0), np.shape(want)).ravel()
  both_nan = np.isnan(g) & np.isnan(w)
  same_inf = np.isinf(w) & (g == w)
  with np.errstate(invalid="ignore"):
    diff = np.where(both_nan | same_inf, 0.0, np.abs(g - w))
  diff = np.where(np.isnan(diff), np.inf, diff)
  scale = np.where(np.isfinite(w), np.abs(w), 0.0)
  allowed = atol * mag + rtol * scale
  if extra_atol is not None:
    allowed = allowed + np.broadcast_to(np.asarray(extra_atol, np.float64), np.shape(want)).ravel()
  rel = diff / np.maximum(scale, atol if atol > 0 else np.finfo(np.float64).tiny)
  ratio = diff / allowed
  worst = int(np.argmax(ratio)) if ratio.size else 0
  index = index_of(worst) if index_of is not None else (worst,)
  return MethodError(method, float(diff.max(initial=0.0)), float(rel.max(initial=0.0)),
                     index, rtol, atol, bool(np.all(diff <= allowed)))


# ---------------------------------------------------------------------------
# Pytree plumbing
# ---------------------------------------------------------------------------


def _check_float(x, name: str) -> None:
  for path, leaf in jax.tree_util.tree_flatten_with_path(x)[0]:
    dtype = jnp.asarray(leaf).dtype
    if not jnp.issubdtype(dtype, jnp.floating):
      raise ValueError(f"verify: {name}{jax.tree_util.keystr(path)} has dtype {dtype} "
                       f"and shape {jnp.shape(leaf)}; derivatives need floating-point inputs.")


def _same_structure(got, want, got_name: str, want_name: str) -> None:
  g_leaves, g_def = jax.tree_util.tree_flatten(got)
  w_leaves, w_def = jax.tree_util.tree_flatten(want)
  if g_def != w_def:
    raise ValueError(f"verify: {got_name} has structure {g_def} but {want_name} has {w_def}.")
  for (path, g), w in zip(jax.tree_util.tree_flatten_with_path(got)[0], w_leaves, strict=True):
    if tuple(jnp.shape(g)) != tuple(jnp.shape(w)):
      raise ValueError(
          f"verify: {got_name}{jax.tree_util.keystr(path)} has shape {tuple(jnp.shape(g))} but "
          f"{want_name}{jax.tree_util.keystr(path)} has shape {tuple(jnp.shape(w))}.")


def _flat_index(tree):
  """Maps a position in ``ravel_pytree(tree)`` to ``(leaf path, index in the leaf)``."""
  items = jax.tree_util.tree_flatten_with_path(tree)[0]
  bounds = np.cumsum([0] + [int(np.size(leaf)) for _, leaf in items])

  def index_of(k):
    i = int(np.searchsorted(bounds, k, side="right") - 1)
    path, leaf = items[i]
    idx = tuple(int(a) for a in np.unravel_index(k - bounds[i], np.shape(leaf)))
    key = jax.tree_util.keystr(path)
    return (key, *idx) if key else idx

  return index_of


def _x64():
  """A context in which float64 exists, whatever the global setting."""
  if jax.config.jax_enable_x64:
    return contextlib.nullcontext()
  return jax.enable_x64(True)


def _fd_directional(fn, x, v, with_error=False):
  """(f(x + h v) − f(x − h v)) / 2h in float64, entries where f is not finite set to 0.

  With ``with_error`` also returns ``|D(h) − D(2h)| / 3``, the Richardson
  estimate of the truncation error (a central difference errs by ``≈ c h²``).
  """
  with _x64():
    xf, unravel = ravel_pytree(jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), x))
    vf, _ = ravel_pytree(jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), v))
    finite_x = jnp.where(jnp.isfinite(xf), jnp.abs(xf), 0.0)
    vmax = jnp.maximum(jnp.max(jnp.abs(vf)), jnp.finfo(jnp.float64).tiny)
    h = float(jnp.finfo(jnp.float64).eps) ** (1 / 3) * jnp.maximum(1.0, jnp.max(finite_x)) / vmax

    def f(z):
      out, _ = ravel_pytree(fn(unravel(z)))
      return out.astype(jnp.float64)

    def central(step):
      hi, lo = f(xf + step * vf), f(xf - step * vf)
      ok = jnp.isfinite(hi) & jnp.isfinite(lo)
      return jnp.where(ok, (hi - lo) / (2 * step), 0.0)

    d1 = np.asarray(central(h))
    if not with_error:
      return d1
    return d1, np.abs(d1 - np.asarray(central(2 * h))) / 3


def _fd_jacobian(fn, x):
  """Dense [outputs, inputs] Jacobian by central differences, one input at a time."""
  xf, unravel = ravel_pytree(x)
  basis = np.eye(xf.size, dtype=np.float64)
  return np.stack([_fd_directional(fn, x, unravel(jnp.asarray(b, xf.dtype))) for b in basis], 1)


def _batch_size(tree, k: int) -> tuple[int, ...]:
  shapes = {tuple(np.shape(leaf))[:k] for leaf in jax.tree_util.tree_leaves(tree)}
  if len(shapes) != 1 or any(len(s) < k for s in shapes):
    raise ValueError(f"verify: batch_dims={k} but the leaves of x have leading shapes {shapes}.")
  return shapes.pop()


def _per_example(fn, k: int):
  """``fn`` applied to one example of ``k`` leading batch axes (re-added with size 1)."""
  def single(xi):
    out = fn(jax.tree_util.tree_map(lambda a: a.reshape((1,) * k + a.shape), xi))
    return jax.tree_util.tree_map(lambda o: o.reshape(o.shape[k:]), out)
  return single


def _vmap_k(f, k: int):
  for _ in range(k):
    f = jax.vmap(f)
  return f


def _example_tree(tree, k: int):
  """The structure of one example: leaves with the ``k`` batch axes dropped."""
  return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(np.shape(a)[k:], a.dtype), tree)


def _jac_matrix(jac, out_tree, in_tree, k: int = 0):
  """A jacfwd-style nested pytree Jacobian as a dense [batch, outputs, inputs] array."""
  out_leaves = jax.tree_util.tree_leaves(out_tree)
  in_leaves = jax.tree_util.tree_leaves(in_tree)
  blocks = jax.tree_util.tree_structure(out_tree).flatten_up_to(jac)
  rows = []
  for o, block in zip(out_leaves, blocks, strict=True):
    in_blocks = jax.tree_util.tree_structure(in_tree).flatten_up_to(block)
    rows.append(np.concatenate(
        [np.asarray(b, np.float64).reshape(-1, int(np.prod(o.shape)), int(np.prod(i.shape)))
         for b, i in zip(in_blocks, in_leaves, strict=True)], axis=2))
  return np.concatenate(rows, axis=1)


def _fd_batched_jacobian(fn, x, k: int, n_in: int):
  """[batch, outputs, inputs] by central differences, one coordinate of every example at once."""
  example = _example_tree(x, k)
  _, unravel_one = ravel_pytree(jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype),
                                                       example))
  batch = _batch_size(x, k)
  cols = []
  for b in np.eye(n_in, dtype=np.float64):
    one = unravel_one(jnp.asarray(b))
    v = jax.tree_util.tree_map(lambda a, leaf: jnp.broadcast_to(a, np.shape(leaf)), one, x)
    col = _fd_directional(fn, x, v)  # flat over the output leaves, each batch + out shape
    cols.append(_split_batch(col, jax.eval_shape(fn, x), k, int(np.prod(batch))))
  return np.stack(cols, axis=2)


def _split_batch(flat, out_tree, k: int, nb: int):
  """Flat output vector (leaf-major) to [batch, per-example outputs]."""
  parts, start = [], 0
  for leaf in jax.tree_util.tree_leaves(out_tree):
    size = int(np.prod(leaf.shape))
    parts.append(flat[start:start + size].reshape(nb, -1))
    start += size
  return np.concatenate(parts, axis=1)


def _tolerances(dtype, rtol, atol, fd=False):
  r, a = tolerance(dtype)
  if fd:
    r = a = max(r, fd_tolerance(jnp.float64))
  return (r if rtol is None else rtol), (a if atol is None else atol)


# ---------------------------------------------------------------------------
# Public checks
# ---------------------------------------------------------------------------

_JAC_METHODS = ("jacfwd", "jacrev", "fd")


def _check(kind, got, x, methods, references, rtol, atol, index_of) -> CheckResult:
  """Compares ``got`` with ``references[m]()`` for each method ``m``."""
  got_v = np.asarray(ravel_pytree(got)[0], np.float64)
  dtype = _low_dtype((x, got))
  errors = []
  for m in methods:
    if m not in references:
      raise ValueError(f"check_{kind}: unknown method {m!r}; use one of {tuple(references)}.")
    r, a = _tolerances(dtype, rtol, atol, fd=(m == "fd"))
    errors.append(compare(got_v, references[m](), m, rtol=r, atol=a, index_of=index_of))
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

  Args:
    fn: the function, pytree to pytree.
    jac_fn: your Jacobian, laid out as ``jax.jacfwd(fn)(x)`` (for arrays:
      ``fn(x).shape + x.shape``).  With ``batch_dims=k`` it holds one Jacobian
      per example: ``batch + out_example_shape + in_example_shape``, as
      ``softmax_jacobian`` does.
    x: the point, any pytree of floating arrays.
    methods: any of ``"jacfwd"``, ``"jacrev"``, ``"fd"`` (central differences
      in float64, two evaluations of ``fn`` per input coordinate of one example).
    batch_dims: number of leading axes of every leaf of ``x`` (and of
      ``fn(x)``) that index independent examples.
    rtol, atol: override the dtype-based defaults.

  Returns:
    A :class:`CheckResult`; ``worst_index`` is ``(batch…, output…, input…)``.

  Raises:
    ValueError: if ``x`` is not floating point, or ``jac_fn(x)`` does not have
      the structure and shapes of the autodiff Jacobian (both are named).
  """
  _check_float(x, "x")
  bad = set(methods) - set(_JAC_METHODS)
  if bad:
    raise ValueError(f"check_jacobian: unknown methods {sorted(bad)}; use {_JAC_METHODS}.")
  k = int(batch_dims)
  batch = _batch_size(x, k)
  single = _per_example(fn, k) if k else fn
  reference = {m: _vmap_k((jax.jacfwd if m == "jacfwd" else jax.jacrev)(single), k)
               for m in ("jacfwd", "jacrev")}
  got = jac_fn(x)
  _same_structure(got, jax.eval_shape(reference["jacfwd"], x), "jac_fn(x)", "jax.jacfwd(fn)(x)")
  out_one = jax.eval_shape(single, _example_tree(x, k)) if k else jax.eval_shape(fn, x)
  in_one = _example_tree(x, k)
  got_m = _jac_matrix(got, out_one, in_one, k)
  _, m_out, n_in = got_m.shape
  out_index, in_index = _flat_index(out_one), _flat_index(in_one)

  def index_of(pos):
    b, rest = divmod(pos, m_out * n_in)
    i, j = divmod(rest, n_in)
    lead = tuple(int(a) for a in np.unravel_index(b, batch)) if k else ()
    return (*lead, *out_index(i), *in_index(j))

  dtype = _low_dtype((x, got))
  errors = []
  for m in methods:
    if m == "fd":
      want = (_fd_batched_jacobian(fn, x, k, n_in) if k
              else _fd_jacobian(fn, x).reshape(1, m_out, n_in))
    else:
      want = _jac_matrix(reference[m](x), out_one, in_one, k)
    r, a = _tolerances(dtype, rtol, atol, fd=(m == "fd"))
    errors.append(compare(got_m, want, m, rtol=r, atol=a, index_of=index_of))
  return CheckResult("jacobian", jnp.dtype(dtype).name, got_m.shape[1:] if not k else
                     (*batch, m_out, n_in), tuple(errors))


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

  ``loss_fn`` must return a scalar; ``grad_fn(x)`` must have the structure of ``x``.
  """
  _check_float(x, "x")
  out = jax.eval_shape(loss_fn, x)
  if jax.tree_util.tree_leaves(out)[0].shape != () or len(jax.tree_util.tree_leaves(out)) != 1:
    raise ValueError(f"check_grad: loss_fn(x) must be a scalar, got {out}.")
  got = grad_fn(x)
  _same_structure(got, jax.eval_shape(jax.grad(loss_fn), x), "grad_fn(x)", "jax.grad(loss_fn)(x)")
  references = {"grad": lambda: ravel_pytree(jax.grad(loss_fn)(x))[0],
                "fd": lambda: _fd_jacobian(loss_fn, x)[0]}
  return _check("grad", got, x, methods, references, rtol, atol, _flat_index(x))


def check_jvp(fn, jvp_fn, x, tangent, *, methods=("jvp", "fd"), rtol=None, atol=None):
  """Checks ``jvp_fn(x, tangent)`` against ``jax.jvp(fn, (x,), (tangent,))`` and a
  directional central difference."""
  _check_float(x, "x")
  _check_float(tangent, "tangent")
  _same_structure(tangent, x, "tangent", "x")
  got = jvp_fn(x, tangent)
  out = jax.eval_shape(fn, x)
  _same_structure(got, out, "jvp_fn(x, tangent)", "fn(x)")
  references = {"jvp": lambda: ravel_pytree(jax.jvp(fn, (x,), (tangent,))[1])[0],
                "fd": lambda: _fd_directional(fn, x, tangent)}
  return _check("jvp", got, x, methods, references, rtol, atol, _flat_index(out))


def check_vjp(fn, vjp_fn, x, cotangent, *, methods=("vjp", "fd"), rtol=None, atol=None):
  """Checks ``vjp_fn(x, cotangent)`` against ``jax.vjp(fn, x)[1](cotangent)`` and
  ``cotangentᵀ J`` with ``J`` from central differences."""
  _check_float(x, "x")
  _check_float(cotangent, "cotangent")
  out = jax.eval_shape(fn, x)
  _same_structure(cotangent, out, "cotangent", "fn(x)")
  got = vjp_fn(x, cotangent)
  _same_structure(got, x, "vjp_fn(x, cotangent)", "x")
  u = np.asarray(ravel_pytree(cotangent)[0], np.float64)
  references = {"vjp": lambda: ravel_pytree(jax.vjp(fn, x)[1](cotangent)[0])[0],
                "fd": lambda: u @ _fd_jacobian(fn, x)}
  return _check("vjp", got, x, methods, references, rtol, atol, _flat_index(x))
