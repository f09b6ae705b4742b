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

What tracing the function tells (its outputs, whether JAX can differentiate it in each
mode) is found once per function and shapes, as the fast checks' programs on the real
view (``_fast_programs``) are compiled once: a second check of the same function traces
nothing.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from softmax_jax import _arguments
from softmax_jax.verify._compare import lowest_precision
from softmax_jax.verify._report import Check


class RealView(NamedTuple):
  """``fn`` on the real leaves ``xs`` (complex leaves as two) and the constant leaves
  ``consts``, returning its floating outputs as a list of real arrays.

  Hashable (by ``fn``'s identity, the structure of the arguments and the kinds of
  their leaves), so compiled programs of the checks are reused across calls.
  """

  fn: Callable
  treedef: Any
  layout: tuple[str, ...]  # per leaf of args: "real", "complex" or "const"

  def outputs(self, xs, consts):
    """``fn``'s own output (a pytree, complex leaves as they are)."""
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
    return self.fn(*jax.tree_util.tree_unflatten(self.treedef, leaves))

  def __call__(self, xs, consts) -> list:
    out = self.outputs(xs, consts)
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
  out: list                      # the view's outputs, as jax.ShapeDtypeStruct
  reasons: dict[str, str | None]  # per mode, why JAX refuses it for fn (None: it does not)


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
  raw, out, reasons = _traced(view, avals(xs), avals(consts))
  out_names, complex_outputs = [], False
  for path, o in jax.tree_util.tree_flatten_with_path(raw)[0]:
    if jnp.issubdtype(o.dtype, jnp.complexfloating):
      complex_outputs = True
      out_names += _parts(jax.tree_util.keystr(path), True)
    elif jnp.issubdtype(o.dtype, jnp.floating):
      out_names.append(jax.tree_util.keystr(path))
  if not out_names:
    raise ValueError("first_order_checks: fn(*args) has no floating-point or complex output.")
  return Problem(view, xs, consts, names, out_names, "complex" in layout, complex_outputs, out,
                 reasons)


def avals(leaves) -> tuple:
  """``(shape, dtype, weak_type)`` of each leaf: what a traced program depends on."""
  return tuple((tuple(np.shape(a)), jnp.dtype(getattr(a, "dtype", np.float64)).name,
                bool(getattr(a, "weak_type", False))) for a in leaves)


def structs(avals_: tuple) -> list:
  return [jax.ShapeDtypeStruct(shape, dtype, weak_type=weak) for shape, dtype, weak in avals_]


def cached(function):
  """``functools.lru_cache`` that computes uncached for an unhashable ``fn`` (a view holds it)."""
  memo = functools.lru_cache(maxsize=64)(function)

  def call(*args):
    try:
      hash(args)
    except TypeError:
      return function(*args)
    return memo(*args)
  return call


@cached
def _traced(view, xs_avals, consts_avals):
  """What tracing ``fn`` tells, once per function and shapes: its output, the view's output
  and why JAX refuses each mode (``None`` if it does not)."""
  xs, consts = structs(xs_avals), structs(consts_avals)
  raw = jax.eval_shape(lambda a, c: view.outputs(a, c), xs, consts)
  out = jax.eval_shape(lambda a, c: view(a, c), xs, consts)
  return raw, out, {mode: _unavailable_reason(view, xs, consts, mode) for mode in ("fwd", "rev")}


def _unavailable_reason(view, xs, consts, mode: str) -> str | None:
  batch = lambda tree: [jnp.stack([a, a]) for a in tree]  # noqa: E731 - as the programs do

  def traced(xs, consts):
    f = lambda z: view(z, consts)  # noqa: E731
    if mode == "fwd":
      return jax.vmap(lambda v: jax.jvp(f, (xs,), (v,)))(batch(xs))
    return jax.vmap(jax.vjp(f, xs)[1])(batch(f(xs)))
  try:
    jax.eval_shape(traced, xs, consts)
  except Exception as err:  # noqa: BLE001 - the reason is reported, not raised
    return _arguments.error_line(err, 160)
  return None


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
  starts = np.cumsum([0, *(int(np.prod(o.shape)) for o in prob.out)])
  for i, name in enumerate(prob.out_names[:-1]):
    if name.endswith(".real") and prob.out_names[i + 1].endswith(".imag"):
      re, im = slice(starts[i], starts[i + 1]), slice(starts[i + 1], starts[i + 2])
      out[..., re], out[..., im] = -flat_out[..., im], flat_out[..., re]
  return out


# ---------------------------------------------------------------------------
# Plumbing of the checks
# ---------------------------------------------------------------------------


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
