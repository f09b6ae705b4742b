"""The modes of a derivative against each other: ``vmap`` against a loop and ``jit`` against
eager (second order is ``_second_order``), and what they share: the function of its
differentiable arguments, random directions, comparisons reported as a ``Check``.

What a hand-written ``custom_jvp`` / ``custom_vjp`` rule gets wrong besides its first
derivative: its batching (``jax.vmap`` of the JVP or VJP, which runs the rule's batching
rules, or a ``jax.custom_batching.custom_vmap`` rule), its behaviour under ``jax.jit``
(a rule that takes another branch when its inputs are not concrete) and its own derivative
(the second derivative of the function).

* ``vmap(fwd)`` / ``vmap(rev)``: ``jax.vmap`` of ``t ↦ J t`` (``u ↦ uᵀ J``) over a small
  batch of perturbed copies of the arguments and random directions, against a Python loop
  of the unbatched ones; ``vmap(fwd, x fixed)`` / ``vmap(rev, x fixed)``: over the
  directions alone at one point, as ``jax.jacfwd`` / ``jax.jacrev`` batch (a batching rule
  can be wrong for one combination of batched and unbatched operands only).
* ``jit(fwd)`` / ``jit(rev)``: ``jax.jit`` of the same maps against the eager ones.
* second order: ``_second_order``.

Each comparison is ``compare`` (``_compare``) under ``bound`` (``_tolerances``): the
loop, eager and ``vmap`` / ``jit`` results are the same arithmetic up to the order of
roundings, so they are held to the rounding bound ``c ε + 2 ε_acc √n`` times
``max(M, S)`` (``M`` the ``Σ|terms|`` of the reference's program, ``S`` the largest entry
of the reference in its leaf, for one example).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from softmax_jax.verify import _pytrees
from softmax_jax.verify._compare import compare, max_per_segment
from softmax_jax.verify._report import Check
from softmax_jax.verify._tolerances import bound, term_magnitude

_PERTURBATION = 0.1  # the relative size of the perturbations that make a batch of examples


# ---------------------------------------------------------------------------
# The function of its differentiable arguments
# ---------------------------------------------------------------------------


def _inexact(leaf) -> bool:
  """Whether ``leaf`` is differentiated: a floating or complex array or Python number (not a
  string or other static value, which is passed through as it is)."""
  dtype = getattr(leaf, "dtype", None)
  if dtype is None:
    return isinstance(leaf, float | complex)
  return jnp.issubdtype(dtype, jnp.inexact)


class Target(NamedTuple):
  """``fn(*args)`` as a function ``f(x)`` of its floating (or complex) leaves.

  ``x`` is ``args`` with every other leaf (integer labels, say) replaced by ``None``, so
  leaf paths stay those of ``args``; ``dtype`` is the real dtype of fewest bits among
  ``x`` and ``f(x)``, the one a bound is for; ``complex`` whether any leaf is complex.
  """

  f: Callable
  x: object
  out: object     # jax.eval_shape(f, x)
  dtype: object
  complex: bool
  n: int          # the larger of the sizes of x and f(x): the longest sum an entry can hold


def _real_dtype(dtype):
  return jnp.finfo(dtype).dtype  # complex64 → float32, a real dtype → itself


def lowest_real_precision(*trees):
  """The real dtype of fewest bits among the floating and complex leaves of ``trees``."""
  dts = [_real_dtype(jnp.result_type(leaf)) for leaf in jax.tree_util.tree_leaves(trees)
         if _inexact(leaf)]
  return min(dts, key=lambda d: jnp.finfo(d).bits)


def target(fn: Callable, args: tuple, name: str = "check_derivatives") -> Target:
  """The :class:`Target` of ``fn`` at ``args``; ``ValueError`` naming the argument when
  there is nothing to differentiate or ``fn`` returns a non-floating leaf."""
  leaves, treedef = jax.tree_util.tree_flatten(args)
  keep = [_inexact(leaf) for leaf in leaves]
  if not any(keep):
    raise ValueError(f"{name}: args has no floating-point or complex leaf to differentiate.")
  x = treedef.unflatten([jnp.asarray(leaf) if k else None for leaf, k in zip(leaves, keep,
                                                                            strict=True)])

  def f(z):
    got = treedef.flatten_up_to(z)
    return fn(*treedef.unflatten([g if k else leaf for g, leaf, k in zip(got, leaves, keep,
                                                                          strict=True)]))

  out = jax.eval_shape(f, x)
  for path, leaf in jax.tree_util.tree_flatten_with_path(out)[0]:
    if not _inexact(leaf):
      raise ValueError(f"{name}: fn(*args){jax.tree_util.keystr(path)} has dtype {leaf.dtype}; "
                       "the outputs must be floating point or complex.")
  n = max(sum(_pytrees.leaf_sizes(x)), sum(_pytrees.leaf_sizes(out)), 1)
  return Target(f, x, out, lowest_real_precision(x, out),
                any(jnp.iscomplexobj(leaf) for leaf in jax.tree_util.tree_leaves((x, out))), n)


def random_like(key, tree):
  """Standard normal leaves shaped like ``tree`` (complex normal for complex leaves)."""
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  keys = jax.random.split(key, max(len(leaves), 1))
  out = []
  for k, leaf in zip(keys, leaves, strict=False):
    dtype = jnp.dtype(leaf.dtype)
    if jnp.issubdtype(dtype, jnp.complexfloating):
      re, im = jax.random.normal(k, (2, *leaf.shape), _real_dtype(dtype))
      out.append((re + 1j * im).astype(dtype) / np.sqrt(2))
    else:
      out.append(jax.random.normal(k, leaf.shape, jnp.float32).astype(dtype))
  return treedef.unflatten(out)


def perturbed_copies(key, x, size: int) -> list:
  """``x`` itself and ``size − 1`` copies ``x·(1 + 0.1 z)`` (``z`` standard normal): distinct
  examples with the signs and zeros of ``x``, so a function's domain is kept."""
  keys = jax.random.split(key, max(size - 1, 1))
  return [x] + [jax.tree_util.tree_map(lambda a, z: a * (1 + _PERTURBATION * z).astype(a.dtype),
                                       x, random_like(k, x)) for k in keys[:size - 1]]


