"""The compiled programs of the fast checks on a :class:`~softmax_jax.verify._complex.RealView`.

Two programs per function and shapes, compiled once (:func:`run_program`) and reused by a
second check of the same function: :func:`autodiff_program` in the input dtype (the VJP
and its ``Σ|terms|``, the leaf weights of the directions, the JVP) and
:func:`float64_program` (the float64 central differences, VJP and JVP, and the
projections).  The directions ``v`` are never stored: each program regenerates the
entries it needs from a counter-based hash (:func:`directions`).
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from softmax_jax.verify import _finite_differences as fd
from softmax_jax.verify._complex import avals, cached, structs
from softmax_jax.verify._tolerances import traced_term_magnitude


@cached
def _compiled(build, view, static, treedef, avals_, x64: bool):
  reasons: list[str] = []
  program = build(view, reasons, static)
  args = jax.tree_util.tree_unflatten(treedef, structs(avals_))
  with _x64(x64):
    compiled = jax.jit(program).trace(*args).lower().compile()
  return compiled, (reasons[0] if reasons else None)


def _x64(on: bool):
  return fd.float64_enabled() if on else contextlib.nullcontext()


def run_program(build, view, *args, static=(), x64: bool = False):
  """``build(view, reasons, static)(*args)`` compiled once per shape; returns the outputs and
  the first reason the program recorded at trace time (``None`` if none)."""
  leaves, treedef = jax.tree_util.tree_flatten(args)
  compiled, reason = _compiled(build, view, static, treedef, avals(leaves), x64)
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


def leaf_direction(pool, seed, i: int, scale, x, k: int, index=None):
  """Leaf ``i`` of the ``K`` directions: ``scale`` times entries of ``pool`` picked by the
  hash of ``seed``, the leaf and the entry; in ``x``'s dtype, ``[K, *x.shape]`` (``index``:
  direction ``index`` alone, ``[*x.shape]``, the same values)."""
  stream = _mix(jnp.asarray(seed, jnp.uint32) ^ _mix(jnp.uint32(i + 1) * jnp.uint32(0x9E3779B9)))
  shape, lead = (x.shape, 0) if index is not None else ((k, *x.shape), 1)
  first = (lax.broadcasted_iota(jnp.uint32, shape, 0) if index is None else
           jnp.full(shape, jnp.asarray(index, jnp.uint32)))
  count = first * jnp.uint32(max(x.size, 1))
  for axis in range(x.ndim):
    count = count + lax.broadcasted_iota(jnp.uint32, shape, axis + lead) * jnp.uint32(
        int(np.prod(x.shape[axis + 1:], dtype=np.int64)))
  z = pool[_mix(count ^ stream) >> (32 - POOL_BITS)]
  return (jnp.asarray(scale).astype(jnp.float32) * z).astype(x.dtype)


def directions(pool, seed, weights, mask, xs, k: int, *, times_i: bool = False,
               index=None) -> list:
  """The ``K`` directions ``v``: leaf ``ℓ`` is ``weights[ℓ]·mask[ℓ]`` times entries of ``pool``
  (:data:`POOL` standard Gaussians) picked by a counter-based hash of ``seed``, the leaf and
  the entry, regenerated wherever needed instead of stored; in the leaf's dtype,
  ``[K, *shape]`` (``index``: direction ``index`` alone, ``[*shape]``, the same values).
  Given the hash, ``⟨δ, v⟩`` is exactly Gaussian, of variance ``Σ_p (Σ_{j picks p} δ_j)²``
  (``‖δ‖²`` on average over the hash).  ``times_i``: the directions ``i·v`` (complex parts
  ``(a, b)`` become ``(−b, a)``)."""
  out = [leaf_direction(pool, seed, i, weights[i] * mask[i], x, k, index)
         for i, x in enumerate(xs)]
  if times_i:
    out = [b for pair in zip(out[0::2], out[1::2], strict=True) for b in (-pair[1], pair[0])]
  return out


def _leaf_weights(gs, xs):
  """``(weights, ‖g_ℓ‖)``: weights ``∝ 1 / ‖g_ℓ‖`` per leaf (norms floored at ``10⁻⁶`` of the
  largest), so each leaf adds alike to a projection, scaled so the largest weight is 1 (a
  direction fits any dtype); all 1, and no norms, without a gradient; all 1 where it is
  zero everywhere."""
  if gs is None:
    return jnp.ones(len(xs), jnp.float32), None
  norms = jnp.stack([jnp.sqrt(jnp.sum(g[0].astype(jnp.float32) ** 2)) for g in gs])
  largest = jnp.max(norms)
  floored = jnp.maximum(norms, 1e-6 * largest)
  weights = jnp.where(largest > 0, jnp.min(floored) / jnp.where(largest > 0, floored, 1.0), 1.0)
  return weights, norms


def _batched_pullback(pullback):
  """``us ↦ Jᵀu`` per cotangent (``[n, *shape]`` per output): ``jax.vmap`` of ``pullback``, or
  one unbatched call for ``n = 1`` (a scalar output), since XLA:CPU runs a batch of one
  matrix product up to 2× slower than the product itself."""
  def one(us):
    return [a[None] for a in pullback([u[0] for u in us])[0]]
  many = jax.vmap(lambda u: pullback(u)[0])
  return lambda us: one(us) if us[0].shape[0] == 1 else many(us)


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
      grad = _batched_pullback(pullback)
      gs = grad(us)
      terms, reason = traced_term_magnitude(grad, us)
      if reason is not None:
        reasons.append(reason)
    weights, norms = _leaf_weights(gs, xs)
    if fwd:
      vs = directions(pool, seed, weights, mask, xs, k)
      jvs = jax.vmap(lambda v: jax.jvp(f, (xs,), (v,))[1])(vs)
      _, lin = jax.linearize(f, xs)
      fterms, reason = traced_term_magnitude(jax.vmap(lin), vs)
      if reason is not None:
        reasons.append("fwd: " + reason)
    return gs, terms, (weights, norms), jvs, fterms
  return program


def _projections(pool, seed, weights, mask, xs, k, gs, gs64, terms, largest):
  """Per projection and leaf ``[K, leaves]``: ``⟨g, v⟩`` of the input-dtype gradient, of the
  float64 one, and ``√Σ (M v)²``; all ``K`` directions in one pass over each leaf (one
  variadic reduction reads ``g``, ``g64`` and ``M`` once, the directions regenerated in it).
  ``gs`` holds one cotangent's gradient (a scalar output) or one per direction."""
  sums = []
  for i, x in enumerate(xs):
    v = leaf_direction(pool, seed, i, weights[i] * mask[i], x, k).astype(jnp.float64)
    m = largest if terms is None else jnp.abs(terms[i].astype(jnp.float64))
    parts = (gs[i].astype(jnp.float64) * v, gs64[i] * v, (m * v) ** 2)  # [K, *shape]
    dims = tuple(range(1, v.ndim))
    sums.append(lax.reduce(parts, (0.0,) * 3, lambda a, b: (a[0] + b[0], a[1] + b[1],
                                                            a[2] + b[2]), dims)
                if dims else parts)
  dots, dots64, noise = (jnp.stack(a, axis=1) for a in zip(*sums, strict=True))
  return dots, dots64, jnp.sqrt(noise)


