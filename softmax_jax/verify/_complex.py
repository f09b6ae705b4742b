"""The real view of a function the first-order checks verify: real leaves in, real leaves out.

A complex leaf ``z = x + iy`` is checked as its two real parts ``x`` and ``y``
(named ``….real`` and ``….imag`` in reports), and a complex output as its real and
imaginary parts.  JAX's derivatives of complex functions are exactly the derivatives
of this real view:

* ``jax.jvp`` with a complex tangent ``t = a + ib`` is the real directional
  derivative ``∂f/∂x·a + ∂f/∂y·b``; for a holomorphic ``f`` it is ``f'(z)·t``.
* ``jax.vjp`` is the transpose under the pairing ``⟨a, b⟩ = Re Σ a_j b_j`` (no
  conjugate), so for a real-valued ``f`` of complex ``z`` ``jax.grad(f)(z) =
  ∂f/∂x − i ∂f/∂y``: the conjugate of the direction of steepest ascent (step along
  ``conj(grad)`` to increase ``f``).  For a holomorphic ``f``,
  ``jax.grad(f, holomorphic=True)(z) = f'(z)``.

So checking the real view's JVP and VJP against real central differences checks
JAX's complex derivatives in both real directions of every complex entry.  Integer
leaves are held constant (they are passed through, never perturbed).

The fast checks' programs on the real view (its VJP and ``Σ|terms|``, JVP, directions,
projections, float64 differences) are compiled once per function and shapes
(:func:`run_program`): a second check of the same function reuses them.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from softmax_jax import _arguments
from softmax_jax.verify import _finite_differences as fd
from softmax_jax.verify._compare import lowest_precision
from softmax_jax.verify._report import Check
from softmax_jax.verify._tolerances import traced_term_magnitude


class RealView(NamedTuple):
  """``fn`` on the real leaves ``xs`` (complex leaves as two) and the constant leaves
  ``consts``, returning its floating outputs as a list of real arrays.

  Hashable (by ``fn``'s identity, the structure of the arguments and the kinds of
  their leaves), so compiled programs of the checks are reused across calls.
  """

  fn: Callable
  treedef: Any
  layout: tuple[str, ...]  # per leaf of args: "real", "complex" or "const"

  def __call__(self, xs, consts) -> list:
    xs_it, consts_it = iter(xs), iter(consts)
    leaves = []
    for kind in self.layout:
      if kind == "real":
        leaves.append(next(xs_it))
      elif kind == "complex":
        re = next(xs_it)
        leaves.append(lax.complex(re, next(xs_it)))
      else:
        leaves.append(next(consts_it))
    out = self.fn(*jax.tree_util.tree_unflatten(self.treedef, leaves))
    parts = []
    for o in jax.tree_util.tree_leaves(out):
      o = jnp.asarray(o)
      if jnp.iscomplexobj(o):
        parts += [jnp.real(o), jnp.imag(o)]
      elif jnp.issubdtype(o.dtype, jnp.floating):
        parts.append(o)
    return parts


class Problem(NamedTuple):
  """What the checks differentiate: the :class:`RealView`, its point and the names of its
  input and output leaves (``"[0]['w']"``, ``"[0]['z'].imag"``)."""

  view: RealView
  xs: list
  consts: list
  names: list[str]
  out_names: list[str]
  complex_inputs: bool
  complex_outputs: bool


def _parts(name: str, is_complex: bool) -> list[str]:
  return [f"{name}.real", f"{name}.imag"] if is_complex else [name]


def problem(fn: Callable, args: tuple) -> Problem:
  """The :class:`Problem` of ``fn(*args)``.

  Raises:
    ValueError: if ``args`` is not a tuple, has no floating or complex leaf, or
      ``fn(*args)`` has no floating or complex output.
  """
  if not isinstance(args, tuple):
    raise ValueError(f"first_order_checks: args must be a tuple of arguments of fn, got "
                     f"{type(args).__name__}.")
  flat, treedef = jax.tree_util.tree_flatten_with_path(args)
  layout, xs, consts, names = [], [], [], []
  for path, leaf in flat:
    leaf = jnp.asarray(leaf)
    name = jax.tree_util.keystr(path)
    if jnp.iscomplexobj(leaf):
      layout.append("complex")
      xs += [jnp.real(leaf), jnp.imag(leaf)]
      names += _parts(name, True)
    elif jnp.issubdtype(leaf.dtype, jnp.floating):
      layout.append("real")
      xs.append(leaf)
      names.append(name)
    else:
      layout.append("const")
      consts.append(leaf)
  if not xs:
    raise ValueError("first_order_checks: args has no floating-point or complex leaf to "
                     "differentiate.")
  view = RealView(fn, treedef, tuple(layout))
  out = jax.eval_shape(fn, *jax.tree_util.tree_unflatten(treedef, [jnp.asarray(a) for _, a
                                                                     in flat]))
  out_names, complex_outputs = [], False
  for path, o in jax.tree_util.tree_flatten_with_path(out)[0]:
    if jnp.issubdtype(o.dtype, jnp.complexfloating):
      complex_outputs = True
      out_names += _parts(jax.tree_util.keystr(path), True)
    elif jnp.issubdtype(o.dtype, jnp.floating):
      out_names.append(jax.tree_util.keystr(path))
  if not out_names:
    raise ValueError("first_order_checks: fn(*args) has no floating-point or complex output.")
  return Problem(view, xs, consts, names, out_names, "complex" in layout, complex_outputs)


def require_holomorphic_layout(prob: Problem) -> None:
  """``holomorphic=True`` needs complex inputs and outputs only (as ``jax.grad(...,
  holomorphic=True)`` does)."""
  if "real" in prob.view.layout or not prob.complex_outputs:
    raise ValueError("first_order_checks: holomorphic=True needs every floating input of fn "
                     "complex and a complex output; pass holomorphic=False for real-valued "
                     "losses of complex parameters.")


def times_i(prob: Problem, flat_out: np.ndarray) -> np.ndarray:
  """``i·w`` for flat real-view outputs ``w`` (a complex output's parts ``(a, b)`` become
  ``(−b, a)``), along the last axis."""
  out = np.array(flat_out, np.float64, copy=True)
  shapes = jax.eval_shape(lambda xs, c: prob.view(xs, c), prob.xs, prob.consts)
  starts = np.cumsum([0, *(int(np.prod(o.shape)) for o in shapes)])
  for i, name in enumerate(prob.out_names[:-1]):
    if name.endswith(".real") and prob.out_names[i + 1].endswith(".imag"):
      re, im = slice(starts[i], starts[i + 1]), slice(starts[i + 1], starts[i + 2])
      out[..., re], out[..., im] = -flat_out[..., im], flat_out[..., re]
  return out


@functools.lru_cache(maxsize=64)
def _compiled(build, view, static, treedef, avals, x64: bool):
  reasons: list[str] = []
  program = build(view, reasons, static)
  args = jax.tree_util.tree_unflatten(
      treedef, [jax.ShapeDtypeStruct(shape, dtype, weak_type=weak) for shape, dtype, weak
                in avals])
  with _x64(x64):
    compiled = jax.jit(program).trace(*args).lower().compile()
  return compiled, (reasons[0] if reasons else None)


def _x64(on: bool):
  return fd.float64_enabled() if on else contextlib.nullcontext()


def run_program(build, view, *args, static=(), x64: bool = False):
  """``build(view, reasons, static)(*args)`` compiled once per shape; returns the outputs and
  the first reason the program recorded at trace time (``None`` if none)."""
  leaves, treedef = jax.tree_util.tree_flatten(args)
  avals = tuple((tuple(np.shape(a)), jnp.dtype(getattr(a, "dtype", np.float64)).name,
                 bool(getattr(a, "weak_type", False))) for a in leaves)
  compiled, reason = _compiled(build, view, static, treedef, avals, x64)
  with _x64(x64):
    return compiled(*args), reason


def _upcast(tree):
  return jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), tree)


def _mix(x):
  """A 32-bit integer hash (``lowbias32``): consecutive counters give independent bits."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x7FEB352D)
  x = x ^ (x >> 15)
  x = x * jnp.uint32(0x846CA68B)
  return x ^ (x >> 16)