def _stack(trees):
  return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *trees)


def _unstack(tree, size: int) -> list:
  return [jax.tree_util.tree_map(lambda a, i=i: a[i], tree) for i in range(size)]


# ---------------------------------------------------------------------------
# One comparison, reported as a Check
# ---------------------------------------------------------------------------


def _real_view(tree):
  """Leaves as float64 NumPy arrays; a complex leaf as ``[..., 2]`` (real, imaginary)."""
  def view(a):
    a = np.asarray(a)
    if np.iscomplexobj(a):
      return np.stack([a.real, a.imag], -1).astype(np.float64)
    return a.astype(np.float64)
  return jax.tree_util.tree_map(view, tree)


def _flat_rows(trees) -> np.ndarray:
  """A list of examples (pytrees of one structure) as a float64 ``[examples, entries]``."""
  return np.stack([np.concatenate([leaf.ravel() for leaf in jax.tree_util.tree_leaves(
      _real_view(t))] or [np.zeros(0)]) for t in trees])


def where_of(tree, prefix: str) -> Callable[[int], str]:
  """Maps a flat position in one example of ``tree`` (arrays or shapes) to
  ``prefix[path][index]``; a complex entry's real and imaginary parts are ``.real``/``.imag``."""
  is_complex = [jnp.issubdtype(leaf.dtype, jnp.complexfloating)
                for leaf in jax.tree_util.tree_leaves(tree)]
  shapes = jax.tree_util.tree_map(  # the real view's shapes, without the values
      lambda leaf: np.broadcast_to(np.float64(0), (*np.shape(leaf), 2)[:np.ndim(leaf) + (
          jnp.issubdtype(leaf.dtype, jnp.complexfloating))]), tree)
  index_of = _pytrees.flat_index_of(shapes)
  bounds = np.cumsum([0] + _pytrees.leaf_sizes(shapes))

  def where(pos: int) -> str:
    parts = index_of(pos)
    key, idx = (parts[0], parts[1:]) if parts and isinstance(parts[0], str) else ("", parts)
    part = ""
    if is_complex[int(np.searchsorted(bounds, pos, side="right") - 1)]:
      idx, part = idx[:-1], (".real", ".imag")[idx[-1]]
    return f"{prefix}{key}" + (f"[{', '.join(str(i) for i in idx)}]" if idx else "") + part

  return where


