"""The verification grid behind ``softmax-jax verify``.

Every row compares one derivative path (or value) of one function, for one
dtype, class count and logit scale, with a float64 NumPy reference computed
from the same rounded inputs (``softmax_jax._reference``).  Rows for
``jax.nn`` and optax on the same inputs are reported beside ours; they never
affect the exit status.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from . import _checks
from . import _reference as ref
from ._jacobian import softmax_jacobian, softmax_jvp, softmax_vjp
from ._losses import (
  binary_cross_entropy,
  cross_entropy,
  cross_entropy_grad,
  cross_entropy_with_integer_labels,
)
from ._softmax import log_softmax, logsumexp, sigmoid, sigmoid_derivative, softmax
from .verify import _fd_directional, _tolerances, _x64, compare

FULL = {"dtypes": ("float64", "float32", "bfloat16", "float16"),
        "classes": (2, 10, 1000, 32768),
        "scales": ("1", "10", "100", "1e4", "-inf", "masked")}
QUICK = {"dtypes": ("float64", "bfloat16"), "classes": (10,), "scales": ("1", "-inf")}
DENSE_MAX = 1000  # above this class count Jacobians are checked through products


@dataclasses.dataclass(frozen=True)
class Row:
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


# Each check yields (function, variant, method, impl, got, want[, magnitude]); the optional
# magnitude is Σ|terms| behind each entry (see verify.compare).
Check = Callable[[Case], Iterator[tuple]]


def _sum_rows(f):
  return lambda x: jnp.sum(f(x))


def _jac_paths(fn, case, jac_ref=None):
  """jacfwd / jacrev paths, dense for small C and as products for large C."""
  x, v = case.x, case.v
  if case.classes <= DENSE_MAX and jac_ref is not None:
    # rows are independent: keep the diagonal blocks of the [rows, C, rows, C] Jacobian
    yield "jacfwd", jnp.einsum("bibj->bij", jax.jacfwd(fn)(x)), jac_ref
    yield "jacrev", jnp.einsum("bibj->bij", jax.jacrev(fn)(x)), jac_ref
  else:
    yield "jacfwd", jax.jvp(fn, (x,), (v,))[1], None
    yield "jacrev", jax.vjp(fn, x)[1](v)[0], None  # J is symmetric: the caller's J v


def check_softmax(case: Case):
  w, m = case.where, case.mask
  fx = lambda x: softmax(x, where=w)  # noqa: E731
  yield "softmax", "", "value", "softmax_jax", fx(case.x), ref.softmax(case.x, -1, m)
  small = case.classes <= DENSE_MAX
  jac = ref.softmax_jacobian(case.x, m) if small else None
  jv = ref.softmax_jvp(case.x, case.v, m)
  mag = ref.softmax_jvp_magnitude(case.x, case.v, m)
  if small and w is None:
    yield "softmax_jacobian", "", "analytic", "softmax_jax", softmax_jacobian(case.x), jac
  if w is None:
    yield "softmax_jvp", "", "analytic", "softmax_jax", softmax_jvp(case.x, case.v), jv, mag
    yield "softmax_vjp", "", "analytic", "softmax_jax", softmax_vjp(case.x, case.v), jv, mag
  for impl, f in (("softmax_jax", fx), ("jax.nn", lambda x: jax.nn.softmax(x, where=w))):
    for method, got, want in _jac_paths(f, case, jac):
      if want is None:
        yield "softmax", "", method, impl, got, jv, mag
      else:
        yield "softmax", "", method, impl, got, want
  if case.dtype == "float64":
    yield "softmax", "", "fd", "softmax_jax", _fd(fx, case.x, case.v), jv, mag
  if w is None and case.scale != "-inf":
    ft = lambda x: softmax(x, temperature=2.0)  # noqa: E731
    yield "softmax", "T=2", "value", "softmax_jax", ft(case.x), ref.softmax(ref.f64(case.x) / 2)
    yield ("softmax", "T=2", "jacrev", "softmax_jax", jax.vjp(ft, case.x)[1](case.v)[0],
           ref.softmax_jvp(ref.f64(case.x) / 2, case.v) / 2)


def check_log_softmax(case: Case):
  w, m = case.where, case.mask
  want_jvp = ref.log_softmax_jvp(case.x, case.v, m)
  want_vjp = ref.log_softmax_vjp(case.x, case.v, m)
  for impl, f in (("softmax_jax", lambda x: log_softmax(x, where=w)),
                  ("jax.nn", lambda x: jax.nn.log_softmax(x, where=w))):
    yield "log_softmax", "", "value", impl, f(case.x), ref.log_softmax(case.x, -1, m)
    yield ("log_softmax", "", "jacfwd", impl, jax.jvp(f, (case.x,), (case.v,))[1], want_jvp,
           ref.log_softmax_jvp_magnitude(case.x, case.v, m))
    yield ("log_softmax", "", "jacrev", impl, jax.vjp(f, case.x)[1](case.v)[0], want_vjp,
           ref.log_softmax_vjp_magnitude(case.x, case.v, m))
  if case.dtype == "float64":
    yield ("log_softmax", "", "fd", "softmax_jax", _fd(lambda x: log_softmax(x, where=w),
                                                       case.x, case.v), want_jvp,
           ref.log_softmax_jvp_magnitude(case.x, case.v, m))


def check_logsumexp(case: Case):
  w, m = case.where, case.mask
  y = ref.softmax(case.x, -1, m)
  for impl, f in (("softmax_jax", lambda x: logsumexp(x, where=w)),
                  ("jax.nn", lambda x: jax.nn.logsumexp(x, axis=-1, where=w))):
    yield "logsumexp", "", "value", impl, f(case.x), ref.logsumexp(case.x, -1, m)
    yield "logsumexp", "", "grad", impl, jax.grad(_sum_rows(f))(case.x), y
  if case.dtype == "float64":
    f = lambda x: logsumexp(x, where=w)  # noqa: E731
    yield ("logsumexp", "", "fd", "softmax_jax", _fd(f, case.x, case.v),
           np.sum(y * ref.f64(case.v), -1), np.sum(y * np.abs(ref.f64(case.v)), -1))


def check_sigmoid(case: Case):
  if case.scale in ("-inf", "masked"):
    return
  x = case.x
  yield "sigmoid", "", "value", "softmax_jax", sigmoid(x), ref.sigmoid(x)
  d = ref.sigmoid_derivative(x)
  yield "sigmoid", "", "analytic", "softmax_jax", sigmoid_derivative(x), d
  yield "sigmoid", "", "grad", "softmax_jax", jax.grad(_sum_rows(sigmoid))(x), d
  yield "sigmoid", "", "grad", "jax.nn", jax.grad(_sum_rows(jax.nn.sigmoid))(x), d


def _xent_rows(name, variant, case, loss, q, baseline=None):
  """value / grad / Hessian / fd rows of a per-row loss ``loss(x) -> [rows]``."""
  m = case.mask
  want_g = ref.xent_grad(case.x, q, m)
  impls = [("softmax_jax", loss)] + ([baseline] if baseline else [])
  for impl, f in impls:
    yield name, variant, "value", impl, f(case.x), ref.xent(case.x, q, m)
    yield name, variant, "grad", impl, jax.grad(_sum_rows(f))(case.x), want_g
  if impls[0][1] is loss:
    if case.classes <= DENSE_MAX:
      full = jax.hessian(_sum_rows(loss))(case.x)  # [rows, C, rows, C], block diagonal
      hess = jnp.einsum("bibj->bij", full)
      yield name, variant, "hessian", "softmax_jax", hess, ref.xent_hessian(case.x, q, m)
    else:
      hvp = jax.jvp(jax.grad(_sum_rows(loss)), (case.x,), (case.v,))[1]
      yield (name, variant, "hessian", "softmax_jax", hvp, ref.xent_hvp(case.x, q, case.v, m),
             np.sum(q, -1, keepdims=True) * ref.softmax_jvp_magnitude(case.x, case.v, m))
    if case.dtype == "float64":
      yield (name, variant, "fd", "softmax_jax", _fd(_sum_rows(loss), case.x, case.v),
             np.sum(want_g * ref.f64(case.v)), np.sum(np.abs(want_g * ref.f64(case.v))))


def check_cross_entropy(case: Case):
  w, m = case.where, case.mask
  for eps in (0.0, 0.1):
    variant = f"smoothing={eps}" if eps else ""
    def loss(x, eps=eps):
      return cross_entropy(x, case.targets, where=w, label_smoothing=eps, reduction="none")
    q = ref.soft_targets(case.x, case.targets, eps=eps, where=m)
    base = None if eps else ("optax", lambda x: optax_soft(x, case.targets, w))
    yield from _xent_rows("cross_entropy", variant, case, loss, q, base)
  if w is None:
    yield ("cross_entropy_grad", "", "analytic", "softmax_jax",
           cross_entropy_grad(case.x, case.targets),
           ref.xent_grad(case.x, ref.soft_targets(case.x, case.targets)))


INT_VARIANTS = {
    "": {},
    "weights": {"weights": True},
    "ignore_index": {"ignore_index": -100},
    "smoothing=0.1": {"eps": 0.1},
    "weights+ignore+smoothing": {"weights": True, "ignore_index": -100, "eps": 0.1},
}


def check_integer_labels(case: Case):
  w, m = case.where, case.mask
  for variant, opts in INT_VARIANTS.items():
    labels = case.labels
    if "ignore_index" in opts:
      labels = labels.at[0].set(-100)
    cw = case.weights if opts.get("weights") else None
    eps = opts.get("eps", 0.0)
    ignore = opts.get("ignore_index")
    def loss(x, labels=labels, cw=cw, eps=eps, ii=ignore):
      return cross_entropy_with_integer_labels(x, labels, where=w, class_weights=cw,
                                               ignore_index=ii, label_smoothing=eps,
                                               reduction="none")
    q, _ = ref.xent_targets(case.x, np.asarray(labels), weights=cw,
                            ignore_index=opts.get("ignore_index"), eps=eps, where=m)
    base = None if opts else ("optax", lambda x, labels=labels: optax_int(x, labels, w))
    yield from _xent_rows("cross_entropy_with_integer_labels", variant, case, loss, q, base)


def check_binary(case: Case):
  if case.scale in ("-inf", "masked"):
    return
  y = (ref.f64(case.targets) > 1.0 / case.classes).astype(np.float64)
  f = lambda x: binary_cross_entropy(x, y, reduction="none")  # noqa: E731
  yield "binary_cross_entropy", "", "value", "softmax_jax", f(case.x), \
      ref.binary_cross_entropy(case.x, y)
  want = ref.binary_cross_entropy_grad(case.x, y)
  yield "binary_cross_entropy", "", "grad", "softmax_jax", jax.grad(_sum_rows(f))(case.x), want
  if case.dtype == "float64":
    yield ("binary_cross_entropy", "", "fd", "softmax_jax", _fd(_sum_rows(f), case.x, case.v),
           np.sum(want * ref.f64(case.v)), np.sum(np.abs(want * ref.f64(case.v))))


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


class FD(np.ndarray):
  """A finite-difference result carrying its Richardson error estimate (``.error``)."""


def _fd(f, x, v):
  """Directional central difference of ``f`` at ``x`` along ``v`` in float64."""
  value, error = _fd_directional(f, x, v, with_error=True)
  shape = jax.eval_shape(f, x).shape
  out = value.reshape(shape).view(FD)
  out.error = error.reshape(shape)
  return out


def run_case(dtype: str, classes: int, scale: str, functions=None) -> list[Row]:
  """All rows of one grid point (``functions`` restricts to some of :data:`CHECKS`)."""
  rows = []
  with _x64():
    case = make_case(dtype, classes, scale)
    for name, check in CHECKS.items():
      if functions and name not in functions:
        continue
      try:
        rows.extend(_check_rows(check, case))
      except Exception as err:  # noqa: BLE001 - a check that cannot run is a failed row
        nan = float("nan")
        rows.append(Row(name, _checks.error_line(err, 120), case.dtype, case.classes,
                        case.scale, "error", "softmax_jax", nan, nan, nan, nan, "FAIL"))
  return rows


def _check_rows(check, case: Case) -> list[Row]:
  """The rows of one check at one grid point: each comparison against its tolerance."""
  rows = []
  for function, variant, method, impl, got, want, *magnitude in check(case):
    dt = case.dtype
    rtol, atol = _tolerances(dt, None, None, fd=(method == "fd"))
    extra = 2 * got.error if method == "fd" else None
    err = compare(np.asarray(got), want, method, rtol=rtol, atol=atol,
                  magnitude=magnitude[0] if magnitude else None, extra_atol=extra)
    if impl == "softmax_jax":
      status = "ok" if err.passed else "FAIL"
    else:
      status = "(within)" if err.passed else "(beyond)"
    rows.append(Row(function, variant, dt, case.classes, case.scale, method, impl,
                    err.max_abs_err, err.max_rel_err, rtol, atol, status))
  return rows


def grid(spec: dict) -> Iterator[tuple[str, int, str]]:
  for dtype in spec["dtypes"]:
    for classes in spec["classes"]:
      for scale in spec["scales"]:
        yield dtype, classes, scale


def run(spec: dict, functions=None, progress=None) -> list[Row]:
  """Runs the grid ``spec`` (see :data:`FULL`, :data:`QUICK`); ``progress(i, n, point)``."""
  points = list(grid(spec))
  rows: list[Row] = []
  for i, point in enumerate(points):
    if progress is not None:
      progress(i, len(points), point)
    rows.extend(run_case(*point, functions=functions))
  return rows


HEADER = ("function", "variant", "dtype", "C", "scale", "method", "impl", "max abs err",
          "max rel err", "tolerance", "status")


def format_table(rows: list[Row]) -> str:
  body = [(r.function, r.variant or "-", r.dtype, str(r.classes), r.scale, r.method, r.impl,
           f"{r.max_abs_err:.2e}", f"{r.max_rel_err:.2e}", f"{r.rtol:.1e}", r.status)
          for r in rows]
  widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
            for i, h in enumerate(HEADER)]
  line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
  return "\n".join([line(HEADER), line(["-" * w for w in widths]), *map(line, body)])


def summary(rows: list[Row]) -> str:
  ours = [r for r in rows if r.impl == "softmax_jax"]
  failed = [r for r in ours if r.status == "FAIL"]
  base = [r for r in rows if r.impl != "softmax_jax"]
  beyond = sum(r.status == "(beyond)" for r in base)
  return (f"{len(ours) - len(failed)} passed, {len(failed)} failed "
          f"(softmax_jax rows; jax.nn/optax beyond tolerance on {beyond} of {len(base)} rows)")
