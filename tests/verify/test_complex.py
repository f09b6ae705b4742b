"""Complex inputs of first_order_checks: JAX's convention for the gradient of a real loss of
complex parameters (checked against central differences in both real directions),
holomorphic functions, and a planted wrong imaginary part, caught and named."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from softmax_jax.verify import _finite_differences as fd
from softmax_jax.verify._projections import first_order_checks


def by_pair(result):
  return {(c.mode, c.reference): c for c in result.checks}


@pytest.fixture
def w(rng):
  return jnp.asarray(rng.normal(size=(5,)) + 1j * rng.normal(size=(5,)), jnp.complex64)


def real_loss(w):
  return jnp.sum(jnp.abs(w) ** 2 * jnp.cos(w.real) + w.imag ** 3)


def test_jax_grad_of_a_real_loss_is_dx_minus_i_dy(w):
  # JAX's convention: grad f(z) = ∂f/∂x − i ∂f/∂y, the conjugate of the ascent direction
  g = np.asarray(jax.grad(real_loss)(w))
  parts = (w.real, w.imag)
  of_parts = lambda p: real_loss(jax.lax.complex(p[0], p[1]))  # noqa: E731 - float64 inside
  zero = np.zeros(w.size)
  for j in range(w.size):
    e = np.eye(w.size)[j]
    dx = fd.directional_difference(of_parts, parts, (e, zero)).value[0]  # along the real unit
    dy = fd.directional_difference(of_parts, parts, (zero, e)).value[0]  # along i
    np.testing.assert_allclose(g[j], dx - 1j * dy, rtol=1e-4, atol=1e-4)
    assert abs(dy) > 1e-3  # the imaginary direction is really exercised


@pytest.mark.parametrize("fast", [True, False])
def test_real_loss_of_complex_parameters_passes(w, fast):
  result = first_order_checks(real_loss, (w,), fast=fast)
  assert all(c.passed for c in result.checks), result.checks


def _conjugated_gradient():
  """|w|²·Re w with a VJP returning the conjugate of JAX's gradient (its imaginary part has
  the wrong sign)."""
  @jax.custom_vjp
  def f(w):
    return jnp.sum(jnp.abs(w) ** 2 * w.real)

  def bwd(w, g):
    right = jnp.conj(2 * w) * w.real + jnp.abs(w) ** 2  # ∂x − i∂y
    return (g * jnp.conj(right),)
  f.defvjp(lambda w: (f(w), w), bwd)
  return f


@pytest.mark.parametrize("fast", [True, False])
def test_wrong_imaginary_part_is_caught_and_named(w, fast):
  f = _conjugated_gradient()
  pairs = by_pair(first_order_checks(lambda p: f(p["w"]), ({"w": w},), fast=fast))
  assert pairs["fwd", "fd"].passed is None  # custom_vjp: no forward mode
  rev = pairs["rev", "fd"]
  assert rev.passed is False
  assert "['w'].imag" in rev.where, rev.where


def _holomorphic(z):
  return z ** 2 * jnp.sin(z) + jnp.exp(0.5 * z)


@pytest.mark.parametrize("fast", [True, False])
def test_holomorphic_function_passes_and_is_complex_linear(w, fast):
  result = first_order_checks(_holomorphic, (w,), fast=fast, holomorphic=True)
  pairs = by_pair(result)
  assert all(c.passed for c in result.checks), result.checks
  assert pairs["holomorphic", "fd"].passed
  # jax.grad(holomorphic=True) is f'(z) itself
  g = jax.grad(lambda z: _holomorphic(z).sum(), holomorphic=True)(w)
  np.testing.assert_allclose(g, 2 * w * jnp.sin(w) + w ** 2 * jnp.cos(w) + 0.5 * jnp.exp(0.5 * w),
                             rtol=1e-4)


def test_a_function_that_is_not_holomorphic_is_reported(w):
  result = first_order_checks(lambda z: jnp.conj(z) * z, (w,), fast=True, holomorphic=True)
  pairs = by_pair(result)
  assert pairs["rev", "fd"].passed and pairs["fwd", "fd"].passed  # JAX's derivatives are right
  assert pairs["holomorphic", "fd"].passed is False
  assert "not holomorphic" in pairs["holomorphic", "fd"].note


def test_holomorphic_needs_complex_inputs_and_outputs(w):
  with pytest.raises(ValueError, match="holomorphic=True needs"):
    first_order_checks(real_loss, (w,), holomorphic=True)
