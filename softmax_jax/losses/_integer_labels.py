r"""Cross-entropy with integer class labels, ``cross_entropy_with_integer_labels``.

Lecture ("Cross-entropy loss function"): with a one-hot ``t`` the loss
``ξ = −Σ_c t_c log y_c`` is ``−log y_t`` of the label's class; ("Derivative of the
cross-entropy loss function for the softmax function"): ``∂ξ/∂z = y − t``.  PyTorch's
``F.cross_entropy`` options fold in: class weights ``w``, smoothing ``ε`` over the ``K``
valid classes, ``ignore_index``, PaLM's ``z_loss`` and Gemma 2's logit soft-cap:

.. math::
  \xi = (1-\varepsilon)\, w_t\, (-\log y_t) + \frac{\varepsilon}{K} \sum_c w_c\, (-\log y_c),
  \qquad
  \frac{\partial \xi}{\partial z_c} = (1-\varepsilon)\, w_t (y_c - \delta_{ct})
      + \frac{\varepsilon}{K} (W y_c - w_c), \quad W = \sum_c w_c

No one-hot array is built.  The loss is a ``jax.custom_jvp`` (all modes and orders);
the label's entry ``y_t − 1`` is written ``−(1 − y_t)`` with ``1 − y_t`` from the tail
of the row sum (``_numerics.complement``).  On a GPU the fused Pallas kernel
(``softmax_jax._kernels``) computes the same loss.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from softmax_jax import _arguments, _kernels
from softmax_jax import _numerics as nx


class IntParts(NamedTuple):
  """What the integer-label loss and its gradient share (``[..., 1]`` per row)."""

  zm: jax.Array  # masked logits
  stats: nx.RowStats
  log_s: jax.Array
  labels: nx.LabelInfo  # each field [..., 1]
  shifted_t: jax.Array  # z_t − m
  w_t: jax.Array  # the label's class weight (1 without weights)
  smooth: jax.Array | None  # ε / K (with smoothing)
  wsum: jax.Array | None  # Σ_c w_c over the valid classes (with smoothing)
  counted: jax.Array  # the example counts: a valid class, not ignored
  bad: jax.Array  # counted, but the label is not a valid class


class PerExample(NamedTuple):
  """What the loss returns per example (the class axis dropped)."""

  loss: jax.Array
  weight: jax.Array  # w_t of the counted examples, 0 elsewhere (the mean's denominator)


def _at_label(x, index):
  """``x[..., index]`` per row: the entry of each row's label class, as ``[..., 1]``."""
  return jnp.take_along_axis(x, index[..., None], axis=-1)


def _valid_class_weights(weights, z):
  """``w_c`` broadcast over the rows, 0 on invalid classes."""
  wc = jnp.ones_like(z) if weights is None else jnp.broadcast_to(weights, z.shape)
  return jnp.where(z != -jnp.inf, wc, jnp.zeros_like(wc))


def _int_parts(z, code, weights, where, eps) -> IntParts:
  zm = nx.masked(z, where)
  st = nx.row_stats(zm, tail=False)
  lab = nx.label_info(code[..., None])
  shifted_t = _at_label(zm, lab.index[..., 0]) - st.m
  w_t = jnp.ones_like(st.m) if weights is None else weights[lab.index]
  smooth = wsum = None
  if eps > 0:
    smooth = nx.smoothing_coef(eps, nx.count_valid(zm))
    wsum = jnp.sum(_valid_class_weights(weights, zm), -1, keepdims=True)
  counted, bad = nx.label_status(nx.nonempty(st), lab, shifted_t)
  return IntParts(zm, st, nx.log_normaliser(st), lab, shifted_t, w_t, smooth, wsum, counted,
                  bad)


def _int_value(p: IntParts, weights, eps) -> PerExample:
  """Per-example loss and ``w_t`` of the counted examples."""
  # PyTorch semantics: (1 − ε) w_t (−log y_t) + (ε/K) Σ_c w_c (−log y_c),
  # with −log y_c = log s − (z_c − m).
  loss = (1 - eps) * p.w_t * (p.log_s - p.shifted_t)
  if p.smooth is not None:
    neg_log_y = jnp.where(p.zm != -jnp.inf, p.log_s - (p.zm - p.stats.m), 0)
    loss = loss + p.smooth * jnp.sum(_valid_class_weights(weights, p.zm) * neg_log_y, -1,
                                     keepdims=True)
  weight = jnp.where(p.counted, p.w_t, jnp.zeros_like(p.w_t))
  return PerExample(nx.finish(loss, p.counted, p.bad)[..., 0], weight[..., 0])


