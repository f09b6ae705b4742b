r"""Binary cross-entropy, ``binary_cross_entropy``: the lecture's logistic-regression cost.

Lecture ("Gradient Descent?"): ``J(θ) = −(1/m) Σ_i [y log h + (1 − y) log(1 − h)]`` with
``h = σ(z)`` ("Logistic function"), whose derivative in the logit is ``h − y`` (the
update ``θ_j := θ_j − α Σ_i (h − y) x_j``).  It is the 2-class case of the softmax
cross-entropy: ``binary_cross_entropy(z1 − z0, t) = ξ(t, [z0, z1])``.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from softmax_jax import _arguments
from softmax_jax import _numerics as nx


def _times_zero_is_zero(coef, value):
  """``coef * value`` that is 0 whenever ``coef`` is 0, even if ``value`` is inf."""
  return jnp.where(coef == 0, 0, coef * value)


@jax.custom_jvp
def _binary_xent(z, y):
  """Per-element ``−[y log h + (1 − y) log(1 − h)]`` with ``h = σ(z)``."""
  # Written y softplus(−z) + (1 − y) softplus(z): two non-negative terms, no cancellation.
  return (_times_zero_is_zero(y, jax.nn.softplus(-z))
          + _times_zero_is_zero(1 - y, jax.nn.softplus(z)))


@_binary_xent.defjvp
def _binary_xent_jvp(primals, tangents):
  # ∂J/∂z = h − y (lecture, "Gradient Descent?": θ_j := θ_j − α Σ_i (h − y) x_j), written
  # (1 − y) σ(z) − y σ(−z): for a hard label the one term left, −σ(−z) or σ(z), is accurate
  # where h − y would cancel.  ∂J/∂y = softplus(−z) − softplus(z) = −z.
  z, y = primals
  dz, dy = tangents
  grad_z = (1 - y) * lax.logistic(z) - y * lax.logistic(-z)
  return _binary_xent(z, y), grad_z * dz - z * dy


@partial(jax.jit, static_argnums=(2,))
def _reduced_binary_xent(logits, labels, reduction):
  """The loss in the compute dtype (float32 for half precision), reduced."""
  z = nx.upcast(logits)
  loss = _binary_xent(z, labels.astype(z.dtype))
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
  return _reduced_binary_xent(logits, labels, reduction)
