r"""Cross-entropy losses with the lecture's analytic gradient.

Lecture: ``ξ(t, z) = −Σ_c t_c log y_c`` with ``y = softmax(z)``, and
``∂ξ/∂z_i = y_i − t_i``.  For targets that do not sum to one (smoothing with
weights, say) the same derivation gives ``∂ξ/∂z = (Σ_c t_c) y − t``.

Every loss here is a ``jax.custom_vjp``.  The forward pass saves the row max
``m`` and ``log Σ_c e^{z_c − m}`` (O(N) numbers next to the inputs); the
backward pass recomputes ``y`` from the logits and writes ``g·((Σ t) y − t)``.

``1 − y_t`` is the one quantity that plain autodiff computes badly: when
``y_t`` is close to 1 the subtraction cancels (float64 logits ``[40, 0]`` give
``0`` instead of ``4.2e-18``) and the gradient no longer sums to zero.  The
gradient of a valid row sums to zero exactly (``Σ_c ((Σt) y_c − t_c) = 0``),
so the backward pass writes every other entry first and sets the dominant one
(the label, or for probability targets the class with ``y > 1/2``) to minus
their sum: accurate to the last bits and summing to zero by construction.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from . import _checks, _pallas
from ._softmax import _masked, _upcast

# ---------------------------------------------------------------------------
# Helpers (class axis last)
# ---------------------------------------------------------------------------


def _nonzero(s):
  """``s`` with exact zeros (rows without a valid class) read as 1; NaN stays NaN."""
  return jnp.where(s == 0, jnp.ones_like(s), s)


def _lse_parts(z, where):
  """``(masked z, m, log s, row_ok)``: the row max ``m`` and ``log Σ_c e^{z_c − m}``.

  Written as the plain ``log Σ exp(z − max z)`` so that XLA fuses it; rows
  without a valid class (NaN there) are cleaned up afterwards on the per-row
  values only: ``m = log s = 0`` and ``row_ok`` false.  ``m`` is a constant
  for differentiation.
  """
  zm = _masked(z, where)
  m_raw = lax.stop_gradient(jnp.max(zm, axis=-1, keepdims=True))
  log_s = jnp.log(jnp.sum(jnp.exp(zm - m_raw), axis=-1, keepdims=True))
  row_ok = m_raw != -jnp.inf
  zero = jnp.zeros_like(m_raw)
  return zm, jnp.where(row_ok, m_raw, zero), jnp.where(row_ok, log_s, zero), row_ok


def _probs(zm, m, log_s):
  """``y = exp((z − m) − log s)``; ``m`` and ``log s`` kept apart so huge logits keep ``log s``."""
  return jnp.exp((zm - m) - log_s)


def _zero_sum_patch(grad, dominant):
  """Sets the (at most one per row) ``dominant`` entry to minus the sum of the others.

  A valid row of ``(Σt) y − t`` sums to zero, so this is exact, and it avoids
  the cancellation of ``y_t − 1`` when ``y_t ≈ 1``.
  """
  others = jnp.where(dominant, jnp.zeros_like(grad), grad)
  return jnp.where(dominant, -jnp.sum(others, axis=-1, keepdims=True), others)


def _count(valid, dtype):
  """Number of valid classes per row, as a float sum."""
  return jnp.sum(jnp.where(valid, jnp.ones((), dtype), jnp.zeros((), dtype)), -1, keepdims=True)


def _reduce(per_example, weight, reduction):
  if reduction == "none":
    return per_example
  total = jnp.sum(per_example)
  if reduction == "sum":
    return total
  denominator = jnp.sum(weight)
  return total / jnp.where(denominator > 0, denominator, 1)


def _finish(value, row_ok, bad):
  """0 on rows without a valid class, NaN on rows with an invalid label or target."""
  return jnp.where(bad, jnp.nan, jnp.where(row_ok, value, 0))


# ---------------------------------------------------------------------------
# Probability targets
# ---------------------------------------------------------------------------


def _smoothed(t, valid, eps):
  """``(1 − ε) t + ε u`` with ``u`` uniform over the row's valid classes; 0 elsewhere."""
  if eps > 0:
    t = (1 - eps) * t + eps * jnp.where(valid, 1.0, 0.0).astype(t.dtype) / _nonzero(
        _count(valid, t.dtype))
  return jnp.where(valid, t, 0)