POOL_BITS = 16
POOL = 1 << POOL_BITS  # Gaussians drawn by jax.random; the directions' entries are picked from them


def directions(pool, seed, weights, mask, xs, k: int, *, times_i: bool = False,
               index=None) -> list:
  """The ``K`` directions ``v``: leaf ``ℓ`` is ``weights[ℓ]·mask[ℓ]`` times entries of ``pool``
  (:data:`POOL` standard Gaussians) picked by a counter-based hash of ``seed``, the leaf and
  the entry, regenerated wherever needed instead of stored; in the leaf's dtype,
  ``[K, *shape]`` (``index``: direction ``index`` alone, ``[*shape]``, the same values).
  Given the hash, ``⟨δ, v⟩`` is exactly Gaussian, of variance ``Σ_p (Σ_{j picks p} δ_j)²``
  (``‖δ‖²`` on average over the hash).  ``times_i``: the directions ``i·v`` (complex parts
  ``(a, b)`` become ``(−b, a)``)."""
  seed = jnp.asarray(seed, jnp.uint32)
  out = []
  for i, x in enumerate(xs):
    stream = _mix(seed ^ _mix(jnp.uint32(i + 1) * jnp.uint32(0x9E3779B9)))
    shape, lead = (x.shape, 0) if index is not None else ((k, *x.shape), 1)
    first = (lax.broadcasted_iota(jnp.uint32, shape, 0) if index is None else
             jnp.full(shape, jnp.asarray(index, jnp.uint32)))
    count = first * jnp.uint32(max(x.size, 1))
    for axis in range(x.ndim):
      count = count + lax.broadcasted_iota(jnp.uint32, shape, axis + lead) * jnp.uint32(
          int(np.prod(x.shape[axis + 1:], dtype=np.int64)))
    z = pool[_mix(count ^ stream) >> (32 - POOL_BITS)]
    out.append(((weights[i] * mask[i]).astype(jnp.float32) * z).astype(x.dtype))
  if times_i:
    out = [b for pair in zip(out[0::2], out[1::2], strict=True) for b in (-pair[1], pair[0])]
  return out


