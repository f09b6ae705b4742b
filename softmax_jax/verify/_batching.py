"""``vmap`` of each mode against a loop of the unbatched mode, and ``jit`` against eager.

The programs of a function (the mode, its ``jax.vmap`` over examples and over directions
alone, and the ``Σ|terms|`` of its linear maps) are built once per function
(:class:`~softmax_jax.verify._consistency.Fn`, hashable) and mode, with the fixed array
arguments as arguments rather than constants, so ``jax.jit`` compiles each once per
shapes and a second check of the same function compiles nothing.  Results with many
entries are compared on the device (``_compare.compare_leaves``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from softmax_jax.verify._complex import cached
from softmax_jax.verify._consistency import (
  Batch,
  Magnitude,
  Target,
  compare_examples,
  magnitude_of,
  perturbed_copies,
  random_like,
  unavailable,
  where_of,
)
from softmax_jax.verify._fast_programs import run_program
from softmax_jax.verify._report import Check
from softmax_jax.verify._tolerances import traced_term_magnitude


def _stack(trees):
  return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *trees)


def _apply(of, name: str):
  """The mode ``name`` of ``of`` as ``(x, consts, direction) ↦ derivative``."""
  if name == "fwd":
    return lambda x, c, v: jax.jvp(lambda z: of(z, c), (x,), (v,))[1]
  return lambda x, c, u: jax.vjp(lambda z: of(z, c), x)[1](u)[0]


def _linear(of, name: str, x, c):
  """The mode's linear map at ``x`` (a ``jax.linearize`` JVP, or the VJP's pullback)."""
  if name == "fwd":
    return jax.linearize(lambda z: of(z, c), x)[1]
  pullback = jax.vjp(lambda z: of(z, c), x)[1]
  return lambda u: pullback(u)[0]


class _Programs(NamedTuple):
  eager: Callable     # (x, consts, d) -> the mode, op by op
  compiled: Callable  # the same under jax.jit
  batched: Callable   # jax.jit of its vmap over (x, d)
  fixed: Callable     # jax.jit of its vmap over d alone (as jax.jacfwd / jacrev batch)


@cached
def _programs(of, name: str) -> _Programs:
  apply = _apply(of, name)
  return _Programs(apply, jax.jit(apply), jax.jit(jax.vmap(apply, in_axes=(0, None, 0))),
                   jax.jit(jax.vmap(apply, in_axes=(None, None, 0))))


def _terms_program(of, reasons, static):
  """``Σ|terms|`` of the mode's linear map at each example along its direction."""
  (name,) = static

  def program(xs, consts, ds):
    linear = lambda d: [_linear(of, name, x, consts)(di)  # noqa: E731
                        for x, di in zip(xs, d, strict=True)]
    terms, reason = traced_term_magnitude(linear, ds)
    if reason is not None:
      reasons.append(reason)
    return terms
  return program


def _scale_of(t: Target, name: str, xs: list, ds: list) -> Magnitude:
  """The :class:`Magnitude` of the mode's linear maps at ``xs`` along ``ds``."""
  if any(jnp.iscomplexobj(leaf) for leaf in jax.tree_util.tree_leaves(ds)):
    return Magnitude(None, "max|ref| per leaf of an example (Σ|terms| not for complex values)")
  try:
    terms, reason = run_program(_terms_program, t.of, xs, t.consts, ds, static=(name,))
  except Exception as error:  # the reference runs, so only the scale is lost
    return Magnitude(None, f"max|ref| per leaf of an example (Σ|terms|: {error})")
  return magnitude_of(terms, reason)


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
  wheres = {"fwd": where_of(t.out, "output"), "rev": where_of(t.x, "args")}
  for i, name in enumerate(modes):
    like = t.x if name == "fwd" else t.out
    ds = [random_like(k, like) for k in jax.random.split(jax.random.fold_in(key_d, i),
                                                         batch_size)]
    try:
      programs = _programs(t.of, name)
      eager = programs.eager(xs[0], t.consts, ds[0])
    except Exception as error:  # a mode JAX refuses (fwd of a custom_vjp): reported
      checks += _all_unavailable(name, error)
      continue
    scale = _scale_of(t, name, xs, ds)
    first = Magnitude(None if scale.terms is None else scale.terms[:1], scale.rule)
    try:
      loop = [programs.compiled(x, t.consts, d) for x, d in zip(xs, ds, strict=True)]
    except Exception as error:  # jit refused (a rule needing concrete values): reported
      checks += _all_unavailable(name, error)
      continue
    for label, batched in ((f"vmap({name})", True), (f"vmap({name}, x fixed)", False)):
      try:
        if batched:
          want, want_scale = loop, scale
          got = programs.batched(_stack(xs), t.consts, _stack(ds))
        else:  # one point, many directions: how jax.jacfwd, jacrev and hessian batch
          want = [programs.compiled(xs[0], t.consts, d) for d in ds]
          want_scale = _scale_of(t, name, [xs[0]] * batch_size, ds)
          got = programs.fixed(xs[0], t.consts, _stack(ds))
        checks.append(compare_examples(label, "loop", Batch(got, batch_size), want, t,
                                       where=wheres[name], scale=want_scale))
      except Exception as error:  # vmap refused (no batching rule): reported
        checks.append(unavailable(label, "loop", error))
    checks.append(compare_examples(f"jit({name})", "eager", loop[:1], [eager], t,
                                   where=wheres[name], scale=first))
  return checks


def _all_unavailable(name: str, error: Exception) -> list[Check]:
  return [unavailable(f"vmap({name})", "loop", error),
          unavailable(f"vmap({name}, x fixed)", "loop", error),
          unavailable(f"jit({name})", "eager", error)]
