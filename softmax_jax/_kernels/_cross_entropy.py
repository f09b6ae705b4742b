r"""Integer-label cross-entropy with the fused kernel, reduced, with its derivatives.

The loss is a ``jax.custom_jvp`` whose tangent reads the gradient the kernel stored
(``∂ξ/∂z = y − t``, lecture, "Derivative of the cross-entropy loss function for the
softmax function"), so ``jax.grad`` reads the logits once and writes the gradient
once.  The kernel's outputs are themselves a ``jax.custom_jvp`` differentiated through
:func:`~softmax_jax._kernels._xent_kernel.xent_formula`, the same values in XLA ops
(second order, forward mode over the gradient).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from softmax_jax import _numerics as nx
from softmax_jax._kernels._tiling import MAX_TILE, ROW_ELEMS
from softmax_jax._kernels._xent_kernel import KernelOutputs, xent_2d, xent_formula

# ---------------------------------------------------------------------------
# The kernel as a differentiable function
# ---------------------------------------------------------------------------


class KernelOpts(NamedTuple):
  """The kernel's static options (hashable: a ``nondiff`` argument)."""

  eps: float = 0.0
  z_loss: float = 0.0
  softcap: float | None = None
  donate: bool = False
  max_tile: int = MAX_TILE
  row_elems: int = ROW_ELEMS
  interpret: bool | None = None

  def formula(self) -> dict:
    return dict(eps=self.eps, z_loss=self.z_loss, softcap=self.softcap)


@functools.partial(jax.custom_jvp, nondiff_argnums=(4,))
def _kernel_outputs(x, codes, weights, g, opts: KernelOpts) -> KernelOutputs:
  return xent_2d(x, codes, weights, grad_scale=g, donate=opts.donate, interpret=opts.interpret,
                 max_tile=opts.max_tile, row_elems=opts.row_elems, **opts.formula())


@_kernel_outputs.defjvp
def _kernel_outputs_jvp(opts, primals, tangents):
  # The outputs differentiated through xent_formula (the same values in XLA ops): what
  # second derivatives and forward mode over the gradient see.  Its gradient is the
  # lecture's y − t, whose own derivative is the softmax Jacobian diag(y) − y yᵀ
  # (lecture, "Derivative of the softmax function").
  x, codes, weights, g = primals
  dx, _, dw, dg = tangents
  out = _kernel_outputs(x, codes, weights, g, opts)
  primal, tangent = jax.jvp(lambda x, w: xent_formula(x, codes, w, **opts.formula()),
                            (x, weights), (dx, dw))
  # the stored r·g·∂ℓ/∂z moves with ∂ℓ/∂z and with g (1/Σ w_t moves with the weights)
  dgrad = (out.row_scale[:, None] * (g * tangent.grad + dg * primal.grad)).astype(
      out.grad.dtype)
  zero = jnp.zeros_like(out.counted)
  return out, KernelOutputs(tangent.loss, dgrad, tangent.nll, zero, tangent.lse, zero)


# ---------------------------------------------------------------------------
# The reduced loss (custom JVP: forward mode, grad, second order)
# ---------------------------------------------------------------------------


class _LossConfig(NamedTuple):
  reduction: str
  opts: KernelOpts


def _label_weights(codes, weights):
  """``w_t`` per row (``w[0]`` for a label that is not a class, as the XLA path has it)."""
  if weights is None:
    return jnp.ones(codes.shape, jnp.float32)
  return weights.astype(jnp.float32)[nx.label_info(codes).index]


def _gradient_prescale(x, codes, weights, reduction):
  """The factor the kernel folds into the gradient: ``1 / Σ w_t`` for the mean (not for
  float16, whose range could not hold ``(y − t)/N`` without underflow), else 1.

  ``Σ w_t`` is predicted from the label codes alone (a row whose logits are all ``−inf``
  does not count either; then the prediction is off and :func:`_logits_tangent`
  rescales).  It is differentiable in the weights: the gradient's own derivative
  (second order) includes ``d(1/Σ w_t)``."""
  if reduction != "mean" or x.dtype == jnp.float16:
    return jnp.ones((), jnp.float32)
  predicted = jnp.sum(jnp.where(codes != nx.IGNORED, _label_weights(codes, weights), 0.0))
  return 1 / nx.mean_denominator(predicted)


def _reduce(out: KernelOutputs, codes, weights, reduction):
  return nx.reduce(out.loss, out.counted * _label_weights(codes, weights), reduction)


def _is_symbolic_zero(t) -> bool:
  return t is None or isinstance(t, jax.custom_derivatives.SymbolicZero)


def _logits_tangent(out: KernelOutputs, g, d, reduction, dtype, dx):
  """``⟨∂ℓ/∂z, ż⟩`` per row from the stored gradient.  For the mean and the sum the
  stored gradient (already divided by the mean's denominator) is used as is, so that in
  ``jax.grad`` the transposed cotangent is the constant 1 and no pass over ``[N, C]``
  follows the kernel; a wrong prediction (a row of ``−inf`` logits) is rescaled by a
  ``lax.cond`` whose other branch forwards the kernel's output."""
  dx = dx.astype(jnp.float32)
  if dtype == jnp.float16:  # not folded: scale by the row factor here
    factor = (1 / d if reduction == "mean" else 1.0) / out.row_scale
    return jnp.sum(out.grad.astype(jnp.float32) * dx * factor[:, None], -1)
  grad = out.grad
  if reduction == "mean":
    grad = lax.cond(g == 1 / d, lambda: grad,
                    lambda: (grad.astype(jnp.float32) * (1 / d / g)).astype(grad.dtype))
  return jnp.sum(grad.astype(jnp.float32) * dx, -1)