def _soft_targets(zm, t, eps):
  """``(valid, t', Σ t')`` for the masked logits ``zm``."""
  valid = zm != -jnp.inf
  ts = _smoothed(t, valid, eps)
  return valid, ts, jnp.sum(ts, -1, keepdims=True)


def _soft_stats(z, t, where, eps):
  zm, m, log_s, row_ok = _lse_parts(z, where)
  valid, ts, total = _soft_targets(zm, t, eps)
  # target mass on a masked or −inf class: the loss is undefined
  bad = (jnp.sum(jnp.where(valid, 0, jnp.abs(t)), -1, keepdims=True) > 0) & row_ok
  return zm, m, log_s, row_ok, valid, ts, total, bad


def _soft_grad(zm, m, log_s, valid, ts, total):
  """``(Σ t) y − t`` with the dominant class (``y > 1/2``) patched to keep the row sum 0."""
  y = _probs(zm, m, log_s)
  grad = jnp.where(valid, total * y - ts, 0)
  return _zero_sum_patch(grad, y > 0.5)


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _soft_xent(z, t, where, eps):
  return _soft_xent_fwd(z, t, where, eps)[0]


def _soft_xent_fwd_general(z, t, where, eps):
  zm, m, log_s, row_ok, valid, ts, total, bad = _soft_stats(z, t, where, eps)
  # ξ = Σ_c t_c (log s − (z_c − m)): two non-negative sums, no cancellation.
  loss = total * log_s - jnp.sum(jnp.where(valid, ts * (zm - m), 0), -1, keepdims=True)
  loss = _finish(loss, row_ok, bad)[..., 0]
  return loss, m, log_s, row_ok, bad


def _up(z, t):
  """Logits and targets in the dtype the arithmetic is done in (float32 for half precision)."""
  z = _upcast(z)
  return z, t.astype(z.dtype)


def _soft_xent_fwd(z_in, t_in, where, eps):
  # The inputs arrive in their own dtype and are upcast here and again in the masked
  # branch: an upcast shared by both branches of the cond would be materialised.
  z, t = _up(z_in, t_in)
  if where is None and jax.default_backend() == "cpu":
    # Without a mask, the loss is first computed without any masking select:
    # Σ_c t'_c (log s − (z_c − m)), every term non-negative, t' = (1 − ε) t + ε/C.
    # A −inf or NaN logit, a row without a finite one, or a NaN target makes some
    # row non-finite (0·∞ or ∞); only then is the masked computation run (``lax.cond``).
    # Selects in the masked version keep XLA:CPU from fusing the row reductions
    # (about 10× slower at 4096×1024), hence the split.  Other backends fuse the
    # selects, and there a cond can cost a device-to-host read of its predicate, so they
    # keep the single masked computation.
    m = lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True))
    log_s = jnp.log(jnp.sum(jnp.exp(z - m), axis=-1, keepdims=True))
    ts = t if eps == 0 else (1 - eps) * t + eps / z.shape[-1]
    loss = jnp.sum(ts * (log_s - (z - m)), axis=-1)
    ok = jnp.ones(m.shape, bool)
    fast = (loss, m, log_s, ok, ~ok)
    loss, m, log_s, row_ok, bad = lax.cond(
        jnp.all(jnp.isfinite(loss)), lambda: fast,
        lambda: _soft_xent_fwd_general(*_up(z_in, t_in), None, eps))
  else:
    loss, m, log_s, row_ok, bad = _soft_xent_fwd_general(z, t, where, eps)
  return (loss, row_ok[..., 0].astype(z.dtype)), (z_in, t_in, where, m, log_s, row_ok, bad)


def _soft_xent_bwd(eps, res, cts):
  z_in, t_in, where, m, log_s, row_ok, bad = res
  z, t = _up(z_in, t_in)
  zm = _masked(z, where)
  valid, ts, total = _soft_targets(zm, t, eps)
  g = cts[0][..., None]
  dz = _finish(g * _soft_grad(zm, m, log_s, valid, ts, total), row_ok, bad)
  dt = _finish(-(1 - eps) * g * jnp.where(valid, (zm - m) - log_s, 0), row_ok, bad)
  return dz.astype(z_in.dtype), dt.astype(t_in.dtype), None


