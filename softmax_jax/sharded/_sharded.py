r"""Class-sharded (vocabulary-parallel) softmax and cross-entropy with ``jax.shard_map``.

When the class axis of the logits is split over the devices of a mesh axis,
device ``k`` holds ``z[:, k·C/D : (k+1)·C/D]``.  Each device computes the
:class:`~softmax_jax._numerics.RowStats` ``(m_k, s_k, tail_k)`` of its own
classes; the whole row's statistics are then (as in Megatron-LM's
vocabulary-parallel cross-entropy, plus the tail):

.. math::
  m = \operatorname{pmax}_k m_k, \qquad
  (s, \text{tail}, z_t, \dots) = \operatorname{psum}_k
      \big(\text{rescale}_m(s_k, \text{tail}_k),\ [t \in k]\, z_t, \dots\big)

one ``pmax`` and one ``psum`` of a tuple of ``[rows]`` numbers (the target's
class weight and the smoothing sums ``K``, ``Σ w_c``, ``Σ w_c (z_c − m)`` join
the same ``psum`` when those options are used).  After that every device
computes the loss, and its own slice of ``y = e^{z − m}/s`` and of the
gradient: ``∂ξ/∂z = y − t`` (lecture) needs no collective, so JAX's transpose
of the tangent ``psum`` is free and ``value_and_grad`` has the collectives of
the forward pass only.

The ``*_local`` functions run inside a ``jax.shard_map`` that the caller
writes (the classes split over ``axis_name``); the mesh-taking functions wrap
them.  A class count that the devices do not divide is padded with ``−inf``
logits (not classes: probability 0, gradient 0, a label there gives NaN) and
the padding is cut off again.  Every rule (labels, masking, statistics,
smoothing, soft-cap, reductions) is the one of :mod:`softmax_jax._numerics`, so
the results are those of the unsharded functions.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jax.typing import ArrayLike

from softmax_jax import _arguments
from softmax_jax import _numerics as nx

# ---------------------------------------------------------------------------
# Row statistics across the devices of axis_name
# ---------------------------------------------------------------------------


def _global_stats(zm, axis_name, extra=None, tail=True):
  """``(RowStats of the whole row, psum of extra(m))``: one ``pmax``, one ``psum``.

  ``extra(m)`` gives a dict of more local ``[..., 1]`` sums (they may use the
  global max ``m``) that travel in the same ``psum``.
  """
  local = nx.part_stats(zm)
  m = lax.stop_gradient(lax.pmax(local.m, axis_name))
  m = jnp.where(m == -jnp.inf, jnp.zeros_like(m), m)  # an empty row: m = 0 (finalize)
  local = nx.rescale(local, m)
  more = {} if extra is None else extra(m)
  if tail:
    s, tail_sum, more = lax.psum((local.s, local.tail, more), axis_name)
  else:
    s, more = lax.psum((local.s, more), axis_name)
    tail_sum = jnp.zeros_like(s)
  return nx.RowStats(m, s, tail_sum), more


def _num_classes(width, axis_name, fn):
  """The whole row's class count ``width · D`` (inside ``shard_map`` only)."""
  try:
    return width * lax.axis_size(axis_name)
  except NameError as err:
    raise ValueError(f"{fn}: axis_name={axis_name!r} is not bound; call this function inside "
                     "jax.shard_map over a mesh with that axis (or use the mesh-taking "
                     "function of softmax_jax.sharded)") from err


# ---------------------------------------------------------------------------
# softmax and log_softmax
# ---------------------------------------------------------------------------


def _log_probs(x, where, axis_name):
  """``(masked logits, log y)``, ``log y = (z − m) − log s`` (``−inf`` entries stay ``−inf``)."""
  zm = nx.masked(nx.upcast(x), where)
  st, _ = _global_stats(zm, axis_name, tail=False)
  out = (zm - st.m) - jnp.log(nx.denominator(st.s))
  return zm, out


def _local_args(x, where, axis_name, fn):
  x = _arguments.float_array(x, "x", fn)
  _arguments.axes(-1, x.ndim, fn)
  _num_classes(x.shape[-1], axis_name, fn)
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
    >>> f = jax.shard_map(lambda z: sharded.softmax_local(z, axis_name="model"), mesh=mesh,
    ...                   in_specs=P(None, "model"), out_specs=P(None, "model"))
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


