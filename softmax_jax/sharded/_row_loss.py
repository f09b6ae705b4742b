r"""The per-row cross-entropy of class-sharded logits, and its JVP.

Each device holds the classes ``[k·C/D, (k+1)·C/D)`` of every row and all the labels.
One ``pmax`` and one ``psum`` (:func:`~softmax_jax.sharded._stats.global_stats`) give
the whole row's statistics, the label's logit ``z_t``, its class weight and the
smoothing sums ``K``, ``Σ w_c``, ``Σ w_c (z_c − m)``; then every device computes the
loss, and its own slice of the gradient: ``∂ξ/∂z = y − t`` (lecture, "Derivative of
the cross-entropy loss function for the softmax function") needs no collective, so
JAX's transpose of the tangent's ``psum`` is free and ``value_and_grad`` has the
collectives of the forward pass only.  Every rule (labels, masking, statistics,
smoothing, soft-cap) is the one of :mod:`softmax_jax._numerics`.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from softmax_jax import _numerics as nx
from softmax_jax.sharded import _stats


class LossOptions(NamedTuple):
  """The static options of the loss (checked)."""

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
  is_t: jax.Array  # [..., C/D]: the label's class is this entry
  local_t: jax.Array  # the label's index on this device (clipped)
  here: jax.Array  # the label's class is on this device
  shifted_t: jax.Array  # z_t − m
  w_t: jax.Array  # the label's class weight (1 without weights)
  smooth: jax.Array | None  # ε / K
  wsum: jax.Array | None  # Σ_c w_c over the valid classes
  wz: jax.Array | None  # Σ_c w_c (z_c − m) over the valid classes
  counted: jax.Array
  bad: jax.Array


class RowLosses(NamedTuple):
  loss: jax.Array  # [...] per example, the same on every device
  weight: jax.Array  # [...] w_t of the counted examples, else 0 (the mean's weights)


def _valid_class_weights(weights, zm):
  """``w_c`` broadcast over the rows, 0 on invalid classes."""
  wc = jnp.ones_like(zm) if weights is None else jnp.broadcast_to(weights, zm.shape)
  return jnp.where(zm != -jnp.inf, wc, jnp.zeros_like(wc))


def _shard_parts(z, code, weights, where, axis_name, eps) -> ShardParts:
  zm = nx.masked(z, where)
  width = zm.shape[-1]
  lab = nx.label_info(code[..., None])
  local = lab.index - lax.axis_index(axis_name) * width
  here = lab.is_class & (local >= 0) & (local < width)
  local = jnp.clip(local, 0, width - 1)
  is_t = (lax.broadcasted_iota(jnp.int32, zm.shape, zm.ndim - 1) == local) & here

  def extra(m):
    sums = {"z_t": _stats.pick_local(zm, local, here)}
    if weights is not None:
      sums["w_t"] = _stats.pick_local(weights, local, here)
    if eps > 0:
      wc = _valid_class_weights(weights, zm)
      shifted = jnp.where(zm != -jnp.inf, zm - m, jnp.zeros_like(zm))
      sums.update(k=nx.count_valid(zm), wsum=jnp.sum(wc, -1, keepdims=True),
                  wz=jnp.sum(wc * shifted, -1, keepdims=True))
    return sums

  st, sums = _stats.global_stats(zm, axis_name, extra)
  w_t = sums.get("w_t", jnp.ones_like(st.m))
  smooth = None if eps == 0 else nx.smoothing_coef(eps, sums["k"])
  shifted_t = sums["z_t"] - st.m
  counted, bad = nx.label_status(nx.nonempty(st), lab, shifted_t)
  return ShardParts(zm, st, nx.log_normaliser(st), is_t, local, here, shifted_t, w_t, smooth,
                    sums.get("wsum"), sums.get("wz"), counted, bad)


def _lse(p: ShardParts):
  return p.stats.m + p.log_s


def _loss_and_weight(p: ShardParts, eps, z_loss) -> RowLosses:
  # PyTorch semantics: (1 − ε) w_t (−log y_t) + (ε/K) Σ_c w_c (−log y_c), with
  # Σ_c w_c (−log y_c) = W log s − Σ_c w_c (z_c − m) (both terms ≥ 0 for w ≥ 0).
  loss = (1 - eps) * p.w_t * (p.log_s - p.shifted_t)
  if p.smooth is not None:
    loss = loss + p.smooth * (p.wsum * p.log_s - p.wz)
  if z_loss:  # PaLM's λ_z lse²
    loss = loss + z_loss * jnp.square(_lse(p))
  weight = jnp.where(p.counted, p.w_t, jnp.zeros_like(p.w_t))
  return RowLosses(nx.finish(loss, p.counted, p.bad)[..., 0], weight[..., 0])


def _local_gradient(p: ShardParts, weights, eps, z_loss):
  r"""This device's slice of ``∂ξ/∂z = (1 − ε) w_t (y − δ_t) + (ε/K)(W y − w) + 2 λ_z lse y``
  (lecture: ``y − t``), the label's ``y_t − 1`` written as ``−(1 − y_t)`` from the tail."""
  y = jnp.exp(p.zm - p.stats.m) / nx.denominator(p.stats.s)
  scale = (1 - eps) * p.w_t
  grad = scale * y
  label_entry = -scale * nx.complement(p.stats, p.shifted_t)
  if p.smooth is not None:
    smooth = p.smooth * (p.wsum * y - _valid_class_weights(weights, p.zm))
    grad = grad + smooth
    label_entry = label_entry + _stats.pick_local(smooth, p.local_t, p.here)
  grad = jnp.where(p.is_t, label_entry, grad)
  if z_loss:
    grad = grad + (2 * z_loss) * _lse(p) * y
  return nx.finish(grad, p.counted, p.bad)


