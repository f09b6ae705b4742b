"""One result against one reference under a bound: :func:`compare` and what it reports.

An entry passes when ``|got − ref| ≤ rtol·max(M, S) + atol + extra``, the bound of
``softmax_jax.verify._tolerances``: ``S`` the scale of the result (``max|ref|`` over a
leaf, a block of a Jacobian or an example of a batch, see :func:`max_per_segment`),
``M`` the ``Σ|terms|`` behind the entry where it is known, and ``extra`` a further
allowance such as a finite difference's estimated error.  :class:`MethodError` holds
the outcome against one reference method, :class:`CheckResult` those of one check.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from softmax_jax.verify._finite_differences import float64_enabled
from softmax_jax.verify._tolerances import Bound


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


def lowest_precision(tree) -> jnp.dtype:
  """The floating dtype of fewest bits among the leaves of ``tree`` (the one a bound is for)."""
  dts = [jnp.dtype(leaf.dtype) for leaf in jax.tree_util.tree_leaves(tree)]
  if not dts:
    raise ValueError("verify: nothing to compare (empty pytree).")
  return min(dts, key=lambda d: jnp.finfo(d).bits if jnp.issubdtype(d, jnp.floating) else 64)


def finite_abs(a) -> np.ndarray:
  """``|a|`` in float64 with non-finite entries set to 0 (they have no scale)."""
  a = np.abs(np.asarray(a, np.float64))
  return np.where(np.isfinite(a), a, 0.0)


def max_per_segment(want, sizes) -> np.ndarray:
  """``max|want|`` over each segment of the given sizes along the last axis, repeated over it
  (the scale ``S`` of each leaf of a flattened pytree)."""
  want = np.asarray(want, np.float64)
  out, start = np.empty_like(want), 0
  for size in sizes:
    seg = finite_abs(want[..., start:start + size])
    out[..., start:start + size] = seg.max(axis=-1, keepdims=True, initial=0.0)
    start += size
  return out


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

  Examples:
    >>> import numpy as np
    >>> from softmax_jax.verify._tolerances import bound
    >>> b = bound("float32", 3)
    >>> compare(np.array([1.0, 2.0]), np.array([1.0, 2.0]), "exact", bound=b).passed
    True
    >>> compare(np.array([1.0, 2.02]), np.array([1.0, 2.0]), "1 % off", bound=b).passed
    False
  """
  w_full = np.asarray(want, np.float64)
  g = np.asarray(got, np.float64).ravel()
  w = w_full.ravel()
  if scale is None:
    s = np.full(w.shape, finite_abs(w).max(initial=0.0))
  else:
    s = np.broadcast_to(np.asarray(scale, np.float64), w_full.shape).ravel()
  rule = scale_rule or _scale_rule(magnitude is not None)
  m = None if magnitude is None else np.broadcast_to(np.asarray(magnitude, np.float64),
                                                     w_full.shape).ravel()
  extra = (np.zeros_like(w) if extra_atol is None else
           np.broadcast_to(np.asarray(extra_atol, np.float64), w_full.shape).ravel())
  with np.errstate(divide="ignore", invalid="ignore"):
    diff, allowed, rel, ratio, s = entry_errors(np, g, w, s, m, extra, bound.rtol, bound.atol)
  worst = int(np.argmax(ratio)) if ratio.size else 0
  index = index_of(worst) if index_of is not None else (worst,)
  at = (lambda a: float(a[worst])) if ratio.size else (lambda a: 0.0)  # noqa: E731
  return MethodError(method, float(diff.max(initial=0.0)), float(rel.max(initial=0.0)), index,
                     bound.rtol, bound.atol, bool(np.all(diff <= allowed)), at(diff), at(allowed),
                     at(s), bound.rule, rule, at(extra))


def _scale_rule(with_terms: bool) -> str:
  return "max(Σ|terms|, max|ref|)" if with_terms else "max|ref|"