# ---------------------------------------------------------------------------
# Cross-entropy with integer labels: one device's part of the rows' statistics
# ---------------------------------------------------------------------------


class Options(NamedTuple):
  """The static options of the loss."""

  ignore_index: int | None = None
  eps: float = 0.0  # label smoothing
  z_loss: float = 0.0
  softcap: float | None = None
  reduction: str = "mean"


class ShardParts(NamedTuple):
  """What the loss and its gradient share on one device (``[..., 1]`` per row)."""

  zm: jax.Array  # this device's masked logits [..., C/D]
  stats: nx.RowStats  # of the whole row
  log_s: jax.Array
  labels: nx.LabelInfo
  is_t: jax.Array  # [..., C/D]: the label's class is this entry
  local_t: jax.Array  # the label's index on this device (clipped)
  mine: jax.Array  # the label's class is on this device
  shifted_t: jax.Array  # z_t − m
  w_t: jax.Array  # the label's class weight (1 without weights)
  smooth: jax.Array | None  # ε / K
  wsum: jax.Array | None  # Σ_c w_c over the valid classes
  wz: jax.Array | None  # Σ_c w_c (z_c − m) over the valid classes
  counted: jax.Array
  bad: jax.Array


def _class_weights(weights, zm):
  """``w_c`` broadcast over the rows, 0 on invalid classes."""
  wc = jnp.ones_like(zm) if weights is None else jnp.broadcast_to(weights, zm.shape)
  return jnp.where(zm != -jnp.inf, wc, jnp.zeros_like(wc))


def _on_device(values, p_local, mine):
  """``values[local index]`` where the label's class is on this device, else 0 (``[..., 1]``)."""
  picked = values[p_local] if values.ndim == 1 else jnp.take_along_axis(values, p_local, -1)
  return jnp.where(mine, picked, jnp.zeros_like(picked))


def _parts(z, code, weights, where, axis_name, eps) -> ShardParts:
  zm = nx.masked(z, where)
  width = zm.shape[-1]
  lab = nx.label_info(code[..., None])
  local = lab.index - lax.axis_index(axis_name) * width
  mine = lab.is_class & (local >= 0) & (local < width)
  local = jnp.clip(local, 0, width - 1)
  is_t = (lax.broadcasted_iota(jnp.int32, zm.shape, zm.ndim - 1) == local) & mine

  def extra(m):
    sums = {"z_t": _on_device(zm, local, mine)}
    if weights is not None:
      sums["w_t"] = _on_device(weights, local, mine)
    if eps > 0:
      wc = _class_weights(weights, zm)
      shifted = jnp.where(zm != -jnp.inf, zm - m, jnp.zeros_like(zm))
      sums.update(k=nx.count_valid(zm), wsum=jnp.sum(wc, -1, keepdims=True),
                  wz=jnp.sum(wc * shifted, -1, keepdims=True))
    return sums

  st, sums = _global_stats(zm, axis_name, extra)
  w_t = sums.get("w_t", jnp.ones_like(st.m))
  smooth = None if eps == 0 else nx.smoothing_coef(eps, sums["k"])
  shifted_t = sums["z_t"] - st.m
  counted = nx.nonempty(st) & ~lab.ignored
  bad = counted & ~(lab.is_class & (shifted_t != -jnp.inf))
  return ShardParts(zm, st, nx.log_normaliser(st), lab, is_t, local, mine, shifted_t, w_t,
                    smooth, sums.get("wsum"), sums.get("wz"), counted, bad)


def _lse(p: ShardParts):
  return p.stats.m + p.log_s


def _value(p: ShardParts, eps, z_loss):
  """Per-example ``(loss, w_t of the counted examples)``, the same on every device."""
  # PyTorch semantics: (1 − ε) w_t (−log y_t) + (ε/K) Σ_c w_c (−log y_c), with
  # Σ_c w_c (−log y_c) = W log s − Σ_c w_c (z_c − m) (both terms ≥ 0 for w ≥ 0).
  loss = (1 - eps) * p.w_t * (p.log_s - p.shifted_t)
  if p.smooth is not None:
    loss = loss + p.smooth * (p.wsum * p.log_s - p.wz)
  if z_loss:  # PaLM's λ_z lse²
    loss = loss + z_loss * jnp.square(_lse(p))
  weight = jnp.where(p.counted, p.w_t, jnp.zeros_like(p.w_t))
  return nx.finish(loss, p.counted, p.bad)[..., 0], weight[..., 0]