def _weights_tangent(out: KernelOutputs, x, codes, dw, opts: KernelOpts):
  """``Σ_c ∂ℓ/∂w_c ẇ_c`` per row: ``(1−ε) (−log y_t) ẇ_t + (ε/K) Σ_c (−log y_c) ẇ_c``."""
  dw = dw.astype(jnp.float32)
  per = (1 - opts.eps) * out.nll * dw[nx.label_info(codes).index]
  if opts.eps:  # reads the logits again (XLA ops, only when the weights are differentiated)
    z, _ = nx.softcap(nx.upcast(x), opts.softcap)
    valid = z != -jnp.inf
    coef = nx.smoothing_coef(opts.eps, nx.count_valid(z))[:, 0]
    neg_log_y = jnp.where(valid, out.lse[:, None] - jnp.where(valid, z, 0.0), 0.0)
    per = per + coef * (neg_log_y @ dw)
  return jnp.where(jnp.isnan(out.loss), jnp.nan, out.counted * per)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3,))
def _reduced_loss(x, codes, weights, cfg: _LossConfig):
  """The loss of ``[N, C]`` logits, reduced (a scalar for mean and sum, ``[N]`` for none)."""
  g = _gradient_prescale(x, codes, weights, cfg.reduction)
  return _reduce(_kernel_outputs(x, codes, weights, g, cfg.opts), codes, weights, cfg.reduction)


@functools.partial(_reduced_loss.defjvp, symbolic_zeros=True)
def _reduced_loss_jvp(cfg, primals, tangents):
  # dξ = ⟨∂ξ/∂z, ż⟩ + ⟨∂ξ/∂w, ẇ⟩ with ∂ξ/∂z = y − t (lecture, "Derivative of the
  # cross-entropy loss function for the softmax function") read from the kernel's output.
  x, codes, weights = primals
  dx, _, dw = tangents
  g = _gradient_prescale(x, codes, weights, cfg.reduction)
  out = _kernel_outputs(x, codes, weights, g, cfg.opts)
  value = _reduce(out, codes, weights, cfg.reduction)
  d = nx.mean_denominator(jnp.sum(out.counted * _label_weights(codes, weights)))
  rows = jnp.zeros_like(out.loss)  # ⟨∂ℓ/∂z, ż⟩ (divided by the mean's denominator)
  w_rows = jnp.zeros_like(out.loss)  # ⟨∂ℓ/∂w, ẇ⟩
  if not _is_symbolic_zero(dx):
    rows = _logits_tangent(out, g, d, cfg.reduction, x.dtype, dx)
  if weights is not None and not _is_symbolic_zero(dw):
    w_rows = _weights_tangent(out, x, codes, dw, cfg.opts)
  if cfg.reduction == "none":
    return value, rows + w_rows
  if cfg.reduction == "sum":
    return value, jnp.sum(rows) + jnp.sum(w_rows)
  tangent = jnp.sum(rows)
  if weights is not None and not _is_symbolic_zero(dw):
    # the denominator Σ_counted w_t moves with the weights: d(S/D) = (dS − (S/D) dD) / D
    dd = jnp.sum(out.counted * dw.astype(jnp.float32)[nx.label_info(codes).index])
    tangent = tangent + (jnp.sum(w_rows) - value * dd) / d
  return value, tangent


def cross_entropy(x, labels, reduction, *, weights=None, eps=0.0, z_loss=0.0, softcap=None,
                  ignore_index=None, donate=False, max_tile: int = MAX_TILE,
                  row_elems: int = ROW_ELEMS, interpret: bool | None = None):
  """Integer-label cross-entropy with the fused kernel, reduced as the XLA path does
  (``mean`` divides by ``Σ w_t`` over the counted rows).

  Labels of any integer dtype become the core's int32 codes here, outside the kernel.
  The loss is a ``jax.custom_jvp`` (forward mode, ``jax.hessian`` and grad of grad work);
  for the mean and the sum its tangent is ``⟨G, ż⟩`` with ``G`` the kernel's gradient
  already divided by the mean's denominator, so ``jax.grad`` reads the logits once and
  writes the gradient once.  ``max_tile`` and ``row_elems`` are the (static, power of two)
  tile width and the most elements of a row block; ``interpret=None`` runs the Triton
  kernel when the program is lowered for CUDA and interpret mode elsewhere."""
  c = x.shape[-1]
  labels = nx.host_labels(labels, ignore_index)
  codes = nx.canonical_labels(labels, c, ignore_index).reshape(-1)
  opts = KernelOpts(float(eps), float(z_loss), None if softcap is None else float(softcap),
                    bool(donate), max_tile, row_elems, interpret)
  out = _reduced_loss(x.reshape(-1, c), codes, weights, _LossConfig(reduction, opts))
  return out.reshape(labels.shape) if reduction == "none" else out