def entry_errors(xp, g, w, s, m, extra, rtol, atol):
  """The rule of :func:`compare` per entry, for NumPy or ``jax.numpy`` (``xp``): ``|g − w|``
  (0 for NaNs in the same places and equal infinities, ``inf`` for one NaN), its bound
  ``rtol·max(M, S) + atol + extra``, the relative error, ``|g − w| / bound`` and the scale
  ``max(M, S)`` (``M`` the finite ``Σ|terms|``, ``None`` where unknown)."""
  def finite(a):
    a = xp.abs(a)
    return xp.where(xp.isfinite(a), a, 0.0)
  if m is not None:
    s = xp.maximum(s, finite(m))
  diff = xp.where((xp.isnan(g) & xp.isnan(w)) | (xp.isinf(w) & (g == w)), 0.0, xp.abs(g - w))
  diff = xp.where(xp.isnan(diff), xp.inf, diff)
  allowed = rtol * s + atol + extra
  aw = finite(w)
  rel = xp.where(aw > 0, diff / xp.where(aw > 0, aw, 1.0), 0.0)
  ratio = xp.where(diff > 0, diff / allowed, 0.0)
  return diff, allowed, rel, ratio, s


@jax.jit
def _leaf_summaries(got, want, terms, extra, rtol, atol):
  """Per leaf (``[examples, entries]`` each) and example: the largest ``|g − w| / bound``, where
  it is, ``|g − w|``, its bound, scale and extra there, the largest absolute and relative
  errors, and whether every entry passed; each ``[examples, leaves]``."""
  rows = []
  for g, w, m, e in zip(got, want, terms, extra, strict=True):
    if w.shape[1] == 0:  # a leaf without entries: nothing wrong in it
      zero = jnp.zeros(w.shape[0], jnp.float64)
      rows.append((zero, zero.astype(jnp.int32), *(zero,) * 6, zero == 0))
      continue
    g, w = g.astype(jnp.float64), w.astype(jnp.float64)
    aw = jnp.where(jnp.isfinite(w), jnp.abs(w), 0.0)
    s = jnp.max(aw, axis=1, keepdims=True, initial=0.0)
    e = jnp.zeros_like(w) if e is None else jnp.broadcast_to(e.astype(jnp.float64), w.shape)
    m = None if m is None else m.astype(jnp.float64)
    diff, allowed, rel, ratio, s = entry_errors(jnp, g, w, s, m, e, rtol, atol)
    at = jnp.argmax(ratio, axis=1)
    pick = lambda a, at=at, shape=w.shape: jnp.take_along_axis(  # noqa: E731
        jnp.broadcast_to(a, shape), at[:, None], axis=1)[:, 0]
    rows.append((jnp.max(ratio, axis=1, initial=0.0), at, pick(diff), pick(allowed), pick(s),
                 pick(e), jnp.max(diff, axis=1, initial=0.0), jnp.max(rel, axis=1, initial=0.0),
                 jnp.all(diff <= allowed, axis=1)))
  return tuple(jnp.stack(a, axis=1) for a in zip(*rows, strict=True))


def compare_leaves(got, want, method: str, *, bound: Bound, terms=None, extra=None,
                   scale_rule: str = "") -> MethodError:
  """:func:`compare` of examples leaf by leaf on the device, for large results: ``got``,
  ``want``, ``terms`` (``M``) and ``extra`` are lists over the leaves of ``[examples,
  entries]`` arrays (``terms`` and ``extra`` may be ``None``, or hold ``None``), the scale
  ``S`` of each leaf of an example is its ``max|want|``; only the summary comes back to the
  host.  ``worst_index`` is ``(example, position in the example's leaves laid end to
  end)``, as :func:`compare` of ``[examples, entries]`` rows reports it."""
  n = len(want)
  terms = [None] * n if terms is None else terms
  extra = [None] * n if extra is None else extra
  with float64_enabled():
    ratio, at, diff, allowed, s, e, max_abs, max_rel, ok = (np.asarray(a) for a in
                                                           _leaf_summaries(
        list(got), list(want), list(terms), list(extra), bound.rtol, bound.atol))
  example, leaf = np.unravel_index(int(np.argmax(ratio)), ratio.shape) if ratio.size else (0, 0)
  offset = int(sum(int(np.prod(w.shape[1:])) for w in want[:leaf]))
  pick = (lambda a: float(a[example, leaf])) if ratio.size else (lambda a: 0.0)  # noqa: E731
  return MethodError(method, float(max_abs.max(initial=0.0)), float(max_rel.max(initial=0.0)),
                     (int(example), offset + int(at[example, leaf]) if ratio.size else 0),
                     bound.rtol, bound.atol, bool(np.all(ok)), pick(diff), pick(allowed), pick(s),
                     bound.rule, scale_rule or _scale_rule(any(m is not None for m in terms)),
                     pick(e))
