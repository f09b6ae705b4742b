r"""Cross-entropy of probability targets, ``cross_entropy``, and its gradient ``y − t``.

Lecture ("Cross-entropy loss function"): ``ξ(t, z) = −Σ_c t_c log y_c`` with
``y = softmax(z)``; ("Derivative of the cross-entropy loss function for the softmax
function"): ``∂ξ/∂z_i = −t_i + y_i Σ_j t_j = y_i − t_i``.  For targets that do not sum
to one (smoothing with masked classes, say) the same derivation stops one step earlier,
at ``∂ξ/∂z = (Σ_c t_c) y − t``.

The loss is a ``jax.custom_jvp`` whose tangent is the analytic ``⟨∂ξ/∂z, ż⟩``, so
forward mode (``jax.jvp``, ``jax.jacfwd``), reverse mode (JAX transposes the tangent
into ``g·(y − t)``) and higher orders (the rule is itself differentiable) all work.
Under ``jax.jit`` XLA fuses the computation of ``y`` into the gradient's write: no
``[N, C]`` array is kept between the passes.

``1 − y_t`` is the one quantity that plain autodiff computes badly: when ``y_t`` is
close to 1 the subtraction cancels (float64 logits ``[40, 0]`` give ``0`` instead of
``4.2e-18``) and the gradient no longer sums to zero.  The entry of a class with
``y > 1/2`` is computed from the tail of the row sum instead
(``_numerics.complement``), accurate to a few ulps.  Labels, masking, log-sum-exp,
smoothing and reductions come from ``softmax_jax._numerics``.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from softmax_jax import _arguments
from softmax_jax import _numerics as nx


class SoftRows(NamedTuple):
  """Per-row statistics (``[..., 1]``) of the loss of probability targets ``t``."""

  stats: nx.RowStats  # m, s and the tail of the masked logits
  log_s: jax.Array
  smooth: jax.Array  # ε / K, the smoothing mass of each valid class
  total: jax.Array  # Σ_c t'_c with t' = (1 − ε) t + ε/K on the valid classes
  loss: jax.Array  # ξ = Σ_c t'_c (log s − (z_c − m)), NaN or 0 as the row demands
  row_ok: jax.Array  # the row has a valid class
  bad: jax.Array  # target mass on an invalid class


class PerRow(NamedTuple):
  """What the loss returns per row (the class axis dropped)."""

  loss: jax.Array
  counted: jax.Array  # 1 where the row has a valid class (the mean's weight), else 0


def _soft_rows(zm, t, eps, all_valid) -> SoftRows:
  """The row statistics of masked logits ``zm`` and targets ``t``.

  ``all_valid``: the caller vouches that no class is masked (no ``where``, no ``−inf``),
  so the masking selects are left out; :func:`_soft_rows_by_platform` checks the result.
  Half precision is upcast here, inside each branch of that route: an upcast shared by
  both would be stored."""
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


def _soft_rows_by_platform(zm, t, where, eps) -> SoftRows:
  """:func:`_soft_rows`, by the running platform.

  On the CPU, without ``where``, they are first computed without masking selects
  (selects keep XLA:CPU from fusing the row reductions, about 10× slower at 4096×1024);
  only if some row comes out non-finite (a ``−inf`` or NaN logit, a NaN target) is the
  masked computation run (``lax.cond``).  Only per-row values leave the cond.  Other
  platforms fuse the selects, and there a cond costs a device-to-host read of its
  predicate, so they run the masked computation directly."""
  general = lambda: _soft_rows(zm, t, eps, False)  # noqa: E731
  if where is not None:
    return general()

  def cpu():
    fast = _soft_rows(zm, t, eps, True)
    return lax.cond(jnp.all(jnp.isfinite(fast.loss)), lambda: fast, general)

  return lax.platform_dependent(cpu=cpu, default=general)


def _soft_gradient(r: SoftRows, zm, t, eps) -> jax.Array:
  """``∂ξ/∂z = (Σ t') y − t'``; the entry of a class with ``y > 1/2`` from the complement.

  Elementwise only (the row statistics come from :func:`_soft_rows_by_platform`)."""
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


def _per_row(r: SoftRows, dtype) -> PerRow:
  return PerRow(r.loss[..., 0], r.row_ok[..., 0].astype(dtype))


@partial(jax.custom_jvp, nondiff_argnums=(3,))
def _soft_xent(z, t, where, eps) -> PerRow:
  """Per-row ``ξ(t', z)`` of targets smoothed by ``eps`` over the valid classes."""
  r = _soft_rows_by_platform(nx.masked(z, where), t, where, eps)
  return _per_row(r, r.loss.dtype)


@_soft_xent.defjvp
def _soft_xent_jvp(eps, primals, tangents):
  # ∂ξ/∂z = (Σ_c t'_c) y − t'  (lecture, "Derivative of the cross-entropy loss function for
  # the softmax function": −t_i + y_i Σ_j t_j), and ∂ξ/∂t_c = −(1 − ε) log y_c, so
  # dξ = ⟨(Σt') y − t', ż⟩ − (1 − ε) ⟨log y, ṫ⟩.
  z, t, where = primals
  dz, dt, _ = tangents
  zm = nx.masked(z, where)
  r = _soft_rows_by_platform(zm, t, where, eps)
  zc = nx.upcast(zm)
  neg_log_y = jnp.where(zc != -jnp.inf, r.log_s - (zc - r.stats.m), 0)
  tangent = (jnp.sum(_soft_gradient(r, zm, t, eps) * dz, -1)
             + nx.finish(jnp.sum((1 - eps) * neg_log_y * dt, -1, keepdims=True),
                         r.row_ok, r.bad)[..., 0])
  dtype = r.loss.dtype
  return _per_row(r, dtype), PerRow(tangent.astype(dtype),
                                    jnp.zeros(r.row_ok.shape[:-1], dtype))


@partial(jax.jit, static_argnums=(3, 4, 5))
def _reduced_soft_xent(logits, targets, where, axis, eps, reduction):
  """The loss with the class axis moved last, reduced; jitted, so one fused program."""
  z = jnp.moveaxis(logits, axis, -1)  # both upcast inside the rule (see _soft_rows)
  t = jnp.moveaxis(targets, axis, -1)
  w = None if where is None else jnp.moveaxis(where, axis, -1)
  loss, counted = _soft_xent(z, t, w, eps)
  return nx.reduce(loss, counted, reduction)


def _checked_targets(targets, logits, fn):
  """``targets`` as a floating array of the shape of ``logits`` (else a named error)."""
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
  lecture's ``y − t``, written by a ``custom_jvp``; the loss is computed from
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
  targets = _checked_targets(targets, logits, fn)
  (ax,) = _arguments.axes(axis, logits.ndim, fn, allow_tuple=False)
  where = _arguments.where_mask(where, logits.shape, fn, "logits")
  eps = _arguments.label_smoothing(label_smoothing, fn)
  reduction = _arguments.reduction(reduction, fn)
  return _reduced_soft_xent(logits, targets, where, ax, eps, reduction)


@partial(jax.jit, static_argnums=(2,))
def _analytic_gradient(logits, targets, axis):
  """``(Σ_c t_c) y − t`` along ``axis`` in one fused program (no autodiff involved)."""
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
  targets = _checked_targets(targets, logits, fn)
  (ax,) = _arguments.axes(axis, logits.ndim, fn, allow_tuple=False)
  return _analytic_gradient(logits, targets, ax)
