"""Laying arrays out over a mesh for the mesh-taking functions of ``softmax_jax.sharded``.

A class count that the devices do not divide is padded (``−inf`` logits: not classes,
probability 0, gradient 0, a label there gives NaN) and the padding is cut off again.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import NamedSharding

from softmax_jax import _arguments


def mesh_input(x, mesh, axis_name, batch_axis, fn: str) -> jax.Array:
  """Checks the mesh, its axes and ``x``: float ``[batch, classes]``, the batch divisible
  by the devices of ``batch_axis``."""
  _arguments.mesh(mesh, {"axis_name": axis_name, "batch_axis": batch_axis}, fn)
  x = jnp.asarray(x)
  if x.ndim != 2 or not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"{fn}: expected float logits of shape [batch, classes], got "
                     f"{x.dtype} {x.shape}")
  if batch_axis is not None and x.shape[0] % mesh.shape[batch_axis]:
    raise ValueError(f"{fn}: batch size {x.shape[0]} is not divisible by the "
                     f"{mesh.shape[batch_axis]} devices of mesh axis {batch_axis!r}")
  return x


def pad_classes(x, parts: int, fill):
  """Pad the last axis with ``fill`` up to a multiple of ``parts`` (``None`` stays ``None``)."""
  if x is None:
    return None
  pad = -x.shape[-1] % parts
  if pad:
    x = jnp.concatenate([x, jnp.full((*x.shape[:-1], pad), fill, x.dtype)], axis=-1)
  return x


def _place(x, mesh, spec):
  """Lay ``x`` out as ``spec`` on ``mesh``; the compiler inserts whatever moves are needed."""
  return lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def shard_map_call(body, mesh, args, out_spec):
  """``jax.shard_map(body)`` over the ``(array, spec)`` pairs of ``args``; an array that is
  ``None`` is left out of the map and reaches ``body`` as ``None``."""
  present = [(i, a, s) for i, (a, s) in enumerate(args) if a is not None]

  def mapped(*vals):
    full = [None] * len(args)
    for (i, _, _), v in zip(present, vals, strict=True):
      full[i] = v
    return body(*full)

  specs = tuple(s for _, _, s in present)
  return jax.shard_map(mapped, mesh=mesh, in_specs=specs, out_specs=out_spec)(
      *(_place(a, mesh, s) for _, a, s in present))
