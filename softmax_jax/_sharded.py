r"""Class-sharded (vocabulary-parallel) softmax and cross-entropy with ``jax.shard_map``.

When the class axis of the logits is split over the devices of a mesh axis,
each device holds ``z[:, k·C/D : (k+1)·C/D]``.  The row statistics need three
collectives of ``N`` numbers each (as in Megatron-LM's vocabulary-parallel
cross-entropy):

.. math::
  m = \operatorname{pmax}_k \max_{c \in k} z_c, \qquad
  s = \operatorname{psum}_k \sum_{c \in k} e^{z_c - m}, \qquad
  z_t = \operatorname{psum}_k [t \in k]\, z_t,

after which every device computes its own slice of ``y = e^{z - m} / s`` and the
loss ``ξ = m + log s − z_t``.  The gradient ``∂ξ/∂z = y − t`` (lecture) needs no
collective at all: each device writes ``g·(y − t)`` for its classes.

A class count that the devices do not divide is padded with ``−inf`` logits
(probability 0, gradient 0) and the padding is cut off again.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jax.typing import ArrayLike

from . import _checks
from ._softmax import _upcast


def check_mesh(mesh, axes: dict, fn: str) -> None:
  """``mesh`` is a ``Mesh`` with automatic axes that has every named axis in ``axes``."""
  if not isinstance(mesh, Mesh):
    raise TypeError(f"{fn}: mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
  for name, value in axes.items():
    if value is not None and value not in mesh.shape:
      raise ValueError(f"{fn}: {name}={value!r} is not an axis of the mesh "
                       f"{dict(mesh.shape)}")
  if AxisType.Explicit in tuple(getattr(mesh, "axis_types", ())):
    raise ValueError(f"{fn}: the mesh has Explicit axes {mesh.axis_types}; use automatic "
                     "axes: jax.make_mesh(shape, names, axis_types=(jax.sharding.AxisType.Auto,)"
                     " * len(names)) or jax.sharding.Mesh(devices, names)")


def _check(x, mesh, axis_name, batch_axis, fn):
  check_mesh(mesh, {"axis_name": axis_name, "batch_axis": batch_axis}, fn)
  x = jnp.asarray(x)
  if x.ndim != 2 or not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"{fn}: expected float logits of shape [batch, classes], got "
                     f"{x.dtype} {x.shape}")
  if batch_axis is not None and x.shape[0] % mesh.shape[batch_axis]:
    raise ValueError(f"{fn}: batch size {x.shape[0]} is not divisible by the "
                     f"{mesh.shape[batch_axis]} devices of mesh axis {batch_axis!r}")
  return x


def _place(x, mesh, spec):
  """Lay ``x`` out as ``spec`` on ``mesh``; the compiler inserts whatever moves are needed."""
  return lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def _pad_classes(x, parts):
  """Pad the class axis with −inf up to a multiple of ``parts``."""
  c = x.shape[-1]
  pad = -c % parts
  if pad:
    x = jnp.concatenate([x, jnp.full((x.shape[0], pad), -jnp.inf, x.dtype)], axis=-1)
  return x, c


def _row_stats(z, axis_name):
  """``(m, log s)`` over the whole (sharded) row, ``[rows, 1]`` each."""
  m = lax.pmax(jnp.max(lax.stop_gradient(z), axis=-1, keepdims=True), axis_name)
  m = jnp.where(jnp.isfinite(m), m, jnp.zeros_like(m))
  s = lax.psum(jnp.sum(jnp.exp(z - m), axis=-1, keepdims=True), axis_name)
  return m, jnp.log(s)


def softmax(x: ArrayLike, mesh: Mesh, *, axis_name: str = "model",
            batch_axis: str | None = None) -> jax.Array:
  """``softmax(x)`` over the last axis, with the classes split over ``axis_name``.

  Args:
    x: ``[batch, classes]`` logits (any sharding; they are laid out as
      ``P(batch_axis, axis_name)``).
    mesh: the device mesh.
    axis_name: the mesh axis that splits the classes.
    batch_axis: optionally, a mesh axis that splits the rows.

  Returns:
    ``[batch, classes]`` probabilities, sharded like the input layout.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from softmax_jax import sharded
    >>> mesh = jax.sharding.Mesh(jax.devices()[:1], ("model",))
    >>> y = sharded.softmax(jnp.array([[1.0, 2.0, 3.0]]), mesh)
    >>> bool(jnp.allclose(y, jax.nn.softmax(jnp.array([[1.0, 2.0, 3.0]]))))
    True
  """
  x = _check(x, mesh, axis_name, batch_axis, "sharded.softmax")
  return _log_or_plain(x, mesh, axis_name, batch_axis, log=False)


def log_softmax(x: ArrayLike, mesh: Mesh, *, axis_name: str = "model",
                batch_axis: str | None = None) -> jax.Array:
  """``log_softmax(x)`` over the last axis, with the classes split over ``axis_name``."""
  x = _check(x, mesh, axis_name, batch_axis, "sharded.log_softmax")
  return _log_or_plain(x, mesh, axis_name, batch_axis, log=True)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _log_or_plain(x, mesh, axis_name, batch_axis, log):
  xp, c = _pad_classes(x, mesh.shape[axis_name])

  def local(z):
    dtype = z.dtype
    z = _upcast(z)
    m, log_s = _row_stats(z, axis_name)
    out = (z - m) - log_s
    return (out if log else jnp.exp(out)).astype(dtype)

  spec = P(batch_axis, axis_name)
  out = jax.shard_map(local, mesh=mesh, in_specs=spec, out_specs=spec)(_place(xp, mesh, spec))
  return out[:, :c]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _xent_local(z, labels, axis_name):
  return _xent_fwd(z, labels, axis_name)[0]


def _xent_fwd(z, labels, axis_name):
  zf = _upcast(z)
  m, log_s = _row_stats(zf, axis_name)
  width = z.shape[-1]
  local = labels - lax.axis_index(axis_name) * width
  mine = (local >= 0) & (local < width)
  picked = jnp.take_along_axis(zf, jnp.clip(local, 0, width - 1)[:, None], axis=-1)[:, 0]
  z_t = lax.psum(jnp.where(mine, picked, jnp.zeros_like(picked)), axis_name)
  loss = (m[:, 0] + log_s[:, 0]) - z_t  # ξ = log Σ_c e^{z_c} − z_t
  return loss, (z, m, log_s, local, mine)


def _xent_bwd(axis_name, res, g):
  z, m, log_s, local, mine = res
  y = jnp.exp((_upcast(z) - m) - log_s)
  onehot = (jnp.arange(z.shape[-1]) == local[:, None]) & mine[:, None]
  dz = g[:, None] * (y - onehot.astype(y.dtype))  # ∂ξ/∂z = y − t, this device's classes only
  return dz.astype(z.dtype), None


_xent_local.defvjp(_xent_fwd, _xent_bwd)


def _reduce(per_example, reduction):
  if reduction == "none":
    return per_example
  return jnp.sum(per_example) if reduction == "sum" else jnp.mean(per_example)


def _labels(labels, x, fn):
  of = f"logits of shape {x.shape}"
  return _checks.integer_labels(labels, x.shape[:1], of, fn).astype(jnp.int32)


def cross_entropy_with_integer_labels(logits: ArrayLike, labels: ArrayLike, mesh: Mesh, *,
                                      axis_name: str = "model", batch_axis: str | None = None,
                                      reduction: str = "mean") -> jax.Array:
  r"""``ξ = −log softmax(z)_t`` with the classes of ``logits`` split over ``axis_name``.

  Three collectives of ``batch`` numbers (the row max, the exponential sum and
  the target logit); the gradient ``g·(y − t)`` is computed on each device for
  its own classes, with no communication.

  Args:
    logits: ``[batch, classes]``.
    labels: ``[batch]`` integer labels in ``[0, classes)``.
    mesh: the device mesh.
    axis_name: the mesh axis that splits the classes.
    batch_axis: optionally, a mesh axis that splits the rows.
    reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per example, ``[batch]``).

  Returns:
    The loss, reduced as asked.
  """
  fn = "sharded.cross_entropy_with_integer_labels"
  x = _check(logits, mesh, axis_name, batch_axis, fn)
  labels = _labels(labels, x, fn)
  reduction = _checks.reduction(reduction, fn)
  return _xent_impl(x, labels, mesh, axis_name, batch_axis, reduction)


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5))
def _xent_impl(x, labels, mesh, axis_name, batch_axis, reduction):
  xp, _ = _pad_classes(x, mesh.shape[axis_name])
  mapped = jax.shard_map(lambda z, t: _xent_local(z, t, axis_name), mesh=mesh,
                         in_specs=(P(batch_axis, axis_name), P(batch_axis)),
                         out_specs=P(batch_axis), check_vma=True)
  xp = _place(xp, mesh, P(batch_axis, axis_name))
  return _reduce(mapped(xp, _place(labels, mesh, P(batch_axis))), reduction)


def linear_cross_entropy(hidden: ArrayLike, weight: ArrayLike, labels: ArrayLike, mesh: Mesh, *,
                         bias: ArrayLike | None = None, axis_name: str = "model",
                         batch_axis: str | None = None, reduction: str = "mean") -> jax.Array:
  r"""Cross-entropy of ``softmax(hidden @ weight + bias)`` with ``weight`` split by columns.

  Each device multiplies the hidden states by its own ``[hidden, classes/D]``
  slice of the weight, so only ``[batch, classes/D]`` logits exist per device;
  the loss then needs the three row collectives of
  :func:`cross_entropy_with_integer_labels`.  In the backward pass
  ``d weight`` stays local and ``d hidden`` is one ``psum`` of ``[batch, hidden]``.

  Args:
    hidden: ``[batch, hidden]``.
    weight: ``[hidden, classes]``; ``classes`` must be divisible by the devices of
      ``axis_name``.
    labels: ``[batch]`` integer labels.
    mesh: the device mesh.
    bias: optional ``[classes]``.
    axis_name: the mesh axis that splits the classes.
    batch_axis: optionally, a mesh axis that splits the rows.
    reduction: ``"mean"``, ``"sum"`` or ``"none"``.
  """
  fn = "sharded.linear_cross_entropy"
  h = _check(hidden, mesh, axis_name, batch_axis, fn)
  w = jnp.asarray(weight)
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
  labels = _labels(labels, h, fn)
  reduction = _checks.reduction(reduction, fn)
  return _linear_impl(h, w, b, labels, mesh, axis_name, batch_axis, reduction)


@functools.partial(jax.jit, static_argnums=(4, 5, 6, 7))
def _linear_impl(h, w, b, labels, mesh, axis_name, batch_axis, reduction):
  def local(h, w, b, t):
    return _xent_local(h @ w + b, t, axis_name)

  mapped = jax.shard_map(local, mesh=mesh,
                         in_specs=(P(batch_axis), P(None, axis_name), P(axis_name),
                                   P(batch_axis)),
                         out_specs=P(batch_axis), check_vma=True)
  h, labels = _place(h, mesh, P(batch_axis)), _place(labels, mesh, P(batch_axis))
  w, b = _place(w, mesh, P(None, axis_name)), _place(b, mesh, P(axis_name))
  return _reduce(mapped(h, w, b, labels), reduction)
