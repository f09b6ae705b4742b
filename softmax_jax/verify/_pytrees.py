"""Pytree plumbing of the checks: argument checks, flat indices, batches of examples and
dense Jacobians.

The checks compare flat float64 vectors; these helpers flatten a pytree (and its
leading batch axes) into them and map a flat position back to the index a report
names: ``(leaf path, index in the leaf)``, or ``(batch…, output…, input…)`` for a
Jacobian.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


def require_float(x, name: str) -> None:
  """Raises ``ValueError`` naming the first leaf of ``x`` that is not floating point."""
  for path, leaf in jax.tree_util.tree_flatten_with_path(x)[0]:
    dtype = jnp.asarray(leaf).dtype
    if not jnp.issubdtype(dtype, jnp.floating):
      raise ValueError(f"verify: {name}{jax.tree_util.keystr(path)} has dtype {dtype} "
                       f"and shape {jnp.shape(leaf)}; derivatives need floating-point inputs.")


def require_same_structure(got, want, got_name: str, want_name: str) -> None:
  """Raises ``ValueError`` naming the first difference of structure or leaf shape."""
  g_def = jax.tree_util.tree_structure(got)
  w_leaves, w_def = jax.tree_util.tree_flatten(want)
  if g_def != w_def:
    raise ValueError(f"verify: {got_name} has structure {g_def} but {want_name} has {w_def}.")
  for (path, g), w in zip(jax.tree_util.tree_flatten_with_path(got)[0], w_leaves, strict=True):
    if tuple(jnp.shape(g)) != tuple(jnp.shape(w)):
      raise ValueError(
          f"verify: {got_name}{jax.tree_util.keystr(path)} has shape {tuple(jnp.shape(g))} but "
          f"{want_name}{jax.tree_util.keystr(path)} has shape {tuple(jnp.shape(w))}.")


def flat_index_of(tree) -> Callable[[int], tuple]:
  """Maps a position in ``ravel_pytree(tree)`` to ``(leaf path, index in the leaf)``."""
  items = jax.tree_util.tree_flatten_with_path(tree)[0]
  bounds = np.cumsum([0] + [int(np.size(leaf)) for _, leaf in items])

  def index_of(k):
    i = int(np.searchsorted(bounds, k, side="right") - 1)
    path, leaf = items[i]
    idx = tuple(int(a) for a in np.unravel_index(k - bounds[i], np.shape(leaf)))
    key = jax.tree_util.keystr(path)
    return (key, *idx) if key else idx

  return index_of


def leaf_sizes(tree) -> list[int]:
  return [int(np.prod(np.shape(leaf))) for leaf in jax.tree_util.tree_leaves(tree)]


# ---------------------------------------------------------------------------
# Batches: ``k`` leading axes of every leaf index independent examples
# ---------------------------------------------------------------------------


def batch_shape(tree, k: int) -> tuple[int, ...]:
  """The ``k`` leading axes shared by every leaf of ``tree``."""
  shapes = {tuple(np.shape(leaf))[:k] for leaf in jax.tree_util.tree_leaves(tree)}
  if len(shapes) != 1 or any(len(s) < k for s in shapes):
    raise ValueError(f"verify: batch_dims={k} but the leaves of x have leading shapes {shapes}.")
  return shapes.pop()


def per_example(fn, k: int):
  """``fn`` applied to one example of ``k`` leading batch axes (re-added with size 1)."""
  def single(xi):
    out = fn(jax.tree_util.tree_map(lambda a: a.reshape((1,) * k + a.shape), xi))
    return jax.tree_util.tree_map(lambda o: o.reshape(o.shape[k:]), out)
  return single


def vmap_leading(f, k: int):
  """``f`` mapped over ``k`` leading axes."""
  for _ in range(k):
    f = jax.vmap(f)
  return f


def example_structure(tree, k: int):
  """The structure of one example: leaves with the ``k`` batch axes dropped."""
  return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(np.shape(a)[k:], a.dtype), tree)


def rows_per_example(flat, out_tree, n_examples: int) -> np.ndarray:
  """A flat output vector (leaf-major, each leaf ``batch + shape``) as
  ``[examples, per-example outputs]``."""
  parts, start = [], 0
  for leaf in jax.tree_util.tree_leaves(out_tree):
    size = int(np.prod(leaf.shape))
    parts.append(flat[start:start + size].reshape(n_examples, -1))
    start += size
  return np.concatenate(parts, axis=1)


def dense_jacobian(jac, out_tree, in_tree) -> np.ndarray:
  """A jacfwd-style nested pytree Jacobian as a dense float64 [batch, outputs, inputs] array
  (``out_tree`` and ``in_tree`` of one example; batch 1 without batch axes)."""
  out_leaves = jax.tree_util.tree_leaves(out_tree)
  in_leaves = jax.tree_util.tree_leaves(in_tree)
  blocks = jax.tree_util.tree_structure(out_tree).flatten_up_to(jac)
  rows = []
  for o, block in zip(out_leaves, blocks, strict=True):
    in_blocks = jax.tree_util.tree_structure(in_tree).flatten_up_to(block)
    rows.append(np.concatenate(
        [np.asarray(b, np.float64).reshape(-1, int(np.prod(o.shape)), int(np.prod(i.shape)))
         for b, i in zip(in_blocks, in_leaves, strict=True)], axis=2))
  return np.concatenate(rows, axis=1)
