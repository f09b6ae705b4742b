r"""Cross-entropy losses with the lecture's analytic gradient.

Lecture: ``ξ(t, z) = −Σ_c t_c log y_c`` with ``y = softmax(z)``, and
``∂ξ/∂z_i = y_i − t_i``.  For targets that do not sum to one (smoothing with
weights, say) the same derivation gives ``∂ξ/∂z = (Σ_c t_c) y − t``.

Every loss here is a ``jax.custom_jvp`` whose tangent is the analytic
``⟨∂ξ/∂z, ż⟩``, so forward mode (``jax.jvp``, ``jax.jacfwd``), reverse mode
(JAX transposes the tangent into ``g·(y − t)``) and higher orders (the rule is
itself differentiable) all work.  Under ``jax.jit`` XLA fuses the computation of
``y`` into the gradient's write: no ``[N, C]`` array is kept between the passes.

``1 − y_t`` is the one quantity that plain autodiff computes badly: when
``y_t`` is close to 1 the subtraction cancels (float64 logits ``[40, 0]`` give
``0`` instead of ``4.2e-18``) and the gradient no longer sums to zero.  The
label entry (for probability targets: the entry of a class with ``y > 1/2``)
is computed from the tail of the row sum instead (``_numerics.complement``),
accurate to a few ulps, so the row sums to zero to within rounding of that entry.
All rules (labels, masking, log-sum-exp, smoothing, soft-cap, reductions) come
from ``softmax_jax._numerics``.
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


def _take(x, index):
  return jnp.take_along_axis(x, index[..., None], axis=-1)


# ---------------------------------------------------------------------------
# Probability targets
# ---------------------------------------------------------------------------


class SoftRows(NamedTuple):
  """Per-row statistics (``[..., 1]``) of the loss of probability targets ``t``."""

  stats: nx.RowStats  # m, s and the tail of the masked logits
  log_s: jax.Array
  smooth: jax.Array  # ε / K, the smoothing mass of each valid class
  total: jax.Array  # Σ_c t'_c with t' = (1 − ε) t + ε/K on the valid classes
  loss: jax.Array  # ξ = Σ_c t'_c (log s − (z_c − m)), NaN or 0 as the row demands
  row_ok: jax.Array  # the row has a valid class
  bad: jax.Array  # target mass on an invalid class


def _soft_rows(zm, t, eps, all_valid) -> SoftRows:
  """``all_valid``: the caller vouches that no class is masked (no ``where``, no ``−inf``),
  so the masking selects are left out; :func:`_soft_route` checks the result.  Half
  precision is upcast here, inside each branch of the route: an upcast shared by both
  would be stored."""
  zm = nx.upcast(zm)
  t = t.astype(zm.dtype)
  st = nx.row_stats(zm, tail=False, vouched=all_valid)
  if all_valid:  # a row without a finite entry comes out NaN here, and the route falls back
    log_s = jnp.log(st.s)
    smooth = jnp.full_like(st.s, eps / zm.shape[-1])
    ts = t if eps == 0 else (1 - eps) * t + smooth
    loss = jnp.sum(ts * (log_s - (zm - st.m)), -1, keepdims=True)
    ok = jnp.ones(st.s.shape, bool)
    return SoftRows(st, log_s, smooth, jnp.sum(ts, -1, keepdims=True), loss, ok, ~ok)
  log_s = nx.log_normaliser(st)
  neg_log_y = log_s + (st.m - zm)  # −log y_c
  valid = zm != -jnp.inf
  smooth = nx.smoothing_coef(eps, nx.count_valid(zm))
  ts = jnp.where(valid, (1 - eps) * t + smooth, 0)
  # ξ = Σ_c t'_c (log s − (z_c − m)): non-negative terms, no cancellation.
  loss = jnp.sum(jnp.where(valid, ts * neg_log_y, 0), -1, keepdims=True)
  row_ok = nx.nonempty(st)
  bad = (jnp.sum(jnp.where(valid, 0, jnp.abs(t)), -1, keepdims=True) > 0) & row_ok
  return SoftRows(st, log_s, smooth, jnp.sum(ts, -1, keepdims=True),
                  nx.finish(loss, row_ok, bad), row_ok, bad)


def _soft_route(zm, t, where, eps) -> SoftRows:
  """The per-row statistics, by the running platform.

  On the CPU, without ``where``, they are first computed without masking
  selects (selects keep XLA:CPU from fusing the row reductions, about 10× slower
  at 4096×1024); only if some row comes out non-finite (a ``−inf`` or NaN logit,
  a NaN target) is the masked computation run (``lax.cond``).  Only per-row
  values leave the cond.  Other platforms fuse the selects, and there a cond
  costs a device-to-host read of its predicate, so they run the masked
  computation directly."""
  general = lambda: _soft_rows(zm, t, eps, False)  # noqa: E731
  if where is not None:
    return general()

  def cpu():
    fast = _soft_rows(zm, t, eps, True)
    return lax.cond(jnp.all(jnp.isfinite(fast.loss)), lambda: fast, general)

  return lax.platform_dependent(cpu=cpu, default=general)


def _soft_gradient(r: SoftRows, zm, t, eps) -> jax.Array:
  """``∂ξ/∂z = (Σ t') y − t'``; the entry of a class with ``y > 1/2`` from the complement.

  Elementwise only (the row statistics come from :func:`_soft_route`)."""
  zm = nx.upcast(zm)
  t = t.astype(zm.dtype)
  shifted = zm - r.stats.m
  valid = zm != -jnp.inf
  ts = jnp.where(valid, (1 - eps) * t + r.smooth, 0)
  grad = r.total * jnp.exp(shifted) / nx.denominator(r.stats.s) - ts
  # y_d ≈ 1: (Σt') y_d − t'_d = (Σ_{c≠d} t'_c) − (Σt')(1 − y_d), both parts accurate.
  st = nx.with_tail(r.stats, zm)
  top = (shifted == 0) & nx.dominant(st)
  exact = (r.total - ts) - r.total * nx.complement(st, shifted)
  grad = jnp.where(top, exact, jnp.where(valid, grad, 0))
  return nx.finish(grad, r.row_ok, r.bad)


def _soft_outputs(r: SoftRows, dtype):
  return r.loss[..., 0], r.row_ok[..., 0].astype(dtype)


@partial(jax.custom_jvp, nondiff_argnums=(3,))
def _soft_xent(z, t, where, eps):
  r = _soft_route(nx.masked(z, where), t, where, eps)
  return _soft_outputs(r, r.loss.dtype)


@_soft_xent.defjvp
def _soft_xent_jvp(eps, primals, tangents):
  z, t, where = primals
  dz, dt, _ = tangents
  zm = nx.masked(z, where)
  r = _soft_route(zm, t, where, eps)
  # Lecture: dξ = ⟨(Σt') y − t', ż⟩ − (1 − ε) ⟨log y, ṫ⟩.
  zc = nx.upcast(zm)
  neg_log_y = jnp.where(zc != -jnp.inf, r.log_s - (zc - r.stats.m), 0)
  tangent = (jnp.sum(_soft_gradient(r, zm, t, eps) * dz, -1)
             + nx.finish(jnp.sum((1 - eps) * neg_log_y * dt, -1, keepdims=True),
                         r.row_ok, r.bad)[..., 0])
  dtype = r.loss.dtype
  return _soft_outputs(r, dtype), (tangent.astype(dtype), jnp.zeros(r.row_ok.shape[:-1], dtype))


@partial(jax.jit, static_argnums=(3, 4, 5))
def _cross_entropy_impl(logits, targets, where, axis, eps, reduction):
  z = jnp.moveaxis(logits, axis, -1)  # both upcast inside the rule (see _soft_rows)
  t = jnp.moveaxis(targets, axis, -1)
  w = None if where is None else jnp.moveaxis(where, axis, -1)
  loss, counted = _soft_xent(z, t, w, eps)
  return nx.reduce(loss, counted, reduction)


def _targets_array(targets, logits, fn):
  targets = jnp.asarray(targets)
  if not jnp.issubdtype(targets.dtype, jnp.floating):
    raise TypeError(
        f"{fn}: targets must be a floating array of class probabilities, got dtype "
        f"{targets.dtype}; for integer class labels use cross_entropy_with_integer_labels."
    )
  _arguments.same_shape(targets, "targets", logits, "logits", fn)
  return targets


def cross_entropy(
    logits: ArrayLike,
    targets: ArrayLike,
    axis: int = -1,
    *,
    where: ArrayLike | None = None,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> jax.Array:
  r"""Cross-entropy of probability targets against ``softmax(logits)``.

  .. math::
    \xi(t, z) = -\sum_{c} t'_c \log y_c, \qquad
    t' = (1-\varepsilon)\, t + \varepsilon / K, \qquad
    \frac{\partial \xi}{\partial z} = \Big(\sum_c t'_c\Big) y - t' \;(= y - t')

  with ``K`` the number of valid classes of the row.  The gradient is the
  lecture's ``y − t``, written by a ``custom_vjp``; the loss is computed from
  log-sum-exp, never ``log(softmax)``.

  Args:
    logits: ``[..., C, ...]`` with the classes at ``axis``.
    targets: probability vectors (one-hot or soft), same shape as ``logits``.
    axis: the class axis.
    where: optional boolean mask broadcastable to ``logits``; ``False``
      classes are left out of the softmax.
    label_smoothing: ``ε`` in ``[0, 1]``, spread over the row's valid classes.
    reduction: ``"mean"`` (over rows that have a valid class), ``"sum"`` or
      ``"none"`` (shape of ``logits`` without ``axis``).

  Returns:
    The loss, float32 for half-precision logits, else the logits' dtype.

  Masking: classes with ``where=False`` or a ``-inf`` logit have probability
  0 and gradient 0.  A row with no valid class has loss 0, zero gradient and
  does not count in the mean.  Target mass on an invalid class is an error:
  that row's loss and gradient are NaN.

  Examples:
    >>> import jax.numpy as jnp
    >>> from softmax_jax import cross_entropy
    >>> float(cross_entropy(jnp.array([0.0, 0.0], jnp.float32), jnp.array([1.0, 0.0])))
    0.6931471...
  """
  fn = "cross_entropy"
  logits = _arguments.float_array(logits, "logits", fn)
  targets = _targets_array(targets, logits, fn)
  (ax,) = _arguments.axes(axis, logits.ndim, fn, allow_tuple=False)
  where = _arguments.where_mask(where, logits.shape, fn, "logits")
  eps = _arguments.label_smoothing(label_smoothing, fn)
  reduction = _arguments.reduction(reduction, fn)
  return _cross_entropy_impl(logits, targets, where, ax, eps, reduction)


@partial(jax.jit, static_argnums=(2,))
def _cross_entropy_grad_impl(logits, targets, axis):
  z = nx.upcast(jnp.moveaxis(logits, axis, -1))
  t = jnp.moveaxis(targets, axis, -1).astype(z.dtype)
  d = _soft_gradient(_soft_rows(z, t, 0.0, False), z, t, 0.0)
  return jnp.moveaxis(d, -1, axis).astype(logits.dtype)


def cross_entropy_grad(logits: ArrayLike, targets: ArrayLike, axis: int = -1) -> jax.Array:
  r"""The lecture's analytic per-example gradient :math:`\partial\xi/\partial z = y - t`.

  Computed as :math:`(\sum_c t_c)\, y - t`, which is ``softmax(logits) − targets``
  for probability vectors and the exact gradient of :func:`cross_entropy`
  (``reduction="sum"``) for any non-negative targets.  The component of the
  true class uses an accurately summed ``1 − y_t``, so the row sums to zero to
  within a few ulps even in the tails.

  Args:
    logits: ``[..., C, ...]``.
    targets: probability vectors, same shape.
    axis: the class axis.

  Returns:
    The gradient, shape and dtype of ``logits``; 0 at ``-inf`` logits.

  Examples:
    >>> import jax.numpy as jnp
    >>> from softmax_jax import cross_entropy_grad
    >>> cross_entropy_grad(jnp.array([0.0, 0.0], jnp.float32), jnp.array([1.0, 0.0]))
    Array([-0.5,  0.5], dtype=float32)
  """
  fn = "cross_entropy_grad"
  logits = _arguments.float_array(logits, "logits", fn)
  targets = _targets_array(targets, logits, fn)
  (ax,) = _arguments.axes(axis, logits.ndim, fn, allow_tuple=False)
  return _cross_entropy_grad_impl(logits, targets, ax)


# ---------------------------------------------------------------------------
# Integer labels
# ---------------------------------------------------------------------------


class IntParts(NamedTuple):
  """What the integer-label loss and its gradient share (``[..., 1]`` per row)."""

  zm: jax.Array  # masked logits
  stats: nx.RowStats
  log_s: jax.Array
  labels: nx.LabelInfo  # fields [...]
  shifted_t: jax.Array  # z_t − m
  w_t: jax.Array  # the label's class weight (1 without weights)
  smooth: jax.Array | None  # ε / K (with smoothing)
  wsum: jax.Array | None  # Σ_c w_c over the valid classes (with smoothing)
  counted: jax.Array  # the example counts: a valid class, not ignored
  bad: jax.Array  # counted, but the label is not a valid class


def _class_weights(weights, z):
  """``w_c`` broadcast over the rows, 0 on invalid classes."""
  wc = jnp.ones_like(z) if weights is None else jnp.broadcast_to(weights, z.shape)
  return jnp.where(z != -jnp.inf, wc, jnp.zeros_like(wc))


def _int_parts(z, code, weights, where, eps) -> IntParts:
  zm = nx.masked(z, where)
  st = nx.row_stats(zm, tail=False)
  lab = nx.label_info(code[..., None])
  shifted_t = _take(zm, lab.index[..., 0]) - st.m
  w_t = jnp.ones_like(st.m) if weights is None else weights[lab.index]
  smooth = wsum = None
  if eps > 0:
    smooth = nx.smoothing_coef(eps, nx.count_valid(zm))
    wsum = jnp.sum(_class_weights(weights, zm), -1, keepdims=True)
  counted = nx.nonempty(st) & ~lab.ignored
  bad = counted & ~(lab.is_class & (shifted_t != -jnp.inf))
  return IntParts(zm, st, nx.log_normaliser(st), lab, shifted_t, w_t, smooth, wsum, counted,
                  bad)


def _int_value(p: IntParts, weights, eps) -> tuple[jax.Array, jax.Array]:
  """Per-example ``(loss, w_t of the counted examples)``."""
  # PyTorch semantics: (1 − ε) w_t (−log y_t) + (ε/K) Σ_c w_c (−log y_c),
  # with −log y_c = log s − (z_c − m).
  loss = (1 - eps) * p.w_t * (p.log_s - p.shifted_t)
  if p.smooth is not None:
    neg_log_y = jnp.where(p.zm != -jnp.inf, p.log_s - (p.zm - p.stats.m), 0)
    loss = loss + p.smooth * jnp.sum(_class_weights(weights, p.zm) * neg_log_y, -1, keepdims=True)
  weight = jnp.where(p.counted, p.w_t, jnp.zeros_like(p.w_t))
  return nx.finish(loss, p.counted, p.bad)[..., 0], weight[..., 0]


def _int_gradient(p: IntParts, weights, eps) -> jax.Array:
  r"""``∂ξ/∂z_c = (1 − ε) w_t (y_c − δ_ct) + (ε/K)(W y_c − w_c)`` (lecture: ``y − t``, with the
  weights and smoothing folded in), the label's ``y_t − 1`` written as ``−(1 − y_t)``."""
  y = jnp.exp(p.zm - p.stats.m) / nx.denominator(p.stats.s)
  scale = (1 - eps) * p.w_t
  grad = scale * y
  st = nx.with_tail(p.stats, p.zm)
  label_entry = -scale * nx.complement(st, p.shifted_t)
  if p.smooth is not None:
    smooth = p.smooth * (p.wsum * y - _class_weights(weights, p.zm))
    grad = grad + smooth
    label_entry = label_entry + _take(smooth, p.labels.index[..., 0])
  is_t = lax.broadcasted_iota(jnp.int32, y.shape, y.ndim - 1) == p.labels.index
  return nx.finish(jnp.where(is_t, label_entry, grad), p.counted, p.bad)


def _int_weight_tangent(p: IntParts, dw, eps) -> jax.Array:
  """``Σ_c ∂ξ/∂w_c ẇ_c = (1 − ε)(−log y_t) ẇ_t + (ε/K) Σ_c (−log y_c) ẇ_c``."""
  dw_t = dw[p.labels.index]
  # −log y_t is +inf on a row without a valid class; zero it before it meets ẇ, so that
  # the transpose (the weights' gradient) has no 0·inf there
  nll = jnp.where(p.counted, p.log_s - p.shifted_t, 0)
  tangent = (1 - eps) * nll * dw_t
  if p.smooth is not None:
    neg_log_y = jnp.where(p.zm != -jnp.inf, p.log_s - (p.zm - p.stats.m), 0)
    tangent = tangent + p.smooth * jnp.sum(neg_log_y * dw, -1, keepdims=True)
  return nx.finish(tangent, p.counted, p.bad)[..., 0], jnp.where(p.counted, dw_t, 0)[..., 0]


@partial(jax.custom_jvp, nondiff_argnums=(4,))
def _int_xent(z, code, weights, where, eps):
  return _int_value(_int_parts(z, code, weights, where, eps), weights, eps)


@_int_xent.defjvp
def _int_xent_jvp(eps, primals, tangents):
  z, code, weights, where = primals
  dz, _, dw, _ = tangents
  p = _int_parts(z, code, weights, where, eps)
  out = _int_value(p, weights, eps)
  # dξ = ⟨∂ξ/∂z, ż⟩ (+ the class weights' part); XLA fuses y into this product.
  tangent = jnp.sum(_int_gradient(p, weights, eps) * dz, -1)
  d_weight = jnp.zeros_like(out[1])
  if weights is not None:
    t_w, d_weight = _int_weight_tangent(p, dw, eps)
    tangent = tangent + t_w
  return out, (tangent, d_weight)


@partial(jax.jit, static_argnums=(4, 5, 6, 7, 8, 9))
def _int_impl(logits, labels, class_weights, where, axis, eps, ignore_index, reduction,
              z_loss=0.0, softcap=None):
  z = nx.upcast(jnp.moveaxis(logits, axis, -1))
  z, _ = nx.softcap(z, softcap)  # Gemma 2's s·tanh(z/s); −inf stays −inf
  w = None if where is None else jnp.moveaxis(where, axis, -1)
  cw = None if class_weights is None else class_weights.astype(z.dtype)
  code = nx.canonical_labels(labels, z.shape[-1], ignore_index)
  loss, weight = _int_xent(z, code, cw, w, eps)
  if z_loss:  # PaLM's auxiliary loss λ_z·lse² on the counted rows; d/dz = 2 λ_z lse y
    lse, row_ok = nx.logsumexp(nx.masked(z, w))
    counted = row_ok[..., 0] & (code != nx.IGNORED)
    loss = loss + jnp.where(counted, z_loss * jnp.square(lse[..., 0]), 0)
  return nx.reduce(loss, weight, reduction)



def _labels_array(labels, logits, axis, axis_arg, fn, ignore_index):
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
  labels = _labels_array(labels, logits, ax, axis, fn, ignore_index)
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
    return _int_impl(logits, labels, class_weights, where, ax, eps, ignore_index, reduction,
                     z_loss, cap)

  return _kernels.choose(impl, logits, (ax,), fn, kernel=kernel, xla=xla,
                        where=where is not None)


# ---------------------------------------------------------------------------
# Binary cross-entropy (the lecture's logistic-regression cost J(θ))
# ---------------------------------------------------------------------------


def _xlogy_free(coef, value):
  """``coef * value`` that is 0 whenever ``coef`` is 0, even if ``value`` is inf."""
  return jnp.where(coef == 0, 0, coef * value)


@jax.custom_jvp
def _bce(z, y):
  # −[y log h + (1 − y) log(1 − h)] with h = σ(z), written as
  # y softplus(−z) + (1 − y) softplus(z): two non-negative terms, no cancellation.
  return _xlogy_free(y, jax.nn.softplus(-z)) + _xlogy_free(1 - y, jax.nn.softplus(z))


@_bce.defjvp
def _bce_jvp(primals, tangents):
  z, y = primals
  dz, dy = tangents
  # Lecture: ∂J/∂z = h − y = (1 − y) σ(z) − y σ(−z); ∂/∂y = softplus(−z) − softplus(z) = −z.
  grad_z = (1 - y) * lax.logistic(z) - y * lax.logistic(-z)
  return _bce(z, y), grad_z * dz - z * dy


@partial(jax.jit, static_argnums=(2,))
def _bce_impl(logits, labels, reduction):
  z = nx.upcast(logits)
  loss = _bce(z, labels.astype(z.dtype))
  return nx.reduce(loss, jnp.ones_like(loss), reduction)


def binary_cross_entropy(
    logits: ArrayLike, labels: ArrayLike, *, reduction: str = "mean"
) -> jax.Array:
  r"""Logistic-regression cost of the lecture, computed stably from logits.

  .. math::
    J = -\frac{1}{m}\sum_i \big[y^{(i)} \log h^{(i)} + (1 - y^{(i)}) \log(1 - h^{(i)})\big],
    \qquad h = \sigma(z), \qquad \frac{\partial J}{\partial z^{(i)}} = \frac{h^{(i)} - y^{(i)}}{m}

  Args:
    logits: ``z``, any shape.
    labels: ``y`` in ``[0, 1]`` (hard or soft), same shape as ``logits``.
    reduction: ``"mean"`` (over all elements), ``"sum"`` or ``"none"``.

  Returns:
    The loss, float32 for half-precision logits.  Finite for every finite
    logit; a logit of ``∓inf`` with the matching label gives loss 0.

  Examples:
    >>> import jax.numpy as jnp
    >>> from softmax_jax import binary_cross_entropy
    >>> float(binary_cross_entropy(jnp.array([0.0], jnp.float32), jnp.array([1.0])))
    0.6931471...
  """
  fn = "binary_cross_entropy"
  logits = _arguments.float_array(logits, "logits", fn)
  labels = jnp.asarray(labels)
  if not (jnp.issubdtype(labels.dtype, jnp.floating) or jnp.issubdtype(labels.dtype, jnp.integer)
          or labels.dtype == jnp.bool_):
    raise TypeError(f"{fn}: labels must be real numbers in [0, 1], got dtype {labels.dtype}.")
  _arguments.same_shape(labels, "labels", logits, "logits", fn)
  reduction = _arguments.reduction(reduction, fn)
  return _bce_impl(logits, labels, reduction)


# ---------------------------------------------------------------------------
# Host-side label check
# ---------------------------------------------------------------------------


def validate_labels(labels, num_classes: int, *, ignore_index: int | None = None,
                    max_listed: int = 10) -> np.ndarray:
  """Checks integer labels on the host and raises ``ValueError`` listing bad positions.

  Use it where data enters a program: inside ``jit`` an out-of-range label
  can only make the loss NaN, while this names the offending entries.

  Args:
    labels: integer class indices (any array-like, any shape).
    num_classes: ``C``; valid labels are ``0 ≤ label < C``.
    ignore_index: a value that is allowed besides the valid labels.
    max_listed: how many offending positions the message lists.

  Returns:
    The labels as a NumPy array, unchanged, when they are valid.

  Examples:
    >>> from softmax_jax import validate_labels
    >>> validate_labels([0, 2, 1], 3)
    array([0, 2, 1])
  """
  arr = np.asarray(labels)
  if not np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_:
    raise TypeError(f"validate_labels: labels must be integers, got dtype {arr.dtype}.")
  if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
    raise ValueError(f"validate_labels: num_classes must be a positive int, got {num_classes!r}.")
  ignore_index = _arguments.ignore_index(ignore_index, arr.dtype, "validate_labels")
  bad = (arr < 0) | (arr >= num_classes)
  if ignore_index is not None:
    bad &= arr != ignore_index
  if bad.any():
    positions = np.argwhere(bad)
    listed = ", ".join(
        f"labels[{', '.join(map(str, p))}] = {arr[tuple(p)]}" for p in positions[:max_listed]
    )
    more = f" and {len(positions) - max_listed} more" if len(positions) > max_listed else ""
    allowed = f"[0, {num_classes})" + ("" if ignore_index is None else f" or {ignore_index}")
    raise ValueError(
        f"validate_labels: {len(positions)} label(s) outside {allowed}: {listed}{more}."
    )
  return arr
