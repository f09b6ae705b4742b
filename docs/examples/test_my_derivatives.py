"""An example test file: checking your own custom derivative rules with pytest.

Copy it next to your tests and replace the functions with yours.  Each test calls
``assert_derivatives``, which checks forward and reverse mode against float64 finite
differences and against each other, ``jax.vmap`` of each against a loop, ``jax.jit``
against eager and (``order=2``) the second derivative; when a check fails, pytest prints
the whole report: which mode is wrong, at which element, by how much, and the bound.

Run it with ``python -m pytest docs/examples/test_my_derivatives.py``.
"""

import jax
import jax.numpy as jnp
import pytest

from softmax_jax.verify import assert_derivatives


@jax.custom_jvp
def softplus(x):
  """``log(1 + eˣ)``, computed without overflow."""
  return jnp.logaddexp(x, 0.0)


@softplus.defjvp
def _softplus_jvp(primals, tangents):
  (x,), (v,) = primals, tangents
  return softplus(x), jax.nn.sigmoid(x) * v  # d softplus / dx = σ(x)


@jax.custom_vjp
def clipped_norm(x, limit):
  """``min(‖x‖, limit)`` per row, with a hand-written backward pass."""
  return jnp.minimum(jnp.linalg.norm(x, axis=-1), limit)


def _clipped_norm_fwd(x, limit):
  norm = jnp.linalg.norm(x, axis=-1)
  return jnp.minimum(norm, limit), (x, norm, limit)


def _clipped_norm_bwd(residuals, g):
  x, norm, limit = residuals
  inside = norm < limit
  dx = jnp.where(inside, g / norm, 0.0)[..., None] * x  # d‖x‖/dx = x / ‖x‖
  return dx, jnp.where(inside, 0.0, g)


clipped_norm.defvjp(_clipped_norm_fwd, _clipped_norm_bwd)


def test_softplus():
  x = jnp.linspace(-5.0, 5.0, 7)  # add .astype(jnp.bfloat16) for bfloat16 (a looser bound)
  assert_derivatives(softplus, x, order=2)


def test_clipped_norm():
  x = jnp.array([[0.3, -0.4], [3.0, 4.0]])  # one row inside the limit, one clipped
  report = assert_derivatives(clipped_norm, x, jnp.array([1.0, 2.0]), fast=True)
  assert report.passed


def test_a_wrong_rule_is_reported():
  @jax.custom_jvp
  def bad_softplus(x):
    return jnp.logaddexp(x, 0.0)

  @bad_softplus.defjvp
  def _jvp(primals, tangents):
    (x,), (v,) = primals, tangents
    return bad_softplus(x), 1.01 * jax.nn.sigmoid(x) * v  # 1 % too large

  with pytest.raises(AssertionError, match="FAIL"):
    assert_derivatives(bad_softplus, jnp.linspace(-5.0, 5.0, 7))
