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
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from softmax_jax.verify import _finite_differences as fd
from softmax_jax.verify import _pytrees
from softmax_jax.verify._compare import compare, compare_leaves, max_per_segment
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
  of: Fn          # f as ``of(x, consts)``: hashable, so programs of it are compiled once
  consts: list    # the array leaves f holds fixed (integer labels, say)


class Fn(NamedTuple):
  """``fn`` as a function of ``x`` (``args`` with ``None`` at the leaves held fixed) and the
  array leaves held fixed; any other fixed leaf (a string, a Python int) is part of it, so
  it is hashable when those are."""

  fn: Callable
  treedef: Any
  kinds: tuple  # per leaf of args: "x", "array" or ("static", value)

  def __call__(self, x, consts):
    got, arrays = self.treedef.flatten_up_to(x), iter(consts)
    leaves = [g if k == "x" else next(arrays) if k == "array" else k[1]
              for g, k in zip(got, self.kinds, strict=True)]
    return self.fn(*self.treedef.unflatten(leaves))


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
  kinds = tuple("x" if k else "array" if hasattr(leaf, "dtype") else ("static", leaf)
                for leaf, k in zip(leaves, keep, strict=True))
  of = Fn(fn, treedef, kinds)
  consts = [leaf for leaf, kind in zip(leaves, kinds, strict=True) if kind == "array"]

  def f(z):
    return of(z, consts)

  out = jax.eval_shape(f, x)
  for path, leaf in jax.tree_util.tree_flatten_with_path(out)[0]:
    if not _inexact(leaf):
      raise ValueError(f"{name}: fn(*args){jax.tree_util.keystr(path)} has dtype {leaf.dtype}; "
                       "the outputs must be floating point or complex.")
  n = max(sum(_pytrees.leaf_sizes(x)), sum(_pytrees.leaf_sizes(out)), 1)
  return Target(f, x, out, lowest_real_precision(x, out),
                any(jnp.iscomplexobj(leaf) for leaf in jax.tree_util.tree_leaves((x, out))), n,
                of, consts)


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
  """``Σ|terms|`` per example (a list of pytrees like the results; ``None`` where unknown),
  and the rule the scale then follows."""

  terms: list | None
  rule: str


TERMS_RULE = "max(Σ|terms| of the reference, max|ref| per leaf of an example)"


def magnitude_of(terms, reason) -> Magnitude:
  """The :class:`Magnitude` of ``Σ|terms|`` found (or of the reason they were not)."""
  if terms is None:
    return Magnitude(None, f"max|ref| per leaf of an example (Σ|terms| not propagated: {reason})")
  return Magnitude(list(terms), TERMS_RULE)


def magnitude(linear_fn, tangents: list) -> Magnitude:
  """The :class:`Magnitude` of ``[ℓ_b(t_b)]`` for the list ``linear_fn(tangents)``."""
  if any(np.iscomplexobj(leaf) for leaf in jax.tree_util.tree_leaves(tangents)):
    return Magnitude(None, "max|ref| per leaf of an example (Σ|terms| not for complex values)")
  return magnitude_of(*term_magnitude(linear_fn, tangents))


DEVICE_MIN = 1 << 16  # entries (over all examples) from which results are compared on the device




class Batch(NamedTuple):
  """Examples as one pytree whose leaves have the examples along their first axis (what
  ``jax.vmap`` returns), compared without being split."""

  tree: object
  size: int

  def examples(self) -> list:
    return [jax.tree_util.tree_map(lambda a, i=i: a[i], self.tree) for i in range(self.size)]


def _count(trees) -> tuple[int, list[int]]:
  """How many examples, and the sizes of the leaves of one example's real view (a complex
  leaf counts twice), from shapes alone."""
  batched = isinstance(trees, Batch)
  leaves = jax.tree_util.tree_leaves(trees.tree if batched else trees[0])
  return (trees.size if batched else len(trees),
          [int(np.prod(np.shape(a)[1 if batched else 0:])) * (2 if jnp.iscomplexobj(a) else 1)
           for a in leaves])


def _examples(trees) -> list:
  return trees.examples() if isinstance(trees, Batch) else list(trees)


def _device_rows(trees) -> list:
  """Examples (a list of pytrees of one structure, or a :class:`Batch`) as one ``[examples,
  entries]`` array per leaf, a complex leaf's real and imaginary parts side by side,
  without leaving the device."""
  def real(a):
    a = jnp.asarray(a)
    return jnp.stack([a.real, a.imag], -1) if jnp.iscomplexobj(a) else a
  if isinstance(trees, Batch):
    return [real(a).reshape(trees.size, -1) for a in jax.tree_util.tree_leaves(trees.tree)]
  per_example = [[real(a).reshape(-1) for a in jax.tree_util.tree_leaves(t)] for t in trees]
  return [jnp.stack(leaf) for leaf in zip(*per_example, strict=True)]


def compare_examples(mode: str, reference: str, got: list, want: list, t: Target, *,
                     where: Callable[[int], str], scale: Magnitude, fd_reference: bool = False,
                     allowance=None) -> Check:
  """``got`` against ``want`` (lists of examples, or a :class:`Batch`) under :func:`bound`,
  as a :class:`Check`.

  ``where`` names an entry of one example; ``allowance`` is a further absolute allowance
  per entry, ``[examples, entries]`` (a finite difference's error estimate).
  """
  (n_got, got_sizes), (n_want, sizes) = _count(got), _count(want)
  if sum(got_sizes) != sum(sizes) or n_got != n_want:
    return Check(mode, reference, False, float("inf"), float("inf"), 0.0, "shapes differ",
                 "everywhere", f"{mode} gives {sum(got_sizes)} entries per example, "
                 f"{reference} {sum(sizes)}")
  b = bound(t.dtype, t.n, fd=fd_reference)
  per_example = sum(sizes)
  if n_want * per_example >= DEVICE_MIN and got_sizes == sizes:  # large: on the device
    extra = (None if allowance is None else
             np.split(np.asarray(allowance, np.float64), np.cumsum(sizes)[:-1], axis=1))
    with fd.float64_enabled():  # a float64 reference stays float64 on the device
      e = compare_leaves(_device_rows(got), _device_rows(want), reference, bound=b,
                         terms=None if scale.terms is None else _device_rows(scale.terms),
                         extra=extra, scale_rule=scale.rule)
  else:
    g, w = _flat_rows(_examples(got)), _flat_rows(_examples(want))
    e = compare(g, w, reference, bound=b,
                magnitude=None if scale.terms is None else _flat_rows(scale.terms),
                scale=max_per_segment(w, sizes), extra_atol=allowance,
                index_of=lambda pos: divmod(pos, per_example), scale_rule=scale.rule)
  example, entry = e.worst_index
  place = where(entry) if per_example else "(no entries)"
  rule = f"rtol = {e.rule}; scale = {e.scale_rule}" + (
      "; + 2× the finite differences' error estimate" if allowance is not None else "")
  return Check(mode, reference, e.passed, e.max_abs_err, e.max_rel_err, e.allowed, rule,
               place if n_got == 1 else f"example {example}: {place}", error=e.error)


def unavailable(mode: str, reference: str, error: Exception) -> Check:
  """The :class:`Check` of a mode JAX refuses for this function, naming the refusal."""
  message = (str(error).strip().splitlines() or [""])[0][:200]
  nan = float("nan")
  return Check(mode, reference, None, nan, nan, nan, "", "",
               f"{type(error).__name__}: {message}")
