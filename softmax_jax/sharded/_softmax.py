r"""Class-sharded ``softmax`` and ``log_softmax``.

Each device computes its own slice of ``y = e^{z − m} / s`` (lecture, "Softmax
function") once ``m`` and ``s`` of the whole row are known
(:func:`~softmax_jax.sharded._stats.global_stats`: one ``pmax``, one ``psum``).  The
derivatives are JAX's own through that computation: the ``psum`` of the tangent
gives the lecture's ``∂y_i/∂z_j = y_i(δ_ij − y_j)``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P
from jax.typing import ArrayLike

from softmax_jax import _arguments
from softmax_jax import _numerics as nx
from softmax_jax.sharded import _mesh, _stats


def _log_probs(x, where, axis_name):
  """``(masked logits, log y)``, ``log y = (z − m) − log s`` (``−inf`` entries stay ``−inf``)."""
  zm = nx.masked(nx.upcast(x), where)
  st = _stats.global_stats(zm, axis_name, tail=False).stats
  return zm, (zm - st.m) - nx.log_normaliser(st)


def _local_args(x, where, axis_name, fn):
  x = _arguments.float_array(x, "x", fn)
  _arguments.axes(-1, x.ndim, fn)
  _stats.num_classes(x.shape[-1], axis_name, fn)
  return x, _arguments.where_mask(where, x.shape, fn)


def softmax_local(x: ArrayLike, *, axis_name: str, where: ArrayLike | None = None) -> jax.Array:
  r"""``softmax`` over the last axis, called inside ``shard_map`` with the classes split
  over ``axis_name``.

  .. math::
    y_c = e^{z_c - m} / s, \quad m = \operatorname{pmax} \max_c z_c, \quad
    s = \operatorname{psum} \sum_c e^{z_c - m}

  Args:
    x: ``[..., classes / D]``, this device's classes.
    axis_name: the mesh axis that splits the classes (bound by the caller's
      ``shard_map``).
    where: optional boolean mask of ``x``'s shape (this device's part).

  Returns:
    This device's slice of the probabilities, shape and dtype of ``x``.  A row
    with no valid class (all ``−inf`` or masked) gives zeros, and zero
    gradients.

  Examples:
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> from jax.sharding import Mesh, PartitionSpec as P
    >>> from softmax_jax import sharded
    >>> mesh = Mesh(np.array(jax.devices()[:1]), ("model",))
    >>> f = jax.jit(jax.shard_map(lambda z: sharded.softmax_local(z, axis_name="model"),
    ...                           mesh=mesh, in_specs=P(None, "model"),
    ...                           out_specs=P(None, "model")))
    >>> f(jnp.array([[0.0, 0.0], [-jnp.inf, -jnp.inf]], jnp.float32))
    Array([[0.5, 0.5],
           [0. , 0. ]], dtype=float32)
  """
  x, where = _local_args(x, where, axis_name, "sharded.softmax_local")
  _, out = _log_probs(x, where, axis_name)
  return jnp.exp(out).astype(x.dtype)


def log_softmax_local(x: ArrayLike, *, axis_name: str,
                      where: ArrayLike | None = None) -> jax.Array:
  """``log_softmax`` over the last axis inside ``shard_map`` (see :func:`softmax_local`).

  Masked classes and a row with no valid class give ``−inf``, with zero gradients.
  """
  x, where = _local_args(x, where, axis_name, "sharded.log_softmax_local")
  zm, out = _log_probs(x, where, axis_name)
  return jnp.where(zm != -jnp.inf, out, -jnp.inf).astype(x.dtype)


def _mesh_args(x, where, mesh, axis_name, batch_axis, fn):
  x = _arguments.float_array(_mesh.mesh_input(x, mesh, axis_name, batch_axis, fn), "x", fn)
  return x, _arguments.where_mask(where, x.shape, fn)


def softmax(x: ArrayLike, mesh: Mesh, *, axis_name: str = "model",
            batch_axis: str | None = None, where: ArrayLike | None = None) -> jax.Array:
  """``softmax(x)`` over the last axis, with the classes split over ``axis_name``.

  Args:
    x: ``[batch, classes]`` logits (any sharding; they are laid out as
      ``P(batch_axis, axis_name)``).
    mesh: the device mesh.
    axis_name: the mesh axis that splits the classes.
    batch_axis: optionally, a mesh axis that splits the rows.
    where: optional boolean mask broadcastable to ``x``.

  Returns:
    ``[batch, classes]`` probabilities; a row with no valid class gives zeros.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from softmax_jax import sharded
    >>> mesh = jax.sharding.Mesh(jax.devices()[:1], ("model",))
    >>> y = sharded.softmax(jnp.array([[1.0, 2.0, 3.0]]), mesh)
    >>> bool(jnp.allclose(y, jax.nn.softmax(jnp.array([[1.0, 2.0, 3.0]]))))
    True
  """
  x, where = _mesh_args(x, where, mesh, axis_name, batch_axis, "sharded.softmax")
  return _on_mesh(x, where, mesh, axis_name, batch_axis, False)


def log_softmax(x: ArrayLike, mesh: Mesh, *, axis_name: str = "model",
                batch_axis: str | None = None, where: ArrayLike | None = None) -> jax.Array:
  """``log_softmax(x)`` over the last axis, with the classes split over ``axis_name``
  (``−inf`` for masked classes and for a row with no valid class)."""
  x, where = _mesh_args(x, where, mesh, axis_name, batch_axis, "sharded.log_softmax")
  return _on_mesh(x, where, mesh, axis_name, batch_axis, True)


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5))
def _on_mesh(x, where, mesh, axis_name, batch_axis, log):
  parts, c = mesh.shape[axis_name], x.shape[-1]
  fn = log_softmax_local if log else softmax_local
  spec = P(batch_axis, axis_name)
  out = _mesh.shard_map_call(lambda z, w: fn(z, axis_name=axis_name, where=w), mesh,
                             [(_mesh.pad_classes(x, parts, -jnp.inf), spec),
                              (_mesh.pad_classes(where, parts, False), spec)], spec)
  return out[:, :c]