_soft_xent.defvjp(_soft_xent_fwd, _soft_xent_bwd)


@partial(jax.jit, static_argnums=(3, 4, 5))
def _cross_entropy_impl(logits, targets, where, axis, eps, reduction):
  z = jnp.moveaxis(logits, axis, -1)  # upcast inside the custom VJP
  t = jnp.moveaxis(targets, axis, -1)
  w = None if where is None else jnp.moveaxis(where, axis, -1)
  loss, counted = _soft_xent(z, t, w, eps)
  return _reduce(loss, counted, reduction)


def _targets_array(targets, logits, fn):
  targets = jnp.asarray(targets)
  if not jnp.issubdtype(targets.dtype, jnp.floating):
    raise TypeError(
        f"{fn}: targets must be a floating array of class probabilities, got dtype "
        f"{targets.dtype}; for integer class labels use cross_entropy_with_integer_labels."
    )
  _checks.same_shape(targets, "targets", logits, "logits", fn)
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
  logits = _checks.float_array(logits, "logits", fn)
  targets = _targets_array(targets, logits, fn)
  (ax,) = _checks.axes(axis, logits.ndim, fn, allow_tuple=False)
  where = _checks.where_mask(where, logits.shape, fn, "logits")
  eps = _checks.label_smoothing(label_smoothing, fn)
  reduction = _checks.reduction(reduction, fn)
  return _cross_entropy_impl(logits, targets, where, ax, eps, reduction)


@partial(jax.jit, static_argnums=(2,))
def _cross_entropy_grad_impl(logits, targets, axis):
  dtype = _checks.compute_dtype(logits.dtype)
  z = jnp.moveaxis(logits.astype(dtype), axis, -1)
  t = jnp.moveaxis(targets.astype(dtype), axis, -1)
  zm, m, log_s, row_ok, valid, ts, total, bad = _soft_stats(z, t, None, 0.0)
  d = _finish(_soft_grad(zm, m, log_s, valid, ts, total), row_ok, bad)
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
  logits = _checks.float_array(logits, "logits", fn)
  targets = _targets_array(targets, logits, fn)
  (ax,) = _checks.axes(axis, logits.ndim, fn, allow_tuple=False)
  return _cross_entropy_grad_impl(logits, targets, ax)


# ---------------------------------------------------------------------------
# Integer labels
# ---------------------------------------------------------------------------


@partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _int_xent(z, labels, weights, where, eps, ignore_index):
  return _int_xent_fwd(z, labels, weights, where, eps, ignore_index)[0]


def _label_info(labels, num_classes, ignore_index):
  """``(safe index, in range, ignored)`` for integer labels."""
  in_range = (labels >= 0) & (labels < num_classes)
  ignored = jnp.zeros_like(in_range) if ignore_index is None else labels == ignore_index
  return jnp.where(in_range, labels, 0), in_range, ignored


def _take(x, index):
  return jnp.take_along_axis(x, index[..., None], axis=-1)[..., 0]


def _int_xent_fwd(z, labels, weights, where, eps, ignore_index):
  zm, m, log_s, row_ok = _lse_parts(z, where)
  safe, in_range, ignored = _label_info(labels, z.shape[-1], ignore_index)
  sh_t = _take(zm, safe) - m[..., 0]  # z_t − m
  nll = log_s[..., 0] - sh_t  # −log y_t
  w_t = jnp.ones_like(nll) if weights is None else weights[safe]
  # PyTorch semantics: (1 − ε) w_t (−log y_t) + (ε/K) Σ_c w_c (−log y_c).
  loss = (1 - eps) * w_t * nll
  smooth = None
  if eps > 0:
    valid = zm != -jnp.inf
    wc = jnp.ones_like(z) if weights is None else jnp.broadcast_to(weights, z.shape)
    wv = jnp.where(valid, wc, 0)
    coef = eps / _nonzero(_count(valid, z.dtype))
    neg_log_y = jnp.where(valid, log_s - (zm - m), 0)
    loss = loss + coef[..., 0] * jnp.sum(wv * neg_log_y, -1)
    smooth = (coef, jnp.sum(wv, -1, keepdims=True))
  counted = row_ok[..., 0] & ~ignored
  bad = counted & ~(in_range & (sh_t != -jnp.inf))
  loss = jnp.where(bad, jnp.nan, jnp.where(counted, loss, 0))
  res = (z, safe, weights, where, m, log_s, nll, counted, bad, smooth)
  return (loss, jnp.where(counted, w_t, 0)), res