def _weight_tangent(p: ShardParts, dw, eps):
  """This device's part of ``Σ_c ∂ξ/∂w_c ẇ_c``, and ``ẇ_t`` where the label is here."""
  dw_t = _stats.pick_local(dw, p.local_t, p.here)
  tangent = (1 - eps) * (p.log_s - p.shifted_t) * dw_t
  if p.smooth is not None:
    neg_log_y = jnp.where(p.zm != -jnp.inf, p.log_s - (p.zm - p.stats.m), 0)
    tangent = tangent + p.smooth * jnp.sum(neg_log_y * dw, -1, keepdims=True)
  return tangent, dw_t


@functools.partial(jax.custom_jvp, nondiff_argnums=(4, 5, 6))
def _row_losses(z, code, weights, where, axis_name, eps, z_loss) -> RowLosses:
  return _loss_and_weight(_shard_parts(z, code, weights, where, axis_name, eps), eps, z_loss)


@_row_losses.defjvp
def _row_losses_jvp(axis_name, eps, z_loss, primals, tangents):
  # dξ = ⟨∂ξ/∂z, ż⟩ + ⟨∂ξ/∂w, ẇ⟩ with ∂ξ/∂z = y − t (lecture, "Derivative of the
  # cross-entropy loss function for the softmax function"): each device its own classes,
  # then one psum.  The rule is plain JAX code, so it is differentiable again (second order).
  z, code, weights, where = primals
  dz, _, dw, _ = tangents
  p = _shard_parts(z, code, weights, where, axis_name, eps)
  out = _loss_and_weight(p, eps, z_loss)
  local = [jnp.sum(_local_gradient(p, weights, eps, z_loss) * dz, -1)]
  if weights is not None:
    t_w, dw_t = _weight_tangent(p, dw, eps)
    local += [t_w[..., 0], dw_t[..., 0]]
  total = lax.psum(tuple(local), axis_name)
  tangent, d_weight = total[0], jnp.zeros_like(out.weight)
  if weights is not None:
    tangent = tangent + nx.finish(total[1][..., None], p.counted, p.bad)[..., 0]
    d_weight = jnp.where(p.counted[..., 0], total[2], jnp.zeros_like(total[2]))
  return out, RowLosses(tangent, d_weight)


def row_losses(z, labels, where, weights, axis_name, opts: LossOptions) -> RowLosses:
  """Per-example loss and counted ``w_t`` of this device's logits ``z`` (any dtype)."""
  z, _ = nx.softcap(nx.upcast(z), opts.softcap)  # Gemma 2's s·tanh(z/s); −inf stays −inf
  code = nx.canonical_labels(labels, z.shape[-1] * lax.axis_size(axis_name), opts.ignore_index)
  w = None if weights is None else weights.astype(z.dtype)
  return _row_losses(z, code, w, where, axis_name, opts.eps, opts.z_loss)
