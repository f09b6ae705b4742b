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

from softmax_jax.verify._tolerances import Bound, bound, fd_tolerance, term_magnitude

__all__ = ["CheckResult", "MethodError", "check_grad", "check_jacobian", "check_jvp",
           "check_vjp", "compare", "fd_tolerance"]


@dataclasses.dataclass(frozen=True)
class MethodError:
  """How far one candidate is from one reference method, and the bound it was held to.

  ``error`` and ``allowed`` are ``|got − ref|`` and its bound at ``worst_index``,
  the entry closest to (or furthest beyond) its bound; ``allowed = rtol·scale
  + atol + extra`` there, with ``scale = max(M, S)`` at that entry.
  """

  method: str
  max_abs_err: float
  max_rel_err: float
  worst_index: tuple
  rtol: float
  atol: float
  passed: bool
  error: float = float("nan")
  allowed: float = float("nan")
  scale: float = float("nan")
  rule: str = ""         # where rtol comes from
  scale_rule: str = ""   # what the scale is
  extra: float = 0.0     # the further allowance at worst_index (a finite difference's error)

  def __str__(self) -> str:
    status = "ok" if self.passed else "FAIL"
    terms = [f"{self.rtol:.2e} × {self.scale:.2e}"]
    names = ["rtol·scale"]
    if self.atol:
      names.append("atol")
      terms.append(f"{self.atol:.1e}")
    if self.extra:
      names.append("fd error estimate")
      terms.append(f"{self.extra:.1e}")
    return (f"{self.method:8s} error {self.error:9.2e} vs bound {self.allowed:9.2e} at "
            f"{self.worst_index}  [bound = {' + '.join(names)} = {' + '.join(terms)}; "
            f"rtol = {self.rule}; scale = {self.scale_rule}]  "
            f"max abs {self.max_abs_err:.2e}  max rel {self.max_rel_err:.2e}  {status}")


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
# The comparison
# ---------------------------------------------------------------------------


def _low_dtype(tree) -> jnp.dtype:
  dts = [jnp.dtype(leaf.dtype) for leaf in jax.tree_util.tree_leaves(tree)]
  if not dts:
    raise ValueError("verify: nothing to compare (empty pytree).")
  return min(dts, key=lambda d: jnp.finfo(d).bits if jnp.issubdtype(d, jnp.floating) else 64)


def _finite_abs(a) -> np.ndarray:
  a = np.abs(np.asarray(a, np.float64))
  return np.where(np.isfinite(a), a, 0.0)


def compare(got, want, method: str, *, bound: Bound, magnitude=None, scale=None,
            extra_atol=None, index_of=None, scale_rule: str | None = None) -> MethodError:
  """Compares two arrays entrywise: ``|got − want| ≤ rtol·max(M, S) + atol + extra``.

  Args:
    got, want: the candidate and the reference (any shape, compared flat).
    method: the reference's name, for the report.
    bound: ``rtol``, ``atol`` and the rule behind them
      (:func:`softmax_jax.verify._tolerances.bound`).
    magnitude: ``M``, the ``Σ|terms|`` summed to make each entry (broadcast to
      ``want``); non-finite entries are ignored.
    scale: ``S``, the scale of the result, broadcast to ``want``; default
      ``max|want|`` over its finite entries.
    extra_atol: a further absolute allowance per entry (the estimated error of
      a finite difference, say).
    index_of: maps a flat position to the index reported as ``worst_index``.
    scale_rule: how the scale was made, for the report.

  NaNs in the same places, and equal infinities, count as agreement.
  """
  w_full = np.asarray(want, np.float64)
  g = np.asarray(got, np.float64).ravel()
  w = w_full.ravel()
  if scale is None:
    s = np.full(w.shape, _finite_abs(w).max(initial=0.0))
  else:
    s = np.broadcast_to(np.asarray(scale, np.float64), w_full.shape).ravel()
  rule = scale_rule or ("max|ref|" if magnitude is None else "max(Σ|terms|, max|ref|)")
  if magnitude is not None:
    s = np.maximum(s, np.broadcast_to(_finite_abs(magnitude), w_full.shape).ravel())
  both_nan = np.isnan(g) & np.isnan(w)
  same_inf = np.isinf(w) & (g == w)
  with np.errstate(invalid="ignore"):
    diff = np.where(both_nan | same_inf, 0.0, np.abs(g - w))
  diff = np.where(np.isnan(diff), np.inf, diff)
  extra = (np.zeros_like(w) if extra_atol is None else
           np.broadcast_to(np.asarray(extra_atol, np.float64), w_full.shape).ravel())
  allowed = bound.rtol * s + bound.atol + extra
  aw = _finite_abs(w)
  with np.errstate(divide="ignore", invalid="ignore"):
    rel = np.where(aw > 0, diff / aw, 0.0)
    ratio = np.where(diff > 0, diff / allowed, 0.0)
  worst = int(np.argmax(ratio)) if ratio.size else 0
  index = index_of(worst) if index_of is not None else (worst,)
  at = (lambda a: float(a[worst])) if ratio.size else (lambda a: 0.0)  # noqa: E731
  return MethodError(method, float(diff.max(initial=0.0)), float(rel.max(initial=0.0)), index,
                     bound.rtol, bound.atol, bool(np.all(diff <= allowed)), at(diff), at(allowed),
                     at(s), bound.rule, rule, at(extra))


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


