"""Second order: the Hessian-vector product by forward-over-reverse and reverse-over-reverse,
against float64 central differences of the gradient and against each other.

For ``s(x) = ⟨u, f(x)⟩`` with a random cotangent ``u`` and a random direction ``v``:
``fwd-over-rev`` is ``jax.jvp`` of ``jax.grad(s)`` along ``v``, ``rev-over-rev`` is
``jax.grad`` of ``⟨∇s, v⟩``, and the reference is the central difference of ``∇s`` along
``v`` (``_finite_differences``).  A rule whose first derivative is right but which is not
itself differentiated correctly (a ``stop_gradient`` too many, a backward pass written
with non-differentiable operations) fails here.  The comparisons are those of
``_consistency``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from softmax_jax.verify import _finite_differences as fd
from softmax_jax.verify._consistency import (
  Magnitude,
  Target,
  compare_examples,
  magnitude,
  random_like,
  unavailable,
  where_of,
)
from softmax_jax.verify._report import Check


def _inner(a, b):
  """``Σ a·b`` over the leaves of two pytrees of one structure (a real scalar)."""
  return sum(jnp.sum(x * y) for x, y in zip(jax.tree_util.tree_leaves(a),
                                            jax.tree_util.tree_leaves(b), strict=True))


def second_order_checks(t: Target, modes, key) -> list[Check]:
  """``H v`` of ``s(x) = ⟨u, f(x)⟩`` by forward-over-reverse and reverse-over-reverse,
  against the float64 central difference of ``∇s`` along ``v`` and against each other.

  All three are computed in float64 at the point ``x`` (as the finite differences are):
  what a wrong rule gets wrong is its mathematics, which float64 shows clearly, while a
  half-precision product would carry roundings of terms far larger than itself where they
  cancel (a saturated softmax).  So each pair is held to the finite differences' bound,
  ``rtol = 1000·ε₆₄^(2/3)`` times ``max(M, S)``, plus twice their error estimate.
  """
  names = [n for n, needs in (("fwd-over-rev", {"fwd", "rev"}), ("rev-over-rev", {"rev"}))
           if needs <= set(modes)]
  if t.complex:
    error = NotImplementedError("second order of complex values is not checked; "
                                "pass their real and imaginary parts as real arguments")
    return [unavailable(n, "fd", error) for n in names]
  key_u, key_v = jax.random.split(key)
  with fd.float64_enabled():
    def wide(tree):
      return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), tree)

    x, u, v = wide(t.x), wide(random_like(key_u, t.out)), wide(random_like(key_v, t.x))
    t64 = t._replace(dtype=jnp.dtype(jnp.float64))

    def grad_s(z):
      return jax.grad(lambda w: _inner(u, t.f(w)))(z)

    programs = {
        "fwd-over-rev": jax.jit(lambda z: jax.jvp(grad_s, (z,), (v,))[1]),
        "rev-over-rev": jax.jit(lambda z: jax.grad(lambda w: _inner(grad_s(w), v))(z)),
    }
    where = where_of(t.x, "args")
    try:  # four copies of ∇s, not a vmap of it: the reference runs no batching rule
      diff = jax.jit(lambda z, d: fd.central_difference(grad_s, z, d))(x, v)
    except Exception as error:  # the gradient cannot run in float64: no reference
      return [unavailable(n, "fd", error) for n in names]
    want = [jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(x), _split(diff.value, x))]
    allowance = 2 * np.asarray(diff.error, np.float64)[None, :]
    try:
      scale = magnitude(lambda d: [jax.linearize(grad_s, x)[1](d[0])], [v])
    except Exception as error:  # only the scale is lost
      scale = Magnitude(None, f"max|ref| per leaf (Σ|terms|: {error})")
    scale = scale._replace(rule=scale.rule.replace("of the reference", "of JAX's product")
                           + "; computed in float64")
    checks, results = [], {}
    for name in names:
      try:
        results[name] = programs[name](x)
      except Exception as error:  # a mode JAX refuses: reported
        checks.append(unavailable(name, "fd", error))
        continue
      checks.append(compare_examples(name, "fd", [results[name]], want, t64, where=where,
                                     scale=scale, fd_reference=True, allowance=allowance))
    if len(results) == 2:
      checks.append(compare_examples("fwd-over-rev", "rev-over-rev", [results["fwd-over-rev"]],
                                     [results["rev-over-rev"]], t64, where=where, scale=scale,
                                     fd_reference=True))
  return checks


def _split(flat, like) -> list:
  """A flat vector as leaves shaped like ``like``'s."""
  flat, out, start = np.asarray(flat, np.float64), [], 0
  for leaf in jax.tree_util.tree_leaves(like):
    size = int(np.prod(leaf.shape))
    out.append(flat[start:start + size].reshape(leaf.shape))
    start += size
  return out