def _int_gradient(p: IntParts, weights, eps) -> jax.Array:
  r"""``∂ξ/∂z_c = (1 − ε) w_t (y_c − δ_ct) + (ε/K)(W y_c − w_c)`` (lecture: ``y − t``, with the
  weights and smoothing folded in), the label's ``y_t − 1`` written as ``−(1 − y_t)``."""
  y = jnp.exp(p.zm - p.stats.m) / nx.denominator(p.stats.s)
  scale = (1 - eps) * p.w_t
  grad = scale * y
  st = nx.with_tail(p.stats, p.zm)
  label_entry = -scale * nx.complement(st, p.shifted_t)
  if p.smooth is not None:
    smooth = p.smooth * (p.wsum * y - _valid_class_weights(weights, p.zm))
    grad = grad + smooth
    label_entry = label_entry + _at_label(smooth, p.labels.index[..., 0])
  is_t = lax.broadcasted_iota(jnp.int32, y.shape, y.ndim - 1) == p.labels.index
  return nx.finish(jnp.where(is_t, label_entry, grad), p.counted, p.bad)


def _int_weight_tangent(p: IntParts, dw, eps) -> PerExample:
  """The class weights' part of the tangent: ``Σ_c ∂ξ/∂w_c ẇ_c = (1 − ε)(−log y_t) ẇ_t
  + (ε/K) Σ_c (−log y_c) ẇ_c`` for the loss, ``ẇ_t`` (counted rows) for the weight."""
  dw_t = dw[p.labels.index]
  # −log y_t is +inf on a row without a valid class; zero it before it meets ẇ, so that
  # the transpose (the weights' gradient) has no 0·inf there
  nll = jnp.where(p.counted, p.log_s - p.shifted_t, 0)
  tangent = (1 - eps) * nll * dw_t
  if p.smooth is not None:
    neg_log_y = jnp.where(p.zm != -jnp.inf, p.log_s - (p.zm - p.stats.m), 0)
    tangent = tangent + p.smooth * jnp.sum(neg_log_y * dw, -1, keepdims=True)
  return PerExample(nx.finish(tangent, p.counted, p.bad)[..., 0],
                    jnp.where(p.counted, dw_t, 0)[..., 0])


@partial(jax.custom_jvp, nondiff_argnums=(4,))
def _int_xent(z, code, weights, where, eps) -> PerExample:
  """Per-example loss of label codes ``code`` (``_numerics.canonical_labels``)."""
  return _int_value(_int_parts(z, code, weights, where, eps), weights, eps)


@_int_xent.defjvp
def _int_xent_jvp(eps, primals, tangents):
  # ∂ξ/∂z = y − t with the weights and smoothing folded in (lecture, "Derivative of the
  # cross-entropy loss function for the softmax function"; see _int_gradient), so
  # dξ = ⟨∂ξ/∂z, ż⟩ + Σ_c ∂ξ/∂w_c ẇ_c.  XLA fuses y into the product with ż.
  z, code, weights, where = primals
  dz, _, dw, _ = tangents
  p = _int_parts(z, code, weights, where, eps)
  out = _int_value(p, weights, eps)
  tangent = jnp.sum(_int_gradient(p, weights, eps) * dz, -1)
  d_weight = jnp.zeros_like(out.weight)
  if weights is not None:
    t_w, d_weight = _int_weight_tangent(p, dw, eps)
    tangent = tangent + t_w
  return out, PerExample(tangent, d_weight)


@partial(jax.jit, static_argnums=(4, 5, 6, 7, 8, 9))
def _reduced_int_xent(logits, labels, class_weights, where, axis, eps, ignore_index,
                      reduction, z_loss=0.0, softcap=None):
  """The XLA loss: soft-cap, label codes, :func:`_int_xent`, z-loss, then the reduction."""
  z = nx.upcast(jnp.moveaxis(logits, axis, -1))
  z, _ = nx.softcap(z, softcap)  # Gemma 2's s·tanh(z/s); −inf stays −inf
  w = None if where is None else jnp.moveaxis(where, axis, -1)
  cw = None if class_weights is None else class_weights.astype(z.dtype)
  code = nx.canonical_labels(labels, z.shape[-1], ignore_index)
  loss, weight = _int_xent(z, code, cw, w, eps)
  if z_loss:  # PaLM's auxiliary loss λ_z·lse² on the counted rows; d/dz = 2 λ_z lse y
    lse = nx.logsumexp(nx.masked(z, w))
    counted = lse.nonempty[..., 0] & (code != nx.IGNORED)
    loss = loss + jnp.where(counted, z_loss * jnp.square(lse.lse[..., 0]), 0)
  return nx.reduce(loss, weight, reduction)


def _checked_labels(labels, logits, axis, axis_arg, fn, ignore_index):
  """``labels`` as an integer array of the shape of ``logits`` without ``axis``."""
  labels = _arguments.integer_dtype(nx.host_labels(labels, ignore_index), fn)
  expected = logits.shape[:axis] + logits.shape[axis + 1 :]
  if labels.shape != expected:
    raise ValueError(
        f"{fn}: labels has shape {labels.shape} but logits has shape {logits.shape} with "
        f"axis={axis_arg}, so labels must have shape {expected}."
    )
  return labels