def _central_difference(fn, x, v, *, batched: bool = False):
  """``(f(x + h v) − f(x − h v)) / 2h`` in float64 and its error estimate, as JAX arrays.

  Entries where ``f`` is not finite are set to 0.  The second result
  estimates its error: ``|D(h) − D(2h)| / 3``, the Richardson estimate of the
  truncation error (a central difference errs by ``≈ c h²``), plus
  ``ε (|f(x + hv)| + |f(x − hv)| + 2 max|x|) / 2h``, the rounding of ``f``
  divided by the step (``max|x|`` for functions such as a loss ``lse(z) − z_t``,
  whose rounding is that of their terms, not of their value).  Traceable, so
  it can run under ``jax.jit`` (the verification grid does); ``batched``
  evaluates the four points ``x ± hv, x ± 2hv`` as one ``jax.vmap`` of ``fn``
  (one copy of ``fn`` in the program instead of four).
  """
  with _x64():
    xf, unravel = ravel_pytree(jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), x))
    vf, _ = ravel_pytree(jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), v))
    xmax = jnp.max(jnp.where(jnp.isfinite(xf), jnp.abs(xf), 0.0))
    vmax = jnp.maximum(jnp.max(jnp.abs(vf)), jnp.finfo(jnp.float64).tiny)
    h = float(jnp.finfo(jnp.float64).eps) ** (1 / 3) * jnp.maximum(1.0, xmax) / vmax

    def f(z):
      out, _ = ravel_pytree(fn(unravel(z)))
      return out.astype(jnp.float64)

    steps = (h, -h, 2 * h, -2 * h)
    if batched:
      values = list(jax.vmap(lambda s: f(xf + s * vf))(jnp.stack(steps)))
    else:
      values = [f(xf + s * vf) for s in steps]

    def central(hi, lo, step):
      ok = jnp.isfinite(hi) & jnp.isfinite(lo)
      rounding = jnp.finfo(jnp.float64).eps * (jnp.abs(hi) + jnp.abs(lo) + 2 * xmax) / (2 * step)
      return jnp.where(ok, (hi - lo) / (2 * step), 0.0), jnp.where(ok, rounding, 0.0)

    d1, rounding = central(values[0], values[1], h)
    d2, _ = central(values[2], values[3], 2 * h)
    return d1, jnp.abs(d1 - d2) / 3 + rounding


def _fd_directional(fn, x, v):
  """:func:`_central_difference` as NumPy arrays: ``(derivative, error estimate)``."""
  d, err = _central_difference(fn, x, v)
  return np.asarray(d), np.asarray(err)


def _fd_jacobian(fn, x):
  """Dense [outputs, inputs] Jacobian by central differences, one input at a time, and the
  error estimate of each entry."""
  xf, unravel = ravel_pytree(x)
  cols = [_fd_directional(fn, x, unravel(jnp.asarray(b, xf.dtype)))
          for b in np.eye(xf.size, dtype=np.float64)]
  return np.stack([c for c, _ in cols], 1), np.stack([e for _, e in cols], 1)


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
  """[batch, outputs, inputs] by central differences, one coordinate of every example at once,
  and the error estimate of each entry."""
  example = _example_tree(x, k)
  _, unravel_one = ravel_pytree(jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype),
                                                       example))
  nb = int(np.prod(_batch_size(x, k)))
  out = jax.eval_shape(fn, x)
  cols, errs = [], []
  for b in np.eye(n_in, dtype=np.float64):
    one = unravel_one(jnp.asarray(b))
    v = jax.tree_util.tree_map(lambda a, leaf: jnp.broadcast_to(a, np.shape(leaf)), one, x)
    col, err = _fd_directional(fn, x, v)  # flat over the output leaves, each batch + out shape
    cols.append(_split_batch(col, out, nb))
    errs.append(_split_batch(err, out, nb))
  return np.stack(cols, axis=2), np.stack(errs, axis=2)


