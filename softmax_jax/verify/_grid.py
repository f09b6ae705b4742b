"""The verification grid behind ``softmax-jax verify``.

Every row compares one derivative path (or value) of one function, for one
dtype, class count and logit scale, with a float64 NumPy reference computed
from the same rounded inputs (``softmax_jax.verify._references``), under the bound of
``softmax_jax.verify._tolerances``: ``|got − ref| ≤ rtol·max(M, S)`` with ``S`` the
largest reference entry of the example (row), ``M`` the ``Σ|terms|`` behind
each entry where the check knows it, and ``rtol = c ε + 2 ε_acc √n`` with
``n`` the class count (1 for elementwise functions).  Rows for ``jax.nn`` and
optax on the same inputs are reported beside ours; they never affect the exit
status.

Each check is a generator of :class:`Comparison` whose ``got`` sides are
evaluated together in one compiled program per check (:class:`Evaluator`),
so a check compiles once rather than once per primitive, and grid points that
differ only in the logit scale reuse it.  What a check yields depends only on
the dtype, the class count and whether there is a ``where`` mask, never on the
data, so the program and the references line up.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import zlib
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from softmax_jax import _arguments
from softmax_jax._jacobian import softmax_jacobian, softmax_jvp, softmax_vjp
from softmax_jax._softmax import log_softmax, logsumexp, sigmoid, sigmoid_derivative, softmax
from softmax_jax.losses._cross_entropy import (
  binary_cross_entropy,
  cross_entropy,
  cross_entropy_grad,
  cross_entropy_with_integer_labels,
)
from softmax_jax.verify import _references as ref
from softmax_jax.verify._derivatives import _central_difference, _x64, compare
from softmax_jax.verify._tolerances import bound

FULL = {"dtypes": ("float64", "float32", "bfloat16", "float16"),
        "classes": (2, 10, 1000, 32768),
        "scales": ("1", "10", "100", "1e4", "-inf", "masked")}
QUICK = {"dtypes": ("float64", "bfloat16"), "classes": (10,), "scales": ("1", "-inf")}
DENSE_MAX = 1000  # above this class count Jacobians are checked through products


@dataclasses.dataclass(frozen=True)
class Row:
  """One comparison: ``error`` (``|got − ref|`` where it is closest to its bound) against
  ``bound`` (``rtol·scale`` there), with the rule behind each."""

  function: str
  variant: str
  dtype: str
  classes: int
  scale: str
  method: str
  impl: str
  max_abs_err: float
  max_rel_err: float
  rtol: float
  atol: float
  status: str
  error: float = float("nan")
  bound: float = float("nan")
  bound_scale: float = float("nan")
  n: int = 0
  rule: str = ""        # where rtol comes from
  scale_rule: str = ""  # what the scale is


_ARRAYS = ("x", "where", "labels", "targets", "v", "weights")


@dataclasses.dataclass
class Case:
  """One point of the grid: rounded inputs and the float64 copies the references use."""

  dtype: str
  classes: int
  scale: str
  x: jax.Array
  where: jax.Array | None
  labels: jax.Array
  targets: jax.Array
  v: jax.Array
  weights: jax.Array

  @property
  def mask(self):
    return None if self.where is None else np.asarray(self.where)


def make_case(dtype: str, classes: int, scale: str) -> Case:
  seed = zlib.crc32(f"{dtype}/{classes}/{scale}".encode())
  rng = np.random.default_rng(seed)
  rows = 3 if classes <= DENSE_MAX else 2
  s = 10.0 if scale in ("-inf", "masked") else float(scale)
  limit = 0.25 * float(jnp.finfo(jnp.dtype(dtype)).max)  # float16 at 1e4 is clipped here
  x = np.clip(rng.normal(size=(rows, classes)) * s, -limit, limit)
  labels = rng.integers(0, classes, rows)
  mask = None
  if scale in ("-inf", "masked"):
    mask = rng.random((rows, classes)) < 0.7
    mask[np.arange(rows), labels] = True
    mask[-1] = False  # a row with no valid entry
    if scale == "-inf":
      x = np.where(mask, x, -np.inf)
  valid_now = np.ones_like(x, bool) if mask is None else mask
  t = rng.random((rows, classes)) * valid_now
  t = t / np.maximum(t.sum(-1, keepdims=True), 1e-300)
  jd = jnp.dtype(dtype)
  return Case(dtype, classes, scale, jnp.asarray(x).astype(jd),
              None if scale != "masked" else jnp.asarray(mask),
              jnp.asarray(labels), jnp.asarray(t).astype(jd),
              jnp.asarray(rng.normal(size=(rows, classes))).astype(jd),
              jnp.asarray(rng.random(classes) + 0.5).astype(jd))


class Comparison(NamedTuple):
  """One row of a check, lazily: ``got`` runs traced under ``jax.jit`` (an ``"fd"`` row's
  returns ``(value, error estimate)``), ``want`` and ``magnitude`` run in NumPy."""

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


def _sum_rows(f):
  return lambda x: jnp.sum(f(x))


def _diagonal_blocks(jac):
  """Rows are independent: the diagonal blocks of a [rows, C, rows, C] Jacobian."""
  return jnp.einsum("bibj->bij", jac)


# Magnitudes: the Σ|terms| behind each entry, the scale its rounding is proportional to.  The
# probabilities y_c = e^{z_c − m} / Σ are taken to carry a relative error ε(1 + |z_c − m|): the
# exponential turns the rounding of its argument into a relative error of its result, which
# matters where a whole example lies in the tail of a saturated softmax.


def _probabilities(x, where=None):
  """``y`` and ``y·(1 + |z − max z|)``, the size of the rounding ``y`` carries."""
  y = ref.softmax(x, -1, where)
  z = ref.f64(x)
  v = ref.valid(z, where)
  m = np.max(np.where(v, z, -np.inf), axis=-1, keepdims=True)
  shifted = np.where(v & np.isfinite(m), z - np.where(np.isfinite(m), m, 0.0), 0.0)
  return y, y * (1 + np.abs(shifted))


def _softmax_product_magnitude(x, v, where=None):
  """Of ``y ⊙ (v − ⟨y, v⟩)``: ``ỹ ⊙ (|v| + ⟨y, |v|⟩) + y ⟨ỹ, |v|⟩``."""
  y, yc = _probabilities(x, where)
  av = np.abs(ref.f64(v))
  return (yc * (av + np.sum(y * av, -1, keepdims=True))
          + y * np.sum(yc * av, -1, keepdims=True))


def _log_softmax_jvp_magnitude(x, v, where=None):
  """Of ``v − ⟨y, v⟩``: ``|v| + ⟨ỹ, |v|⟩``."""
  _, yc = _probabilities(x, where)
  av = np.abs(ref.f64(v))
  return av + np.sum(yc * av, -1, keepdims=True)


def _log_softmax_vjp_magnitude(x, u, where=None):
  """Of ``u − y Σu`` over valid entries: ``|u| + ỹ Σ|u|``."""
  _, yc = _probabilities(x, where)
  au = np.where(ref.valid(x, where), np.abs(ref.f64(u)), 0.0)
  return au + yc * np.sum(au, -1, keepdims=True)


def _jacobian_magnitude(x, where=None):
  """Of ``diag(y) − y yᵀ``: ``ỹ_i δ_ij + ỹ_i y_j + y_i ỹ_j``."""
  y, yc = _probabilities(x, where)
  return (yc[..., :, None] * np.eye(y.shape[-1]) + yc[..., :, None] * y[..., None, :]
          + y[..., :, None] * yc[..., None, :])


def check_softmax(case: Case):
  c, w = case, case.where
  fx = lambda x: softmax(x, where=w)  # noqa: E731
  y = functools.cache(lambda: ref.softmax(c.x, -1, c.mask))
  jac = functools.cache(lambda: ref.softmax_jacobian(c.x, c.mask))
  jac_mag = functools.cache(lambda: _jacobian_magnitude(c.x, c.mask))
  jv = functools.cache(lambda: ref.softmax_jvp(c.x, c.v, c.mask))
  mag = functools.cache(lambda: _softmax_product_magnitude(c.x, c.v, c.mask))
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
    yield Comparison("softmax", "", "fd", "softmax_jax", lambda: _fd(fx, c.x, c.v), jv, mag)
  if w is None:
    ft = lambda x: softmax(x, temperature=2.0)  # noqa: E731
    yield Comparison("softmax", "T=2", "value", "softmax_jax", lambda: ft(c.x),
                     lambda: ref.softmax(ref.f64(c.x) / 2))
    yield Comparison("softmax", "T=2", "jacrev", "softmax_jax",
                     lambda: jax.vjp(ft, c.x)[1](c.v)[0],
                     lambda: ref.softmax_jvp(ref.f64(c.x) / 2, c.v) / 2,
                     lambda: _softmax_product_magnitude(ref.f64(c.x) / 2, c.v) / 2)


def check_log_softmax(case: Case):
  c, w = case, case.where
  want_jvp = lambda: ref.log_softmax_jvp(c.x, c.v, c.mask)  # noqa: E731
  jvp_mag = lambda: _log_softmax_jvp_magnitude(c.x, c.v, c.mask)  # noqa: E731
  for impl, f in (("softmax_jax", lambda x: log_softmax(x, where=w)),
                  ("jax.nn", lambda x: jax.nn.log_softmax(x, where=w))):
    yield Comparison("log_softmax", "", "value", impl, lambda f=f: f(c.x),
                     lambda: ref.log_softmax(c.x, -1, c.mask))
    yield Comparison("log_softmax", "", "jacfwd", impl,
                     lambda f=f: jax.jvp(f, (c.x,), (c.v,))[1], want_jvp, jvp_mag)
    yield Comparison("log_softmax", "", "jacrev", impl, lambda f=f: jax.vjp(f, c.x)[1](c.v)[0],
                     lambda: ref.log_softmax_vjp(c.x, c.v, c.mask),
                     lambda: _log_softmax_vjp_magnitude(c.x, c.v, c.mask))
  if c.dtype == "float64":
    yield Comparison("log_softmax", "", "fd", "softmax_jax",
                     lambda: _fd(lambda x: log_softmax(x, where=w), c.x, c.v), want_jvp, jvp_mag)


def check_logsumexp(case: Case):
  c, w = case, case.where
  y = lambda: ref.softmax(c.x, -1, c.mask)  # noqa: E731
  for impl, f in (("softmax_jax", lambda x: logsumexp(x, where=w)),
                  ("jax.nn", lambda x: jax.nn.logsumexp(x, axis=-1, where=w))):
    yield Comparison("logsumexp", "", "value", impl, lambda f=f: f(c.x),
                     lambda: ref.logsumexp(c.x, -1, c.mask))
    yield Comparison("logsumexp", "", "grad", impl, lambda f=f: jax.grad(_sum_rows(f))(c.x), y,
                     lambda: _probabilities(c.x, c.mask)[1])
  if c.dtype == "float64":
    f = lambda x: logsumexp(x, where=w)  # noqa: E731
    yield Comparison("logsumexp", "", "fd", "softmax_jax", lambda: _fd(f, c.x, c.v),
                     lambda: np.sum(y() * ref.f64(c.v), -1),
                     lambda: np.sum(_probabilities(c.x, c.mask)[1] * np.abs(ref.f64(c.v)), -1))


def check_sigmoid(case: Case):
  c = case
  d = lambda: ref.sigmoid_derivative(c.x)  # noqa: E731
  s = lambda: ref.sigmoid(c.x)  # noqa: E731
  grad_mag = lambda: s() * (1 + s())  # noqa: E731  Σ|terms| of σ(1 − σ), as autodiff forms it
  yield Comparison("sigmoid", "", "value", "softmax_jax", lambda: sigmoid(c.x), s, n=1,
                   finite_only=True)
  yield Comparison("sigmoid", "", "analytic", "softmax_jax", lambda: sigmoid_derivative(c.x), d,
                   n=1, finite_only=True)
  yield Comparison("sigmoid", "", "grad", "softmax_jax",
                   lambda: jax.grad(_sum_rows(sigmoid))(c.x), d, grad_mag, n=1, finite_only=True)
  yield Comparison("sigmoid", "", "grad", "jax.nn",
                   lambda: jax.grad(_sum_rows(jax.nn.sigmoid))(c.x), d, grad_mag, n=1,
                   finite_only=True)


def _xent_value_magnitude(x, q, where):
  """Σ|terms| of ``Σ_c q_c (lse − z_c)``: ``Σ_c q_c (|lse| + |z_c|)`` over valid classes."""
  v = ref.valid(x, where)
  z = np.where(v, ref.f64(x), 0.0)
  lse = np.where(v.any(-1), ref.logsumexp(x, -1, where), 0.0)
  return np.sum(np.where(v, q * (np.abs(lse)[..., None] + np.abs(z)), 0.0), -1)


def _xent_rows(name, variant, case, loss, q, baseline=None):
  """value / grad / Hessian / fd rows of a per-row loss ``loss(x) -> [rows]``; ``q()`` gives
  its effective targets."""
  c = case
  total = lambda: np.sum(q(), -1, keepdims=True)  # noqa: E731
  want_g = functools.cache(lambda: ref.xent_grad(c.x, q(), c.mask))
  grad_mag = lambda: total() * _probabilities(c.x, c.mask)[1] + q()  # noqa: E731
  impls = [("softmax_jax", loss)] + ([baseline] if baseline else [])
  for impl, f in impls:
    yield Comparison(name, variant, "value", impl, lambda f=f: f(c.x),
                     lambda: ref.xent(c.x, q(), c.mask),
                     lambda: _xent_value_magnitude(c.x, q(), c.mask))
    yield Comparison(name, variant, "grad", impl, lambda f=f: jax.grad(_sum_rows(f))(c.x),
                     want_g, grad_mag)
  if c.classes <= DENSE_MAX:
    yield Comparison(name, variant, "hessian", "softmax_jax",
                     lambda: _diagonal_blocks(jax.hessian(_sum_rows(loss))(c.x)),
                     lambda: ref.xent_hessian(c.x, q(), c.mask),
                     lambda: total()[..., None] * _jacobian_magnitude(c.x, c.mask))
  else:
    yield Comparison(name, variant, "hessian", "softmax_jax",
                     lambda: jax.jvp(jax.grad(_sum_rows(loss)), (c.x,), (c.v,))[1],
                     lambda: ref.xent_hvp(c.x, q(), c.v, c.mask),
                     lambda: total() * _softmax_product_magnitude(c.x, c.v, c.mask))
  if c.dtype == "float64":
    yield Comparison(name, variant, "fd", "softmax_jax", lambda: _fd(_sum_rows(loss), c.x, c.v),
                     lambda: np.sum(want_g() * ref.f64(c.v)),
                     lambda: np.sum(np.abs(want_g() * ref.f64(c.v))), n=int(np.size(c.x)))


def check_cross_entropy(case: Case):
  c, w = case, case.where
  for eps in (0.0, 0.1):
    variant = f"smoothing={eps}" if eps else ""

    def loss(x, eps=eps):
      return cross_entropy(x, c.targets, where=w, label_smoothing=eps, reduction="none")

    q = functools.cache(lambda eps=eps: ref.soft_targets(c.x, c.targets, eps=eps, where=c.mask))
    base = None if eps else ("optax", lambda x: optax_soft(x, c.targets, w))
    yield from _xent_rows("cross_entropy", variant, c, loss, q, base)
  if w is None:
    t = lambda: ref.soft_targets(c.x, c.targets)  # noqa: E731
    yield Comparison("cross_entropy_grad", "", "analytic", "softmax_jax",
                     lambda: cross_entropy_grad(c.x, c.targets), lambda: ref.xent_grad(c.x, t()),
                     lambda: np.sum(t(), -1, keepdims=True) * _probabilities(c.x)[1] + t())


INT_VARIANTS = {
    "": {},
    "weights": {"weights": True},
    "ignore_index": {"ignore_index": -100},
    "smoothing=0.1": {"eps": 0.1},
    "weights+ignore+smoothing": {"weights": True, "ignore_index": -100, "eps": 0.1},
}


def check_integer_labels(case: Case):
  c, w = case, case.where
  for variant, opts in INT_VARIANTS.items():
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
        c.x, np.asarray(labels), weights=cw, ignore_index=ii, eps=eps, where=c.mask)[0])
    base = None if opts else ("optax", lambda x, labels=labels: optax_int(x, labels, w))
    yield from _xent_rows("cross_entropy_with_integer_labels", variant, c, loss, q, base)


def check_binary(case: Case):
  c = case
  y = functools.cache(lambda: (ref.f64(c.targets) > 1.0 / c.classes).astype(np.float64))
  labels = lambda: (c.targets.astype(jnp.float64) > 1.0 / c.classes).astype(jnp.float64)  # noqa: E731
  f = lambda x: binary_cross_entropy(x, labels(), reduction="none")  # noqa: E731
  want = functools.cache(lambda: ref.binary_cross_entropy_grad(c.x, y()))
  grad_mag = lambda: ref.sigmoid(c.x) + y()  # noqa: E731  Σ|terms| of σ(z) − y
  yield Comparison("binary_cross_entropy", "", "value", "softmax_jax", lambda: f(c.x),
                   lambda: ref.binary_cross_entropy(c.x, y()), n=1, finite_only=True)
  yield Comparison("binary_cross_entropy", "", "grad", "softmax_jax",
                   lambda: jax.grad(_sum_rows(f))(c.x), want, grad_mag, n=1, finite_only=True)
  if c.dtype == "float64":
    yield Comparison("binary_cross_entropy", "", "fd", "softmax_jax",
                     lambda: _fd(_sum_rows(f), c.x, c.v), lambda: np.sum(want() * ref.f64(c.v)),
                     lambda: np.sum(np.abs(want() * ref.f64(c.v))), n=int(np.size(c.x)),
                     finite_only=True)


def optax_soft(x, t, where):
  import optax

  return optax.softmax_cross_entropy(x, t, where=where)


def optax_int(x, labels, where):
  import optax

  return optax.softmax_cross_entropy_with_integer_labels(x, labels, where=where)


CHECKS: dict[str, Check] = {
    "softmax": check_softmax, "log_softmax": check_log_softmax, "logsumexp": check_logsumexp,
    "sigmoid": check_sigmoid, "cross_entropy": check_cross_entropy,
    "cross_entropy_with_integer_labels": check_integer_labels,
    "binary_cross_entropy": check_binary,
}


def _fd(f, x, v):
  """Directional central difference of ``f`` at ``x`` along ``v`` in float64, shaped like
  ``f(x)``, and its error estimate (:func:`softmax_jax.verify._central_difference`)."""
  value, error = _central_difference(f, x, v, batched=True)
  shape = jax.eval_shape(f, x).shape
  return value.reshape(shape), error.reshape(shape)


class Evaluator:
  """Evaluates the ``got`` side of the checks, one compiled program per check and shape.

  A program is traced (and lowered) in the calling thread, under its ``x64``
  setting, and compiled in a pool of ``workers`` threads, so compiling one
  check overlaps tracing and compiling the next; grid points with the same
  dtype, class count and presence of a ``where`` mask share it (the logit
  scale is data).  Each evaluator traces afresh, so a patched function is seen.
  """

  def __init__(self, workers: int = 2):
    def gots(arrays, name, dtype, classes):
      case = Case(dtype, classes, "", **arrays)
      return [comparison.got() for comparison in CHECKS[name](case)]

    self._jitted = jax.jit(gots, static_argnums=(1, 2, 3))
    self._pool = concurrent.futures.ThreadPoolExecutor(workers)
    self._programs: dict[tuple, concurrent.futures.Future] = {}

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self._pool.shutdown(wait=False, cancel_futures=True)

  @staticmethod
  def _arrays(case: Case) -> dict:
    return {field: getattr(case, field) for field in _ARRAYS}

  def prepare(self, name: str, case: Case) -> concurrent.futures.Future:
    """Starts compiling check ``name`` for ``case`` (once per dtype, class count and mask)."""
    key = (name, case.dtype, case.classes, case.where is None)
    if key not in self._programs:
      try:
        lowered = self._jitted.trace(self._arrays(case), name, case.dtype, case.classes).lower()
      except Exception as err:  # noqa: BLE001 - reported as a failed row when evaluated
        failed = concurrent.futures.Future()
        failed.set_exception(err)
        self._programs[key] = failed
      else:
        self._programs[key] = self._pool.submit(lowered.compile)
    return self._programs[key]

  def __call__(self, name: str, case: Case) -> list:
    return self.prepare(name, case).result()(self._arrays(case))


def run_case(dtype: str, classes: int, scale: str, functions=None,
             evaluate: Evaluator | None = None) -> list[Row]:
  """All rows of one grid point (``functions`` restricts to some of :data:`CHECKS`)."""
  if evaluate is None:
    with Evaluator() as evaluate:
      return run_case(dtype, classes, scale, functions, evaluate)
  rows = []
  with _x64():
    case = make_case(dtype, classes, scale)
    for name, check in CHECKS.items():
      if functions and name not in functions:
        continue
      try:
        rows.extend(_check_rows(list(check(case)), evaluate(name, case), case))
      except Exception as err:  # noqa: BLE001 - a check that cannot run is a failed row
        nan = float("nan")
        rows.append(Row(name, _arguments.error_line(err, 120), case.dtype, case.classes,
                        case.scale, "error", "softmax_jax", nan, nan, nan, nan, "FAIL"))
  return rows


def _example_scale(want: np.ndarray) -> np.ndarray:
  """``S``: ``max|ref|`` over each example (row) of a result with a class axis, over the
  whole result otherwise."""
  a = np.abs(np.asarray(want, np.float64))
  a = np.where(np.isfinite(a), a, 0.0)
  if a.ndim < 2:
    return np.full(a.shape, a.max(initial=0.0))
  return np.broadcast_to(a.max(axis=tuple(range(1, a.ndim)), keepdims=True), a.shape)


def _check_rows(comparisons: list[Comparison], gots: list, case: Case) -> list[Row]:
  """The rows of one check at one grid point: each comparison against its bound."""
  rows = []
  for cmp, got in zip(comparisons, gots, strict=True):
    if cmp.finite_only and case.scale in ("-inf", "masked"):
      continue
    extra = None
    if cmp.method == "fd":
      got, error = got
      extra = 2 * np.asarray(error)
    want = np.asarray(cmp.want(), np.float64)
    b = bound(case.dtype, cmp.n or case.classes, fd=(cmp.method == "fd"))
    magnitude = None if cmp.magnitude is None else cmp.magnitude()
    scale_rule = ("max|ref| of the example" if magnitude is None
                  else "max(Σ|terms|, max|ref| of the example)")
    err = compare(np.asarray(got), want, cmp.method, bound=b, magnitude=magnitude,
                  scale=_example_scale(want), extra_atol=extra, scale_rule=scale_rule)
    if cmp.impl == "softmax_jax":
      status = "ok" if err.passed else "FAIL"
    else:
      status = "(within)" if err.passed else "(beyond)"
    rows.append(Row(cmp.function, cmp.variant, case.dtype, case.classes, case.scale, cmp.method,
                    cmp.impl, err.max_abs_err, err.max_rel_err, b.rtol, b.atol, status,
                    err.error, err.allowed, err.scale, b.n, b.rule, scale_rule))
  return rows


def grid(spec: dict) -> Iterator[tuple[str, int, str]]:
  for dtype in spec["dtypes"]:
    for classes in spec["classes"]:
      for scale in spec["scales"]:
        yield dtype, classes, scale


def run(spec: dict, functions=None, progress=None) -> list[Row]:
  """Runs the grid ``spec`` (see :data:`FULL`, :data:`QUICK`); ``progress(i, n, point)``."""
  points = list(grid(spec))
  names = [name for name in CHECKS if not functions or name in functions]
  rows: list[Row] = []
  with Evaluator() as evaluate:
    with _x64():
      for point in points:  # trace every program first; they compile while the grid runs
        case = make_case(*point)
        for name in names:
          evaluate.prepare(name, case)
    for i, point in enumerate(points):
      if progress is not None:
        progress(i, len(points), point)
      rows.extend(run_case(*point, functions=functions, evaluate=evaluate))
  return rows


HEADER = ("function", "variant", "dtype", "C", "scale", "method", "impl", "max abs err",
          "max rel err", "error", "≤ bound", "= rtol", "× scale", "status")


def format_table(rows: list[Row]) -> str:
  """One line per row: the error where it is closest to its bound, the bound there
  (``rtol × scale``), and the largest absolute and relative errors; then the
  :func:`legend` of the bound."""
  body = [(r.function, r.variant or "-", r.dtype, str(r.classes), r.scale, r.method, r.impl,
           f"{r.max_abs_err:.2e}", f"{r.max_rel_err:.2e}", f"{r.error:.2e}", f"{r.bound:.2e}",
           f"{r.rtol:.1e}", f"{r.bound_scale:.1e}", r.status)
          for r in rows]
  widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
            for i, h in enumerate(HEADER)]
  line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
  return "\n".join([line(HEADER), line(["-" * w for w in widths]), *map(line, body), legend()])


def legend() -> str:
  """What the table's bound columns mean."""
  return ("error: |got − ref| at the entry closest to its bound; bound = rtol × scale there; "
          "rtol = cε + 2ε_acc√n (c = 16 for float64/float32, 4 for bfloat16/float16, summed in "
          "float32; n = C, 1 for elementwise functions; at least 1000ε₆₄^(2/3) for fd, plus its "
          "error estimate); scale = max(Σ|terms| behind the entry, max|ref| of the example); plus "
          "c·tiny for results below the dtype's range")


def summary(rows: list[Row]) -> str:
  ours = [r for r in rows if r.impl == "softmax_jax"]
  failed = [r for r in ours if r.status == "FAIL"]
  base = [r for r in rows if r.impl != "softmax_jax"]
  beyond = sum(r.status == "(beyond)" for r in base)
  return (f"{len(ours) - len(failed)} passed, {len(failed)} failed "
          f"(softmax_jax rows; jax.nn/optax beyond their bound on {beyond} of {len(base)} rows)")