def _leaf_weights(gs, xs):
  """``∝ 1 / ‖g_ℓ‖`` per leaf (norms floored at ``10⁻⁶`` of the largest), so each leaf adds
  alike to a projection, scaled so the largest weight is 1 (a direction fits any dtype);
  all 1 without a gradient or where it is zero everywhere."""
  if gs is None:
    return jnp.ones(len(xs), jnp.float32)
  norms = jnp.stack([jnp.sqrt(jnp.sum(g[0].astype(jnp.float32) ** 2)) for g in gs])
  largest = jnp.max(norms)
  norms = jnp.maximum(norms, 1e-6 * largest)
  return jnp.where(largest > 0, jnp.min(norms) / jnp.where(largest > 0, norms, 1.0), 1.0)


def autodiff_program(view, reasons, static):
  """In the input dtype: ``Jᵀu`` per cotangent and its ``Σ|terms|`` (``rev``), the leaf
  weights of the directions, and ``J v`` per direction and its ``Σ|terms|`` (``fwd``);
  ``static = (K, rev, fwd)``."""
  k, rev, fwd = static

  def program(xs, consts, us, pool, seed, mask):
    f = lambda z: view(z, consts)  # noqa: E731
    gs = terms = jvs = fterms = None
    if rev:
      _, pullback = jax.vjp(f, xs)
      grad = jax.vmap(lambda u: pullback(u)[0])
      gs = grad(us)
      terms, reason = traced_term_magnitude(grad, us)
      if reason is not None:
        reasons.append(reason)
    weights = _leaf_weights(gs, xs)
    norms = None if gs is None else jnp.stack([jnp.sqrt(jnp.sum(g[0].astype(jnp.float32) ** 2))
                                               for g in gs])
    if fwd:
      vs = directions(pool, seed, weights, mask, xs, k)
      jvs = jax.vmap(lambda v: jax.jvp(f, (xs,), (v,))[1])(vs)
      _, lin = jax.linearize(f, xs)
      fterms, reason = traced_term_magnitude(jax.vmap(lin), vs)
      if reason is not None:
        reasons.append("fwd: " + reason)
    return gs, terms, (weights, norms), jvs, fterms
  return program


def float64_program(view, reasons, static):
  """In float64, for the directions of ``weights`` and ``mask``: the float64 central
  difference ``D(v)`` (flat over the outputs) with its error estimate, ``⟨u, D(v)⟩``, twice
  ``Σ|u|·error`` and ``Σ|u·D|``; with ``rev``, per projection and leaf ``⟨g, v⟩`` of the
  input-dtype gradient ``gs`` and of the float64 one, and ``√Σ (M v)²``; with ``fwd``, the
  float64 ``J v``.  ``static = (K, rev, fwd, times_i, richardson)``: ``richardson`` adds
  the evaluations at ``x ± 2hv`` behind the differences' truncation estimate.
  One direction at a time (``lax.map``), regenerated inside the loop (no ``[K, inputs]``).
  ``M = max|g|`` over every leaf where the ``Σ|terms|`` were not propagated (a leaf's own
  largest entry would miss the cancellation behind a gradient zero up to rounding).
  """
  k, rev, fwd, times_i, richardson = static

  def program(xs, consts, us, pool, seed, weights, mask, gs, terms):
    f = lambda z: view(z, consts)  # noqa: E731
    x64 = _upcast(xs)
    # max|x|, and a bound of max|v| (largest leaf weight × max|pool|), once for all directions
    xmax = fd.largest(x64, finite_only=True)
    vmax = jnp.max(jnp.abs(weights * mask)) * jnp.max(jnp.abs(pool)).astype(jnp.float64)
    if rev:
      _, pullback = jax.vjp(f, x64)
      n_u = gs[0].shape[0]
      gs64 = jax.vmap(lambda c: pullback(c)[0])(_upcast([a[:n_u] for a in us]))
      largest = jnp.max(jnp.stack([jnp.max(jnp.abs(g.astype(jnp.float64))) for g in gs]))

    def one(j):
      v = directions(pool, seed, weights, mask, xs, k, times_i=times_i, index=j)
      v64 = _upcast(v)
      d = fd.central_difference(f, x64, v64, richardson=richardson, xmax=xmax, vmax=vmax)
      projections = jv = None
      if rev:
        c, sums = jnp.minimum(j, n_u - 1), []  # the j-th cotangent's (one for a scalar output)
        for i, vi in enumerate(v64):  # ⟨g, v⟩, ⟨g64, v⟩ and Σ(M v)² in one pass over the leaf
          m = largest if terms is None else jnp.abs(terms[i][c].astype(jnp.float64))
          sums.append(lax.reduce(
              (gs[i][c].astype(jnp.float64) * vi, gs64[i][c] * vi, (m * vi) ** 2), (0.0,) * 3,
              lambda a, b: (a[0] + b[0], a[1] + b[1], a[2] + b[2]), tuple(range(vi.ndim))))
        dots, dots64, noise = (jnp.stack(a) for a in zip(*sums, strict=True))  # [leaves]
        projections = (dots, dots64, jnp.sqrt(noise))
      if fwd:
        jv = jax.jvp(f, (x64,), (v64,))[1]
      return d.value, d.error, projections, jv

    values, errors, projections, jvs = lax.map(one, jnp.arange(k))
    u = jax.vmap(lambda b: ravel_pytree(b)[0])(us).astype(jnp.float64)
    differences = (values, errors, jnp.sum(u * values, -1),
                   2 * jnp.sum(jnp.abs(u) * errors, -1), jnp.sum(jnp.abs(u * values), -1))
    return differences, projections, jvs
  return program