class Magnitude(NamedTuple):
  """``Σ|terms|`` per example ``[examples, entries]`` (``None`` where unknown), and the rule
  the scale then follows."""

  terms: np.ndarray | None
  rule: str


def magnitude(linear_fn, tangents: list) -> Magnitude:
  """The :class:`Magnitude` of ``[ℓ_b(t_b)]`` for the list ``linear_fn(tangents)``."""
  if any(np.iscomplexobj(leaf) for leaf in jax.tree_util.tree_leaves(tangents)):
    return Magnitude(None, "max|ref| per leaf of an example (Σ|terms| not for complex values)")
  m, reason = term_magnitude(linear_fn, tangents)
  if m is None:
    return Magnitude(None, f"max|ref| per leaf of an example (Σ|terms| not propagated: {reason})")
  return Magnitude(_flat_rows(m), "max(Σ|terms| of the reference, max|ref| per leaf of an "
                                  "example)")


def compare_examples(mode: str, reference: str, got: list, want: list, t: Target, *,
                     where: Callable[[int], str], scale: Magnitude, fd_reference: bool = False,
                     allowance=None) -> Check:
  """``got`` against ``want`` (lists of examples) under :func:`bound`, as a :class:`Check`.

  ``where`` names an entry of one example; ``allowance`` is a further absolute allowance
  per entry, ``[examples, entries]`` (a finite difference's error estimate).
  """
  g, w = _flat_rows(got), _flat_rows(want)
  if g.shape != w.shape:
    return Check(mode, reference, False, float("inf"), float("inf"), 0.0, "shapes differ",
                 "everywhere", f"{mode} gives {g.shape[1]} entries per example, "
                 f"{reference} {w.shape[1]}")
  b = bound(t.dtype, t.n, fd=fd_reference)
  sizes = _pytrees.leaf_sizes(_real_view(want[0]))
  per_example = g.shape[1]
  e = compare(g, w, reference, bound=b, magnitude=scale.terms, scale=max_per_segment(w, sizes),
              extra_atol=allowance, index_of=lambda pos: divmod(pos, per_example),
              scale_rule=scale.rule)
  example, entry = e.worst_index
  place = where(entry) if per_example else "(no entries)"
  rule = f"rtol = {e.rule}; scale = {e.scale_rule}" + (
      "; + 2× the finite differences' error estimate" if allowance is not None else "")
  return Check(mode, reference, e.passed, e.max_abs_err, e.max_rel_err, e.allowed, rule,
               place if len(got) == 1 else f"example {example}: {place}")


def unavailable(mode: str, reference: str, error: Exception) -> Check:
  """The :class:`Check` of a mode JAX refuses for this function, naming the refusal."""
  message = (str(error).strip().splitlines() or [""])[0][:200]
  nan = float("nan")
  return Check(mode, reference, None, nan, nan, nan, "", "",
               f"{type(error).__name__}: {message}")


# ---------------------------------------------------------------------------
# The linear maps of each mode
# ---------------------------------------------------------------------------


class _Mode(NamedTuple):
  """One mode as a function of (point, direction), the directions it takes, its reference
  loop's linear maps (for ``Σ|terms|``) and how its result's entries are named."""

  apply: Callable       # (x, direction) -> derivative
  directions: Callable  # key -> a direction like x (fwd) or like f(x) (rev)
  linear: Callable      # x -> the linear map of the direction at x
  where: Callable[[int], str]