def cross_entropy_with_integer_labels(
    logits: ArrayLike,
    labels: ArrayLike,
    axis: int = -1,
    *,
    where: ArrayLike | None = None,
    class_weights: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    z_loss: float = 0.0,
    logit_softcap: float | None = None,
    impl: str = "auto",
    donate_logits: bool = False,
) -> jax.Array:
  r"""Cross-entropy with integer class labels, with PyTorch's ``F.cross_entropy`` semantics.

  For an example with label ``t``, class weights ``w`` and smoothing ``ε``:

  .. math::
    \xi = (1-\varepsilon)\, w_t\, (-\log y_t)
          + \frac{\varepsilon}{K} \sum_{c} w_c\, (-\log y_c)

  with ``K`` the number of valid classes (``C`` when nothing is masked).
  ``reduction="mean"`` divides the summed loss by the summed ``w_t`` of the
  counted examples (not ignored, with a valid class); 0 when none counts.
  The gradient is the lecture's ``y − t`` with the weights and smoothing
  folded in, and no one-hot array is ever built.

  Args:
    logits: ``[..., C, ...]`` with the classes at ``axis``.
    labels: integer class indices, shape of ``logits`` without ``axis``.
    axis: the class axis.
    where: optional boolean mask broadcastable to ``logits``.
    class_weights: optional ``[C]`` weights (differentiable).
    ignore_index: a label value whose examples get loss 0, gradient 0 and do
      not count in the mean (PyTorch uses -100).
    label_smoothing: ``ε`` in ``[0, 1]``.
    reduction: ``"mean"``, ``"sum"`` or ``"none"``.
    z_loss: PaLM's auxiliary loss: ``λ_z · lse²`` is added to each counted
      example (``lse = log Σ_c e^{z_c}``); its gradient ``2 λ_z lse · y``.
    logit_softcap: ``s`` to use ``s·tanh(z/s)`` as the logits (Gemma 2);
      ``−inf`` stays ``−inf``.
    impl: ``"auto"`` (the fused Pallas kernel on GPU unless ``where`` is given,
      XLA otherwise), ``"xla"`` or ``"pallas"``.  Both agree within the dtype
      tolerance; the Pallas kernel writes the loss and the gradient in one
      pass over the logits.
    donate_logits: with the Pallas kernel, let the gradient overwrite the
      logits' buffer (an ``input_output_aliases`` hint).  Inside ``jit``, when
      nothing else reads the logits later (they are a temporary, say
      ``hidden @ W``), this saves one ``[N, C]`` buffer; when something does,
      XLA copies them first and the results are unchanged.  Logits passed
      into a top-level ``jit`` are only overwritten if that ``jit`` donates
      them (``donate_argnums``).  No effect on the XLA path, where XLA's own
      buffer assignment decides.

  Returns:
    The loss (float32 for half-precision logits).

  A label outside ``[0, C)`` (other than ``ignore_index``), or pointing at a
  masked or ``-inf`` class, makes that example's loss and gradient NaN: never
  a clamped value.  Check labels at the data boundary with
  :func:`validate_labels`.  A row with no valid class has loss 0 whatever its
  label.

  Examples:
    >>> import jax.numpy as jnp
    >>> from softmax_jax import cross_entropy_with_integer_labels
    >>> logits = jnp.array([[0.0, 0.0], [0.0, -jnp.inf]], jnp.float32)
    >>> float(cross_entropy_with_integer_labels(logits, jnp.array([1, 0])))
    0.3465735...
  """
  fn = "cross_entropy_with_integer_labels"
  logits = _arguments.float_array(logits, "logits", fn)
  (ax,) = _arguments.axes(axis, logits.ndim, fn, allow_tuple=False)
  num_classes = _arguments.classes(logits.shape[ax], "logits", fn)
  _arguments.ignore_index_type(ignore_index, fn)
  labels = _checked_labels(labels, logits, ax, axis, fn, ignore_index)
  ignore_index = _arguments.ignore_index(ignore_index, labels.dtype, fn)
  where = _arguments.where_mask(where, logits.shape, fn, "logits")
  if class_weights is not None:
    class_weights = _arguments.float_array(class_weights, "class_weights", fn)
    if class_weights.shape != (num_classes,):
      raise ValueError(
          f"{fn}: class_weights has shape {class_weights.shape} but logits has shape "
          f"{logits.shape} with axis={axis}, so class_weights must have shape ({num_classes},)."
      )
  eps = _arguments.label_smoothing(label_smoothing, fn)
  reduction = _arguments.reduction(reduction, fn)
  z_loss = _arguments.z_loss(z_loss, fn)
  cap = _arguments.logit_softcap(logit_softcap, fn)
  if not isinstance(donate_logits, bool | np.bool_):
    raise TypeError(f"{fn}: donate_logits must be True or False, got {donate_logits!r}.")

  def kernel():
    return _kernels.cross_entropy(jnp.moveaxis(logits, ax, -1), labels, reduction,
                                  weights=class_weights, eps=eps, z_loss=z_loss, softcap=cap,
                                  ignore_index=ignore_index, donate=bool(donate_logits))

  def xla():
    return _reduced_int_xent(logits, labels, class_weights, where, ax, eps, ignore_index,
                             reduction, z_loss, cap)

  return _kernels.choose(impl, logits, (ax,), fn, kernel=kernel, xla=xla,
                         where=where is not None)