def float64_program(view, reasons, static):
  """In float64, for the directions of ``weights`` and ``mask``: the float64 central
  difference ``D(v)`` (flat over the outputs) with its error estimate, ``⟨u, D(v)⟩``, twice
  ``Σ|u|·error`` and ``Σ|u·D|``; with ``rev``, per projection and leaf ``⟨g, v⟩`` of the
  input-dtype gradient ``gs`` and of the float64 one, and ``√Σ (M v)²``; with ``fwd``, the
  float64 ``J v``.  ``static = (K, rev, fwd, times_i, richardson)``: ``richardson`` adds
  the evaluations at ``x ± 2hv`` behind the differences' truncation estimate.
  The differences and JVPs one direction at a time (``lax.map``), regenerated inside the
  loop (no ``[K, inputs]``); the projections of all directions in one pass.
  ``M = max|g|`` over every leaf where the ``Σ|terms|`` were not propagated (a leaf's own
  largest entry would miss the cancellation behind a gradient zero up to rounding).
  """
  k, rev, fwd, times_i, richardson = static

  def program(xs, consts, us, pool, seed, weights, mask, gs, terms):
    f = lambda z: view(z, consts)  # noqa: E731
    x64 = _upcast(xs)
    # max|x|, and a bound of max|v| (largest leaf weight × max|pool|), once for all directions
    xmax = fd.largest(xs, finite_only=True).astype(jnp.float64)
    vmax = jnp.max(jnp.abs(weights * mask)) * jnp.max(jnp.abs(pool)).astype(jnp.float64)

    def one(j):
      v64 = _upcast(directions(pool, seed, weights, mask, xs, k, times_i=times_i, index=j))
      d = fd.central_difference(f, x64, v64, richardson=richardson, xmax=xmax, vmax=vmax)
      return d.value, d.error, (jax.jvp(f, (x64,), (v64,))[1] if fwd else None)

    values, errors, jvs = lax.map(one, jnp.arange(k))
    projections = None
    if rev:
      _, pullback = jax.vjp(f, x64)
      gs64 = _batched_pullback(pullback)(_upcast([a[:gs[0].shape[0]] for a in us]))
      largest = jnp.max(jnp.stack([jnp.max(jnp.abs(g.astype(jnp.float64))) for g in gs]))
      projections = _projections(pool, seed, weights, mask, xs, k, gs, gs64, terms, largest)
    u = jax.vmap(lambda b: ravel_pytree(b)[0])(us).astype(jnp.float64)
    differences = (values, errors, jnp.sum(u * values, -1),
                   2 * jnp.sum(jnp.abs(u) * errors, -1), jnp.sum(jnp.abs(u * values), -1))
    return differences, projections, jvs
  return program