def _split_batch(flat, out_tree, nb: int):
  """Flat output vector (leaf-major) to [batch, per-example outputs]."""
  parts, start = [], 0
  for leaf in jax.tree_util.tree_leaves(out_tree):
    size = int(np.prod(leaf.shape))
    parts.append(flat[start:start + size].reshape(nb, -1))
    start += size
  return np.concatenate(parts, axis=1)


def _sizes(tree) -> list[int]:
  return [int(np.prod(np.shape(leaf))) for leaf in jax.tree_util.tree_leaves(tree)]


def _segment_scale(want, sizes) -> np.ndarray:
  """``max|want|`` over each segment of the given sizes along the last axis, repeated over it."""
  want = np.asarray(want, np.float64)
  out, start = np.empty_like(want), 0
  for size in sizes:
    seg = _finite_abs(want[..., start:start + size])
    out[..., start:start + size] = seg.max(axis=-1, keepdims=True, initial=0.0)
    start += size
  return out


def _magnitude(linear_fn, tangent, *, batched: bool = False, per: str = "leaf"):
  """Σ|terms| of ``linear_fn(tangent)`` flattened, and the scale rule it makes."""
  m, reason = term_magnitude(jax.vmap(linear_fn) if batched else linear_fn, tangent)
  if m is None:
    return None, f"max|ref| per {per} (Σ|terms| not propagated: {reason})"
  rule = f"max(Σ|terms| of JAX's derivative, max|ref| per {per})"
  if batched:
    return m, rule
  return np.asarray(ravel_pytree(m)[0], np.float64), rule


# ---------------------------------------------------------------------------
# Public checks
# ---------------------------------------------------------------------------

_JAC_METHODS = ("jacfwd", "jacrev", "fd")


def _check(kind, got, x, methods, references, rtol, atol, index_of, *, n, sizes,
           magnitude, scale_rule) -> CheckResult:
  """Compares ``got`` with ``references[m]()`` (``(want, extra allowance)``) for each ``m``."""
  got_v = np.asarray(ravel_pytree(got)[0], np.float64)
  dtype = _low_dtype((x, got))
  errors = []
  for m in methods:
    if m not in references:
      raise ValueError(f"check_{kind}: unknown method {m!r}; use one of {tuple(references)}.")
    want, extra = references[m]()
    b = bound(dtype, n, fd=(m == "fd"), rtol=rtol, atol=atol)
    errors.append(compare(got_v, want, m, bound=b, magnitude=magnitude,
                          scale=_segment_scale(want, sizes), extra_atol=extra,
                          index_of=index_of, scale_rule=scale_rule))
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
  nb, m_out, n_in = got_m.shape
  out_index, in_index = _flat_index(out_one), _flat_index(in_one)

  def index_of(pos):
    b, rest = divmod(pos, m_out * n_in)
    i, j = divmod(rest, n_in)
    lead = tuple(int(a) for a in np.unravel_index(b, batch)) if k else ()
    return (*lead, *out_index(i), *in_index(j))

  magnitude, scale_rule = _jacobian_magnitude(fn, x, k, n_in, nb)
  dtype = _low_dtype((x, got))
  errors = []
  for m in methods:
    extra = None
    if m == "fd":
      want, extra = (_fd_batched_jacobian(fn, x, k, n_in) if k else
                     (a.reshape(1, m_out, n_in) for a in _fd_jacobian(fn, x)))
      extra = 2 * extra
    else:
      want = _jac_matrix(reference[m](x), out_one, in_one, k)
    scale = _segment_scale(np.swapaxes(_segment_scale(want, _sizes(in_one)), 1, 2),
                           _sizes(out_one))
    b = bound(dtype, max(m_out, n_in), fd=(m == "fd"), rtol=rtol, atol=atol)
    errors.append(compare(got_m, want, m, bound=b, magnitude=magnitude,
                          scale=np.swapaxes(scale, 1, 2), extra_atol=extra,
                          index_of=index_of, scale_rule=scale_rule))
  return CheckResult("jacobian", jnp.dtype(dtype).name, got_m.shape[1:] if not k else
                     (*batch, m_out, n_in), tuple(errors))