def _gradient(p: ShardParts, weights, eps, z_loss):
  r"""This device's slice of ``∂ξ/∂z = (1 − ε) w_t (y − δ_t) + (ε/K)(W y − w) + 2 λ_z lse y``
  (lecture: ``y − t``), the label's ``y_t − 1`` written as ``−(1 − y_t)`` from the tail."""
  s = p.stats.s
  y = jnp.exp(p.zm - p.stats.m) / nx.denominator(s)
  scale = (1 - eps) * p.w_t
  grad = scale * y
  label_entry = -scale * nx.complement(p.stats, p.shifted_t)
  if p.smooth is not None:
    smooth = p.smooth * (p.wsum * y - _class_weights(weights, p.zm))
    grad = grad + smooth
    label_entry = label_entry + _on_device(smooth, p.local_t, p.mine)
  grad = jnp.where(p.is_t, label_entry, grad)
  if z_loss:
    grad = grad + (2 * z_loss) * _lse(p) * y
  return nx.finish(grad, p.counted, p.bad)


def _weight_tangent(p: ShardParts, dw, eps):
  """This device's part of ``Σ_c ∂ξ/∂w_c ẇ_c`` and of ``ẇ_t``."""
  dw_t = _on_device(dw, p.local_t, p.mine)
  tangent = (1 - eps) * (p.log_s - p.shifted_t) * dw_t
  if p.smooth is not None:
    neg_log_y = jnp.where(p.zm != -jnp.inf, p.log_s - (p.zm - p.stats.m), 0)
    tangent = tangent + p.smooth * jnp.sum(neg_log_y * dw, -1, keepdims=True)
  return tangent, dw_t


@functools.partial(jax.custom_jvp, nondiff_argnums=(4, 5, 6))
def _xent_rows(z, code, weights, where, axis_name, eps, z_loss):
  return _value(_parts(z, code, weights, where, axis_name, eps), eps, z_loss)


@_xent_rows.defjvp
def _xent_rows_jvp(axis_name, eps, z_loss, primals, tangents):
  z, code, weights, where = primals
  dz, _, dw, _ = tangents
  p = _parts(z, code, weights, where, axis_name, eps)
  out = _value(p, eps, z_loss)
  # dξ = ⟨∂ξ/∂z, ż⟩ (+ the class weights' part): each device its own classes, then one
  # psum.  The rule is plain JAX code, so it is differentiable again (second order).
  local = [jnp.sum(_gradient(p, weights, eps, z_loss) * dz, -1)]
  if weights is not None:
    t_w, dw_t = _weight_tangent(p, dw, eps)
    local += [t_w[..., 0], dw_t[..., 0]]
  total = lax.psum(tuple(local), axis_name)
  tangent, d_weight = total[0], jnp.zeros_like(out[1])
  if weights is not None:
    tangent = tangent + nx.finish(total[1][..., None], p.counted, p.bad)[..., 0]
    d_weight = jnp.where(p.counted[..., 0], total[2], jnp.zeros_like(total[2]))
  return out, (tangent, d_weight)


def _loss_rows(z, labels, where, weights, axis_name, opts: Options):
  """Per-example ``(loss, counted w_t)`` of this device's logits ``z`` (any dtype)."""
  z, _ = nx.softcap(nx.upcast(z), opts.softcap)  # Gemma 2's s·tanh(z/s); −inf stays −inf
  code = nx.canonical_labels(labels, z.shape[-1] * lax.axis_size(axis_name), opts.ignore_index)
  w = None if weights is None else weights.astype(z.dtype)
  return _xent_rows(z, code, w, where, axis_name, opts.eps, opts.z_loss)


def _reduce(loss, weight, reduction, batch_axis):
  """:func:`_numerics.reduce`, with the sums also over the mesh axis ``batch_axis``."""
  if reduction == "none" or batch_axis is None:
    return nx.reduce(loss, weight, reduction)
  total, denominator = lax.psum((jnp.sum(loss), jnp.sum(weight).astype(loss.dtype)), batch_axis)
  if reduction == "sum":
    return total
  return total / jnp.where(denominator > 0, denominator, jnp.ones_like(denominator))