# ---------------------------------------------------------------------------
# Plumbing of the checks
# ---------------------------------------------------------------------------


def unavailable_reason(prob, mode: str) -> str | None:
  """Why JAX refuses ``mode`` for the function (``None`` if it does not)."""
  f = lambda z: prob.view(z, prob.consts)  # noqa: E731
  try:
    batch = lambda tree: [jnp.stack([a, a]) for a in tree]  # noqa: E731 - as the programs do
    if mode == "fwd":
      jax.eval_shape(lambda xs: jax.vmap(lambda v: jax.jvp(f, (xs,), (v,)))(batch(xs)), prob.xs)
    else:
      jax.eval_shape(lambda xs: jax.vmap(jax.vjp(f, xs)[1])(batch(f(xs))), prob.xs)
  except Exception as err:  # noqa: BLE001 - the reason is reported, not raised
    return _arguments.error_line(err, 160)
  return None


def sizes(tree) -> list[int]:
  return [int(np.prod(np.shape(a))) for a in jax.tree_util.tree_leaves(tree)]


def entry_name(names, shapes, sizes, flat: int) -> str:
  bounds = np.cumsum([0, *sizes])
  i = int(np.searchsorted(bounds, flat, side="right") - 1)
  idx = np.unravel_index(flat - bounds[i], shapes[i]) if shapes[i] else ()
  return (names[i] + (f"[{', '.join(str(int(a)) for a in idx)}]" if idx else "")) or "()"


def dtype_of(prob, out) -> str:
  return jnp.dtype(lowest_precision((prob.xs, out))).name


def longest_axis(prob, out) -> int:
  """``n`` of the projection bound: the longest axis of any input or output leaf."""
  return max([1, *(max(np.shape(a), default=1) for a in [*prob.xs, *out])])


def t_for_miss(probability: float, k: int) -> float:
  """The ``t`` at which ``K`` projections all miss with ``probability``:
  ``erf(t/√2)^K = probability``, by bisection."""
  lo, hi, target = 0.0, 10.0, probability ** (1.0 / k)
  for _ in range(80):
    mid = (lo + hi) / 2
    lo, hi = (mid, hi) if math.erf(mid / math.sqrt(2)) < target else (lo, mid)
  return lo


def flat(leaves, k: int) -> np.ndarray:
  """A list of ``[K, ...]`` arrays as one float64 ``[K, total]`` array."""
  return np.concatenate([np.asarray(a, np.float64).reshape(k, -1) for a in leaves], axis=1)


def unavailable_check(mode: str, reference: str, reason: str) -> Check:
  nan = float("nan")
  return Check(mode, reference, None, nan, nan, nan, "", "", note=f"{mode} mode unavailable: "
               f"{reason}")


class Stage(NamedTuple):
  """One comparison of a check per projection: ``|got − want| ≤ allowed``."""

  got: np.ndarray
  want: np.ndarray
  allowed: np.ndarray
  rule: str


def ratio(stage):
  """``|got − want| / allowed`` per projection; ``inf`` where either side is not finite."""
  err = np.abs(stage.got - stage.want)
  with np.errstate(divide="ignore", invalid="ignore"):
    return np.where(np.isfinite(err), np.where(err > 0, err / stage.allowed, 0.0), np.inf)