def _jacobian_magnitude(fn, x, k: int, n_in: int, nb: int):
  """Σ|terms| of every Jacobian entry in JAX's JVP program, [batch, outputs, inputs]."""
  _, lin = jax.linearize(fn, x)
  example = _example_tree(x, k)
  _, unravel_one = ravel_pytree(jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype),
                                                       example))
  basis = jax.vmap(unravel_one)(jnp.eye(n_in, dtype=ravel_pytree(x)[0].dtype))
  tangents = jax.tree_util.tree_map(
      lambda a, leaf: jnp.broadcast_to(a.reshape((n_in,) + (1,) * k + a.shape[1:]),
                                       (n_in, *np.shape(leaf))), basis, x)
  m, rule = _magnitude(lin, tangents, batched=True, per="block of an example")
  if m is None:
    return None, rule
  leaves = [np.asarray(leaf, np.float64).reshape(n_in, nb, -1)
            for leaf in jax.tree_util.tree_leaves(m)]
  return np.transpose(np.concatenate(leaves, axis=2), (1, 2, 0)), rule


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
  _check_float(x, "x")
  out = jax.eval_shape(loss_fn, x)
  if jax.tree_util.tree_leaves(out)[0].shape != () or len(jax.tree_util.tree_leaves(out)) != 1:
    raise ValueError(f"check_grad: loss_fn(x) must be a scalar, got {out}.")
  got = grad_fn(x)
  _same_structure(got, jax.eval_shape(jax.grad(loss_fn), x), "grad_fn(x)", "jax.grad(loss_fn)(x)")
  _, pullback = jax.vjp(loss_fn, x)
  one = jax.tree_util.tree_map(lambda s: jnp.ones(s.shape, s.dtype), out)
  magnitude, scale_rule = _magnitude(lambda c: pullback(c)[0], one)

  def fd():
    jac, err = _fd_jacobian(loss_fn, x)
    return jac[0], 2 * err[0]

  references = {"grad": lambda: (ravel_pytree(pullback(one)[0])[0], None), "fd": fd}
  return _check("grad", got, x, methods, references, rtol, atol, _flat_index(x),
                n=sum(_sizes(x)), sizes=_sizes(x), magnitude=magnitude, scale_rule=scale_rule)


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
  _check_float(x, "x")
  _check_float(tangent, "tangent")
  _same_structure(tangent, x, "tangent", "x")
  got = jvp_fn(x, tangent)
  out = jax.eval_shape(fn, x)
  _same_structure(got, out, "jvp_fn(x, tangent)", "fn(x)")
  _, lin = jax.linearize(fn, x)
  magnitude, scale_rule = _magnitude(lin, tangent)

  def fd():
    d, err = _fd_directional(fn, x, tangent)
    return d, 2 * err

  references = {"jvp": lambda: (ravel_pytree(lin(tangent))[0], None), "fd": fd}
  return _check("jvp", got, x, methods, references, rtol, atol, _flat_index(out),
                n=max(sum(_sizes(x)), sum(_sizes(out))), sizes=_sizes(out),
                magnitude=magnitude, scale_rule=scale_rule)


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
  _check_float(x, "x")
  _check_float(cotangent, "cotangent")
  out = jax.eval_shape(fn, x)
  _same_structure(cotangent, out, "cotangent", "fn(x)")
  got = vjp_fn(x, cotangent)
  _same_structure(got, x, "vjp_fn(x, cotangent)", "x")
  _, pullback = jax.vjp(fn, x)
  magnitude, scale_rule = _magnitude(lambda c: pullback(c)[0], cotangent)
  u = np.asarray(ravel_pytree(cotangent)[0], np.float64)

  def fd():
    jac, err = _fd_jacobian(fn, x)
    return u @ jac, 2 * (np.abs(u) @ err)

  references = {"vjp": lambda: (ravel_pytree(pullback(cotangent)[0])[0], None), "fd": fd}
  return _check("vjp", got, x, methods, references, rtol, atol, _flat_index(x),
                n=max(sum(_sizes(x)), sum(_sizes(out))), sizes=_sizes(x),
                magnitude=magnitude, scale_rule=scale_rule)
