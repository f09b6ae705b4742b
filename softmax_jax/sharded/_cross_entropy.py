r"""Class-sharded (vocabulary-parallel) cross-entropy with integer labels.

:func:`cross_entropy_with_integer_labels_local` runs inside a ``jax.shard_map`` that
the caller writes (the classes split over ``axis_name``);
:func:`cross_entropy_with_integer_labels` lays the logits out over a mesh and calls
it.  The per-row loss and its derivatives are :mod:`softmax_jax.sharded._row_loss`;
the reductions are the core's :func:`~softmax_jax._numerics.reduce`, so the results
are those of :func:`softmax_jax.cross_entropy_with_integer_labels`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P
from jax.typing import ArrayLike

from softmax_jax import _arguments
from softmax_jax import _numerics as nx
from softmax_jax.sharded import _mesh, _stats
from softmax_jax.sharded._row_loss import LossOptions, row_losses


def _reduce(loss, weight, reduction, batch_axis):
  """:func:`~softmax_jax._numerics.reduce`, with the sums also over the mesh axis
  ``batch_axis`` (one ``psum`` of two numbers)."""
  if reduction == "none" or batch_axis is None:
    return nx.reduce(loss, weight, reduction)
  total, weight_sum = lax.psum((jnp.sum(loss), jnp.sum(weight).astype(loss.dtype)), batch_axis)
  return nx.reduce(total, weight_sum, reduction)


def options(labels, ignore_index, label_smoothing, z_loss, logit_softcap, reduction,
            fn) -> LossOptions:
  """The loss's options, checked (``ignore_index`` against the labels' dtype)."""
  return LossOptions(_arguments.ignore_index(ignore_index, labels.dtype, fn),
                     _arguments.label_smoothing(label_smoothing, fn),
                     _arguments.z_loss(z_loss, fn), _arguments.logit_softcap(logit_softcap, fn),
                     _arguments.reduction(reduction, fn))


def class_weights_arg(class_weights, width, fn, what="this device's classes"):
  """``class_weights`` as a float array of shape ``(width,)`` (``None`` stays ``None``)."""
  if class_weights is None:
    return None
  cw = _arguments.float_array(class_weights, "class_weights", fn)
  if cw.shape != (width,):
    raise ValueError(f"{fn}: class_weights has shape {cw.shape}, expected ({width},) "
                     f"(the weights of {what})")
  return cw


def mesh_labels(labels, x, ignore_index, fn):
  """``[batch]`` integer labels for ``[batch, ...]`` rows (64-bit host labels kept apart)."""
  labels = _arguments.integer_dtype(nx.host_labels(labels, ignore_index), fn)
  return _arguments.integer_labels(labels, x.shape[:1], f"logits of shape {x.shape}", fn)


def cross_entropy_with_integer_labels_local(
    logits: ArrayLike, labels: ArrayLike, *, axis_name: str, where: ArrayLike | None = None,
    class_weights: ArrayLike | None = None, ignore_index: int | None = None,
    label_smoothing: float = 0.0, reduction: str = "mean", z_loss: float = 0.0,
    logit_softcap: float | None = None, batch_axis: str | None = None) -> jax.Array:
  r"""Cross-entropy with integer labels inside ``shard_map``, the classes split over ``axis_name``.

  The vocabulary-parallel loss of Megatron-LM, for a model that already runs
  in the caller's ``jax.shard_map``: device ``k`` holds the logits of classes
  ``[k·C/D, (k+1)·C/D)`` and every device holds all the labels.  The value is
  that of :func:`softmax_jax.cross_entropy_with_integer_labels` (PyTorch
  semantics) on the whole row:

  .. math::
    \xi = (1-\varepsilon)\, w_t\, (-\log y_t)
          + \frac{\varepsilon}{K} \sum_{c} w_c\, (-\log y_c) + \lambda_z\, \text{lse}^2

  with one ``pmax`` and one ``psum`` of per-row numbers; the gradient (a
  ``custom_jvp``, so forward mode and higher orders work) is local.

  Args:
    logits: ``[..., C/D]``, this device's classes (last axis).
    labels: ``[...]`` integer labels in ``[0, C)`` (global class indices),
      the same on every device of ``axis_name``.
    axis_name: the mesh axis that splits the classes.
    where: optional boolean mask of this device's logits.
    class_weights: optional ``[C/D]``, this device's slice of the weights.
    ignore_index: a label whose examples get loss 0 and do not count.
    label_smoothing: ``ε`` in ``[0, 1]``.
    reduction: ``"mean"`` (over the counted examples' ``w_t``), ``"sum"`` or
      ``"none"`` (``[...]``).
    z_loss: ``λ_z ≥ 0``.
    logit_softcap: ``s`` to use ``s·tanh(z/s)`` as the logits.
    batch_axis: a mesh axis that splits the rows; the ``"mean"`` and ``"sum"``
      are then over all of them (one more ``psum`` of two numbers).

  Returns:
    The loss, the same on every device of ``axis_name``.  A label outside
    ``[0, C)`` (other than ``ignore_index``) or at a masked or ``−inf`` class
    gives NaN; a row with no valid class gives 0 and does not count.

  Examples:
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> from jax.sharding import Mesh, PartitionSpec as P
    >>> from softmax_jax import sharded
    >>> mesh = Mesh(np.array(jax.devices()[:1]), ("model",))
    >>> def loss(z, t):
    ...   return sharded.cross_entropy_with_integer_labels_local(z, t, axis_name="model",
    ...                                                          ignore_index=-100)
    >>> f = jax.jit(jax.shard_map(loss, mesh=mesh, in_specs=(P(None, "model"), P()),
    ...                           out_specs=P()))
    >>> z = jnp.array([[0.0, 0.0], [3.0, 1.0]], jnp.float32)
    >>> float(f(z, jnp.array([1, -100])))
    0.6931471...
  """
  fn = "sharded.cross_entropy_with_integer_labels_local"
  z = _arguments.float_array(logits, "logits", fn)
  _arguments.axes(-1, z.ndim, fn)
  _stats.num_classes(z.shape[-1], axis_name, fn)
  labels = _arguments.integer_dtype(jnp.asarray(labels), fn)
  labels = _arguments.integer_labels(labels, z.shape[:-1], f"logits of shape {z.shape}", fn)
  where = _arguments.where_mask(where, z.shape, fn, "logits")
  weights = class_weights_arg(class_weights, z.shape[-1], fn)
  opts = options(labels, ignore_index, label_smoothing, z_loss, logit_softcap, reduction, fn)
  loss, weight = row_losses(z, labels, where, weights, axis_name, opts)
  return _reduce(loss, weight, opts.reduction, batch_axis)


def local_loss(z, labels, where, weights, axis_name, batch_axis, opts: LossOptions):
  """:func:`cross_entropy_with_integer_labels_local` with the options of ``opts``."""
  return cross_entropy_with_integer_labels_local(
      z, labels, axis_name=axis_name, where=where, class_weights=weights,
      ignore_index=opts.ignore_index, label_smoothing=opts.eps, reduction=opts.reduction,
      z_loss=opts.z_loss, logit_softcap=opts.softcap, batch_axis=batch_axis)


def cross_entropy_with_integer_labels(
    logits: ArrayLike, labels: ArrayLike, mesh: Mesh, *, axis_name: str = "model",
    batch_axis: str | None = None, where: ArrayLike | None = None,
    class_weights: ArrayLike | None = None, ignore_index: int | None = None,
    label_smoothing: float = 0.0, reduction: str = "mean", z_loss: float = 0.0,
    logit_softcap: float | None = None) -> jax.Array:
  r"""Cross-entropy with integer labels, the classes of ``logits`` split over ``axis_name``.

  The same value and gradient as
  :func:`softmax_jax.cross_entropy_with_integer_labels` with the same options,
  computed by :func:`cross_entropy_with_integer_labels_local` on each device:
  one ``pmax`` and one ``psum`` of per-row numbers, and a gradient written on
  each device for its own classes with no communication.

  Args:
    logits: ``[batch, classes]``.
    labels: ``[batch]`` integer labels.
    mesh: the device mesh.
    axis_name: the mesh axis that splits the classes.
    batch_axis: optionally, a mesh axis that splits the rows.
    where: optional boolean mask broadcastable to ``logits``.
    class_weights: optional ``[classes]`` (differentiable).
    ignore_index: a label whose examples get loss 0 and do not count.
    label_smoothing: ``ε`` in ``[0, 1]``.
    reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per example, ``[batch]``).
    z_loss: PaLM's ``λ_z`` (``λ_z lse²`` per counted example).
    logit_softcap: ``s`` to use ``s·tanh(z/s)`` as the logits (Gemma 2).

  Returns:
    The loss, reduced as asked.  Labels outside ``[0, classes)`` (other than
    ``ignore_index``) or at a masked or ``−inf`` class give NaN; a row with no
    valid class gives 0 and does not count in the mean.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from softmax_jax import sharded
    >>> mesh = jax.sharding.Mesh(jax.devices()[:1], ("model",))
    >>> z = jnp.array([[0.0, 0.0], [0.0, -jnp.inf]], jnp.float32)
    >>> float(sharded.cross_entropy_with_integer_labels(z, jnp.array([1, 0]), mesh))
    0.3465735...
  """
  fn = "sharded.cross_entropy_with_integer_labels"
  x = _mesh.mesh_input(logits, mesh, axis_name, batch_axis, fn)
  x = _arguments.float_array(x, "logits", fn)
  labels = mesh_labels(labels, x, ignore_index, fn)
  where = _arguments.where_mask(where, x.shape, fn, "logits")
  weights = class_weights_arg(class_weights, x.shape[-1], fn, "the classes")
  opts = options(labels, ignore_index, label_smoothing, z_loss, logit_softcap, reduction, fn)
  return _on_mesh(x, labels, where, weights, mesh, axis_name, batch_axis, opts)


@functools.partial(jax.jit, static_argnums=(4, 5, 6, 7))
def _on_mesh(x, labels, where, weights, mesh, axis_name, batch_axis, opts):
  parts = mesh.shape[axis_name]
  cls, row = P(batch_axis, axis_name), P(batch_axis)

  def body(z, t, w, cw):
    return local_loss(z, t, w, cw, axis_name, batch_axis, opts)

  args = [(_mesh.pad_classes(x, parts, -jnp.inf), cls), (labels, row),
          (_mesh.pad_classes(where, parts, False), cls),
          (_mesh.pad_classes(weights, parts, 0), P(axis_name))]
  return _mesh.shard_map_call(body, mesh, args, row if opts.reduction == "none" else P())