def _options(labels, ignore_index, label_smoothing, z_loss, logit_softcap, reduction, fn):
  return Options(_arguments.ignore_index(ignore_index, labels.dtype, fn),
                 _arguments.label_smoothing(label_smoothing, fn), _arguments.z_loss(z_loss, fn),
                 _arguments.logit_softcap(logit_softcap, fn), _arguments.reduction(reduction, fn))


def _class_weights_arg(class_weights, width, fn, what="this device's classes"):
  if class_weights is None:
    return None
  cw = _arguments.float_array(class_weights, "class_weights", fn)
  if cw.shape != (width,):
    raise ValueError(f"{fn}: class_weights has shape {cw.shape}, expected ({width},) "
                     f"(the weights of {what})")
  return cw


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
    >>> f = jax.shard_map(loss, mesh=mesh, in_specs=(P(None, "model"), P()), out_specs=P())
    >>> z = jnp.array([[0.0, 0.0], [3.0, 1.0]], jnp.float32)
    >>> float(f(z, jnp.array([1, -100])))
    0.6931471...
  """
  fn = "sharded.cross_entropy_with_integer_labels_local"
  z = _arguments.float_array(logits, "logits", fn)
  _arguments.axes(-1, z.ndim, fn)
  _num_classes(z.shape[-1], axis_name, fn)
  labels = _arguments.integer_dtype(jnp.asarray(labels), fn)
  labels = _arguments.integer_labels(labels, z.shape[:-1], f"logits of shape {z.shape}", fn)
  where = _arguments.where_mask(where, z.shape, fn, "logits")
  weights = _class_weights_arg(class_weights, z.shape[-1], fn)
  opts = _options(labels, ignore_index, label_smoothing, z_loss, logit_softcap, reduction, fn)
  loss, weight = _loss_rows(z, labels, where, weights, axis_name, opts)
  return _reduce(loss, weight, opts.reduction, batch_axis)


# ---------------------------------------------------------------------------
# The mesh-taking functions
# ---------------------------------------------------------------------------


def _check(x, mesh, axis_name, batch_axis, fn):
  _arguments.mesh(mesh, {"axis_name": axis_name, "batch_axis": batch_axis}, fn)
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


def _pad_classes(x, parts, fill):
  """Pad the last axis with ``fill`` up to a multiple of ``parts``."""
  pad = -x.shape[-1] % parts
  if pad:
    x = jnp.concatenate([x, jnp.full((*x.shape[:-1], pad), fill, x.dtype)], axis=-1)
  return x


def _sharded_call(body, mesh, args, out_spec):
  """``shard_map(body)`` over the ``(array, spec)`` pairs of ``args``, ``None`` left out."""
  present = [(i, a, s) for i, (a, s) in enumerate(args) if a is not None]

  def mapped(*vals):
    full = [None] * len(args)
    for (i, _, _), v in zip(present, vals, strict=True):
      full[i] = v
    return body(*full)

  specs = tuple(s for _, _, s in present)
  return jax.shard_map(mapped, mesh=mesh, in_specs=specs, out_specs=out_spec)(
      *(_place(a, mesh, s) for _, a, s in present))


def _mesh_args(x, where, mesh, axis_name, batch_axis, fn):
  x = _arguments.float_array(_check(x, mesh, axis_name, batch_axis, fn), "x", fn)
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
  return _softmax_impl(x, where, mesh, axis_name, batch_axis, False)


def log_softmax(x: ArrayLike, mesh: Mesh, *, axis_name: str = "model",
                batch_axis: str | None = None, where: ArrayLike | None = None) -> jax.Array:
  """``log_softmax(x)`` over the last axis, with the classes split over ``axis_name``
  (``−inf`` for masked classes and for a row with no valid class)."""
  x, where = _mesh_args(x, where, mesh, axis_name, batch_axis, "sharded.log_softmax")
  return _softmax_impl(x, where, mesh, axis_name, batch_axis, True)


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5))
def _softmax_impl(x, where, mesh, axis_name, batch_axis, log):
  parts, c = mesh.shape[axis_name], x.shape[-1]
  fn = log_softmax_local if log else softmax_local
  spec = P(batch_axis, axis_name)
  where = None if where is None else _pad_classes(where, parts, False)
  out = _sharded_call(lambda z, w: fn(z, axis_name=axis_name, where=w), mesh,
                      [(_pad_classes(x, parts, -jnp.inf), spec), (where, spec)], spec)
  return out[:, :c]


def _local_call(z, labels, where, weights, axis_name, batch_axis, opts: Options):
  """:func:`cross_entropy_with_integer_labels_local` with the options of ``opts``."""
  return cross_entropy_with_integer_labels_local(
      z, labels, axis_name=axis_name, where=where, class_weights=weights,
      ignore_index=opts.ignore_index, label_smoothing=opts.eps, reduction=opts.reduction,
      z_loss=opts.z_loss, logit_softcap=opts.softcap, batch_axis=batch_axis)


def _mesh_labels(labels, x, ignore_index, fn):
  labels = _arguments.integer_dtype(nx.host_labels(labels, ignore_index), fn)
  return _arguments.integer_labels(labels, x.shape[:1], f"logits of shape {x.shape}", fn)


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
  x = _check(logits, mesh, axis_name, batch_axis, fn)
  x = _arguments.float_array(x, "logits", fn)
  labels = _mesh_labels(labels, x, ignore_index, fn)
  where = _arguments.where_mask(where, x.shape, fn, "logits")
  weights = _class_weights_arg(class_weights, x.shape[-1], fn, "the classes")
  opts = _options(labels, ignore_index, label_smoothing, z_loss, logit_softcap, reduction, fn)
  return _xent_impl(x, labels, where, weights, mesh, axis_name, batch_axis, opts)


@functools.partial(jax.jit, static_argnums=(4, 5, 6, 7))
def _xent_impl(x, labels, where, weights, mesh, axis_name, batch_axis, opts):
  parts = mesh.shape[axis_name]
  cls, row = P(batch_axis, axis_name), P(batch_axis)

  def body(z, t, w, cw):
    return _local_call(z, t, w, cw, axis_name, batch_axis, opts)

  args = [(_pad_classes(x, parts, -jnp.inf), cls), (labels, row),
          (None if where is None else _pad_classes(where, parts, False), cls),
          (None if weights is None else _pad_classes(weights, parts, 0), P(axis_name))]
  return _sharded_call(body, mesh, args, row if opts.reduction == "none" else P())


def linear_cross_entropy(hidden: ArrayLike, weight: ArrayLike, labels: ArrayLike, mesh: Mesh, *,
                         bias: ArrayLike | None = None, axis_name: str = "model",
                         batch_axis: str | None = None, class_weights: ArrayLike | None = None,
                         ignore_index: int | None = None, label_smoothing: float = 0.0,
                         reduction: str = "mean", z_loss: float = 0.0,
                         logit_softcap: float | None = None) -> jax.Array:
  r"""Cross-entropy of ``softmax(hidden @ weight + bias)`` with ``weight`` split by columns.

  Each device multiplies the hidden states by its own ``[hidden, classes/D]``
  slice of the weight, so only ``[batch, classes/D]`` logits exist per device;
  the loss is :func:`cross_entropy_with_integer_labels_local` of them.  In the
  backward pass ``d weight`` stays local and ``d hidden`` is one ``psum`` of
  ``[batch, hidden]``.

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
      logit_softcap: as in :func:`cross_entropy_with_integer_labels`.
  """
  fn = "sharded.linear_cross_entropy"
  h = _check(hidden, mesh, axis_name, batch_axis, fn)
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
  labels = _mesh_labels(labels, h, ignore_index, fn)
  cw = _class_weights_arg(class_weights, w.shape[1], fn, "the classes")
  opts = _options(labels, ignore_index, label_smoothing, z_loss, logit_softcap, reduction, fn)
  return _linear_impl(h, w, b, labels, cw, mesh, axis_name, batch_axis, opts)


@functools.partial(jax.jit, static_argnums=(5, 6, 7, 8))
def _linear_impl(h, w, b, labels, cw, mesh, axis_name, batch_axis, opts):
  def body(h, w, b, t, cw):
    return _local_call(h @ w + b, t, None, cw, axis_name, batch_axis, opts)

  row, cls = P(batch_axis), P(axis_name)
  args = [(h, row), (w, P(None, axis_name)), (b, cls), (labels, row), (cw, cls)]
  return _sharded_call(body, mesh, args, row if opts.reduction == "none" else P())