def _int_xent_bwd(eps, ignore_index, res, cts):
  z, safe, weights, where, m, log_s, nll, counted, bad, smooth = res
  g_loss, g_weight = cts
  zm = _masked(z, where)
  y = _probs(zm, m, log_s)
  w_t = jnp.ones_like(nll) if weights is None else weights[safe]
  g = jnp.where(bad, jnp.nan, jnp.where(counted, g_loss, 0))
  # ∂ξ/∂z_c = (1 − ε) w_t (y_c − δ_ct) + (ε/K)(W y_c − w_c); the label's entry is
  # written as minus the sum of the others (the row sums to zero).
  grad = ((1 - eps) * w_t)[..., None] * y
  if smooth is not None:
    coef, wsum = smooth
    wc = jnp.ones_like(z) if weights is None else jnp.broadcast_to(weights, z.shape)
    grad = grad + coef * (wsum * y - jnp.where(zm != -jnp.inf, wc, 0))
  # the label's entry is written as minus the sum of the others, in place
  is_t = lax.broadcasted_iota(jnp.int32, z.shape, z.ndim - 1) == safe[..., None]
  others = jnp.where(is_t, 0, g[..., None] * grad).reshape(-1, z.shape[-1])
  rows = jnp.arange(others.shape[0])
  dz = others.at[rows, safe.reshape(-1)].set(-jnp.sum(others, -1)).reshape(z.shape)
  dw = None
  if weights is not None:
    per_t = g * (1 - eps) * jnp.where(counted, nll, 0) + jnp.where(counted, g_weight, 0)
    dw = jnp.zeros_like(weights).at[safe.ravel()].add(per_t.ravel())
    if smooth is not None:
      neg_log_y = jnp.where(zm != -jnp.inf, log_s - (zm - m), 0)
      per_c = (g[..., None] * smooth[0]) * neg_log_y
      dw = dw + jnp.sum(per_c.reshape(-1, z.shape[-1]), axis=0)
  return dz, None, dw, None


_int_xent.defvjp(_int_xent_fwd, _int_xent_bwd)


def _safe_lse(zm):
  """``log Σ e^z`` per row, 0 for a row without a finite entry (and no NaN gradient)."""
  m = lax.stop_gradient(jnp.max(zm, axis=-1, keepdims=True))
  m = jnp.where(jnp.isfinite(m), m, jnp.zeros_like(m))
  s = jnp.sum(jnp.exp(zm - m), axis=-1, keepdims=True)
  return (m + jnp.log(jnp.where(s > 0, s, jnp.ones_like(s))))[..., 0], (s > 0)[..., 0]


@partial(jax.jit, static_argnums=(4, 5, 6, 7, 8, 9))
def _int_impl(logits, labels, class_weights, where, axis, eps, ignore_index, reduction,
              z_loss=0.0, softcap=None):
  dtype = _checks.compute_dtype(logits.dtype)
  z = jnp.moveaxis(logits.astype(dtype), axis, -1)
  if softcap is not None:
    z, _ = _pallas.apply_softcap(z, softcap)  # Gemma 2's s·tanh(z/s); −inf stays −inf
  w = None if where is None else jnp.moveaxis(where, axis, -1)
  cw = None if class_weights is None else class_weights.astype(dtype)
  loss, weight = _int_xent(z, labels, cw, w, eps, ignore_index)
  if z_loss:  # PaLM's auxiliary loss λ_z·lse² on the counted rows; d/dz = 2 λ_z lse y
    lse, row_ok = _safe_lse(_masked(z, w))
    counted = row_ok if ignore_index is None else row_ok & (labels != ignore_index)
    loss = loss + jnp.where(counted, z_loss * jnp.square(lse), jnp.zeros_like(lse))
  return _reduce(loss, weight, reduction)


