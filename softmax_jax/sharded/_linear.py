r"""Class-sharded ``linear_cross_entropy``: the loss of ``hidden @ weight + bias`` with the
weight split by columns, so only ``[batch, classes/D]`` logits exist per device."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P
from jax.typing import ArrayLike

from softmax_jax import _arguments
from softmax_jax.sharded import _mesh
from softmax_jax.sharded._cross_entropy import class_weights_arg, local_loss, mesh_labels, options


def linear_cross_entropy(hidden: ArrayLike, weight: ArrayLike, labels: ArrayLike, mesh: Mesh, *,
                         bias: ArrayLike | None = None, axis_name: str = "model",
                         batch_axis: str | None = None, class_weights: ArrayLike | None = None,
                         ignore_index: int | None = None, label_smoothing: float = 0.0,
                         reduction: str = "mean", z_loss: float = 0.0,
                         logit_softcap: float | None = None) -> jax.Array:
  r"""Cross-entropy of ``softmax(hidden @ weight + bias)`` with ``weight`` split by columns.

  Each device multiplies the hidden states by its own ``[hidden, classes/D]``
  slice of the weight, so only ``[batch, classes/D]`` logits exist per device;
  the loss is :func:`~softmax_jax.sharded.cross_entropy_with_integer_labels_local`
  of them.  In the backward pass ``d weight`` stays local and ``d hidden`` is one
  ``psum`` of ``[batch, hidden]``.

  Args:
    hidden: ``[batch, hidden]``.
    weight: ``[hidden, classes]``; ``classes`` must be divisible by the devices of
      ``axis_name``.
    labels: ``[batch]`` integer labels.
    mesh: the device mesh.
    bias: optional ``[classes]``.
    axis_name: the mesh axis that splits the classes.
    batch_axis: optionally, a mesh axis that splits the rows.
    class_weights, ignore_index, label_smoothing, reduction, z_loss,
      logit_softcap: as in :func:`~softmax_jax.sharded.cross_entropy_with_integer_labels`.
  """
  fn = "sharded.linear_cross_entropy"
  h = _mesh.mesh_input(hidden, mesh, axis_name, batch_axis, fn)
  w = _arguments.float_array(weight, "weight", fn)
  if w.ndim != 2 or w.shape[0] != h.shape[1]:
    raise ValueError(f"{fn}: weight has shape {w.shape} but hidden has shape {h.shape}; "
                     f"weight must be [{h.shape[1]}, classes]")
  parts = mesh.shape[axis_name]
  if w.shape[1] % parts:
    raise ValueError(f"{fn}: {w.shape[1]} classes do not split evenly over the {parts} devices "
                     f"of mesh axis {axis_name!r}; pad the weight with zero columns and a "
                     "bias of -inf for them, or choose a divisible class count")
  b = jnp.zeros((w.shape[1],), w.dtype) if bias is None else jnp.asarray(bias)
  if b.shape != (w.shape[1],):
    raise ValueError(f"{fn}: bias has shape {b.shape}, expected ({w.shape[1]},)")
  labels = mesh_labels(labels, h, ignore_index, fn)
  cw = class_weights_arg(class_weights, w.shape[1], fn, "the classes")
  opts = options(labels, ignore_index, label_smoothing, z_loss, logit_softcap, reduction, fn)
  return _on_mesh(h, w, b, labels, cw, mesh, axis_name, batch_axis, opts)


@functools.partial(jax.jit, static_argnums=(5, 6, 7, 8))
def _on_mesh(h, w, b, labels, cw, mesh, axis_name, batch_axis, opts):
  def body(h, w, b, t, cw):
    return local_loss(h @ w + b, t, None, cw, axis_name, batch_axis, opts)

  row, cls = P(batch_axis), P(axis_name)
  args = [(h, row), (w, P(None, axis_name)), (b, cls), (labels, row), (cw, cls)]
  return _mesh.shard_map_call(body, mesh, args, row if opts.reduction == "none" else P())