def _modes(t: Target) -> dict[str, _Mode]:
  def jvp(x, v):
    return jax.jvp(t.f, (x,), (v,))[1]

  def vjp(x, u):
    return jax.vjp(t.f, x)[1](u)[0]

  def pullback(x):
    pb = jax.vjp(t.f, x)[1]
    return lambda u: pb(u)[0]

  return {
      "fwd": _Mode(jvp, lambda k: random_like(k, t.x), lambda x: jax.linearize(t.f, x)[1],
                   where_of(t.out, "output")),
      "rev": _Mode(vjp, lambda k: random_like(k, t.out),
                   pullback,
                   where_of(t.x, "args")),
  }


def batching_and_jit_checks(t: Target, modes, key, *, batch_size: int = 3) -> list[Check]:
  """``vmap(mode)`` against a loop of the unbatched mode, and ``jit(mode)`` against eager,
  for each mode of ``modes`` (``"fwd"``, ``"rev"``).

  The loop and the batch are both compiled (``jax.jit`` of the unbatched map, called per
  example, and of its ``jax.vmap``), so their comparison isolates the batching rules; the
  eager run of the first example against its compiled run isolates tracing and
  compilation.
  """
  checks = []
  key_x, key_d = jax.random.split(key)
  xs = perturbed_copies(key_x, t.x, batch_size)
  for i, name in enumerate(modes):
    mode = _modes(t)[name]
    ds = [mode.directions(k) for k in jax.random.split(jax.random.fold_in(key_d, i), batch_size)]
    try:
      eager = mode.apply(xs[0], ds[0])
    except Exception as error:  # a mode JAX refuses (fwd of a custom_vjp): reported
      checks += _all_unavailable(name, error)
      continue
    scale = _scale_of(mode, xs, ds)
    first = Magnitude(None if scale.terms is None else scale.terms[:1], scale.rule)
    try:
      compiled = jax.jit(mode.apply)
      loop = [compiled(x, d) for x, d in zip(xs, ds, strict=True)]
    except Exception as error:  # jit refused (a rule needing concrete values): reported
      checks += _all_unavailable(name, error)
      continue
    for label, in_axes, point in ((f"vmap({name})", 0, _stack(xs)),
                                  (f"vmap({name}, x fixed)", (None, 0), xs[0])):
      try:
        if in_axes == 0:
          want, want_scale = loop, scale
        else:  # one point, many directions: how jax.jacfwd, jacrev and hessian batch
          want = [compiled(xs[0], d) for d in ds]
          want_scale = _scale_of(mode, [xs[0]] * batch_size, ds)
        got = jax.jit(jax.vmap(mode.apply, in_axes=in_axes))(point, _stack(ds))
        checks.append(compare_examples(label, "loop", _unstack(got, batch_size), want, t,
                                       where=mode.where, scale=want_scale))
      except Exception as error:  # vmap refused (no batching rule): reported
        checks.append(unavailable(label, "loop", error))
    checks.append(compare_examples(f"jit({name})", "eager", loop[:1], [eager], t,
                                   where=mode.where, scale=first))
  return checks


def _scale_of(mode: _Mode, xs: list, ds: list) -> Magnitude:
  """The :class:`Magnitude` of the mode's linear maps at ``xs`` along ``ds`` (traced with the
  magnitude's program, not run eagerly)."""
  try:
    return magnitude(lambda d: [mode.linear(x)(di) for x, di in zip(xs, d, strict=True)], ds)
  except Exception as error:  # the reference runs, so only the scale is lost
    return Magnitude(None, f"max|ref| per leaf of an example (Σ|terms|: {error})")


def _all_unavailable(name: str, error: Exception) -> list[Check]:
  return [unavailable(f"vmap({name})", "loop", error),
          unavailable(f"vmap({name}, x fixed)", "loop", error),
          unavailable(f"jit({name})", "eager", error)]