def _labels_array(labels, logits, axis, axis_arg, fn):
  labels = jnp.asarray(labels)
  if not jnp.issubdtype(labels.dtype, jnp.integer) or labels.dtype == jnp.bool_:
    raise TypeError(
        f"{fn}: labels must be an integer array of class indices, got dtype {labels.dtype}; "
        "for probability targets use cross_entropy."
    )
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
  logits = _checks.float_array(logits, "logits", fn)
  (ax,) = _checks.axes(axis, logits.ndim, fn, allow_tuple=False)
  labels = _labels_array(labels, logits, ax, axis, fn)
  where = _checks.where_mask(where, logits.shape, fn, "logits")
  num_classes = logits.shape[ax]
  if class_weights is not None:
    class_weights = _checks.float_array(class_weights, "class_weights", fn)
    if class_weights.shape != (num_classes,):
      raise ValueError(
          f"{fn}: class_weights has shape {class_weights.shape} but logits has shape "
          f"{logits.shape} with axis={axis}, so class_weights must have shape ({num_classes},)."
      )
  if ignore_index is not None:
    if not isinstance(ignore_index, (int, np.integer)) or isinstance(ignore_index, bool):
      raise TypeError(f"{fn}: ignore_index must be an int or None, got {ignore_index!r}.")
    ignore_index = int(ignore_index)
  eps = _checks.label_smoothing(label_smoothing, fn)
  reduction = _checks.reduction(reduction, fn)
  z_loss = _checks.z_loss(z_loss, fn)
  cap = _checks.logit_softcap(logit_softcap, fn)
  if not isinstance(donate_logits, (bool, np.bool_)):
    raise TypeError(f"{fn}: donate_logits must be True or False, got {donate_logits!r}.")
  if _pallas.use(impl, logits, (ax,), fn, where=where is not None):
    z = jnp.moveaxis(logits, ax, -1)
    return _pallas.cross_entropy(z, labels, reduction, weights=class_weights, eps=eps,
                                 z_loss=z_loss, softcap=cap, ignore_index=ignore_index,
                                 donate=bool(donate_logits))
  return _int_impl(logits, labels, class_weights, where, ax, eps, ignore_index, reduction,
                   z_loss, cap)


# ---------------------------------------------------------------------------
# Binary cross-entropy (the lecture's logistic-regression cost J(θ))
# ---------------------------------------------------------------------------


def _xlogy_free(coef, value):
  """``coef * value`` that is 0 whenever ``coef`` is 0, even if ``value`` is inf."""
  return jnp.where(coef == 0, 0, coef * value)


@jax.custom_vjp
def _bce(z, y):
  # −[y log h + (1 − y) log(1 − h)] with h = σ(z), written as
  # y softplus(−z) + (1 − y) softplus(z): two non-negative terms, no cancellation.
  return _xlogy_free(y, jax.nn.softplus(-z)) + _xlogy_free(1 - y, jax.nn.softplus(z))


def _bce_fwd(z, y):
  return _bce(z, y), (z, y)


def _bce_bwd(res, g):
  z, y = res
  # Lecture: ∂J/∂z = h − y = (1 − y) σ(z) − y σ(−z); ∂/∂y = softplus(−z) − softplus(z) = −z.
  dz = (1 - y) * lax.logistic(z) - y * lax.logistic(-z)
  return g * dz, -g * z


_bce.defvjp(_bce_fwd, _bce_bwd)


@partial(jax.jit, static_argnums=(2,))
def _bce_impl(logits, labels, reduction):
  dtype = _checks.compute_dtype(logits.dtype)
  loss = _bce(logits.astype(dtype), labels.astype(dtype))
  return _reduce(loss, jnp.ones_like(loss), reduction)


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
  logits = _checks.float_array(logits, "logits", fn)
  labels = jnp.asarray(labels)
  if not (jnp.issubdtype(labels.dtype, jnp.floating) or jnp.issubdtype(labels.dtype, jnp.integer)
          or labels.dtype == jnp.bool_):
    raise TypeError(f"{fn}: labels must be real numbers in [0, 1], got dtype {labels.dtype}.")
  _checks.same_shape(labels, "labels", logits, "logits", fn)
  reduction = _checks.reduction(reduction, fn)
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
