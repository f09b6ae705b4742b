"""binary_cross_entropy (softmax_jax/losses/_binary.py): the lecture's logistic cost J(θ)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import softmax_jax as sj

import reference as ref
from _util import f64, logits


@pytest.mark.x64
def test_value_and_gradient_three_ways(rng):
  """Against the float64 NumPy reference, the lecture's ∂J/∂z = (h − y)/m, autodiff of the
  naive formula and central finite differences (orders 1 and 2)."""
  z = logits(rng, (20,), jnp.float64, 5.0)
  y = jnp.asarray(rng.integers(0, 2, 20)).astype(jnp.float64)
  np.testing.assert_allclose(sj.binary_cross_entropy(z, y, reduction="none"),
                             ref.binary_cross_entropy(f64(z), f64(y)), rtol=1e-12)
  h = 1 / (1 + np.exp(-f64(z)))
  g = jax.grad(sj.binary_cross_entropy)(z, y)
  np.testing.assert_allclose(g, (h - f64(y)) / 20, rtol=1e-12)  # lecture: h − y
  naive = lambda z: -jnp.mean(y * jnp.log(jax.nn.sigmoid(z))  # noqa: E731
                              + (1 - y) * jnp.log(1 - jax.nn.sigmoid(z)))
  np.testing.assert_allclose(g, jax.grad(naive)(z), rtol=1e-9)
  check_grads(lambda z: sj.binary_cross_entropy(z, y), (z,), order=2, modes=["rev"])


@pytest.mark.x64
def test_is_the_two_class_softmax_cross_entropy(rng):
  """ξ([z, 0], class 0 ⇔ y = 1) of the lecture's softmax is J of the logistic function."""
  z = logits(rng, (20,), jnp.float64, 5.0)
  y = jnp.asarray(rng.integers(0, 2, 20)).astype(jnp.float64)
  two = jnp.stack([z, jnp.zeros_like(z)], -1)
  np.testing.assert_allclose(
      sj.binary_cross_entropy(z, y, reduction="none"),
      sj.cross_entropy_with_integer_labels(two, (1 - y).astype(jnp.int32), reduction="none"),
      rtol=1e-12, atol=1e-15)


def test_saturated_logits():
  """Huge logits give the exact loss (0 or |z|); ∓inf with the matching label gives 0 with
  gradient 0."""
  big = jnp.array([1e30, -1e30, 1e30], jnp.float32)
  val = sj.binary_cross_entropy(big, jnp.array([1.0, 0.0, 0.0]), reduction="none")
  np.testing.assert_array_equal(val, np.array([0.0, 0.0, 1e30], np.float32))
  inf = jnp.array([jnp.inf, -jnp.inf])
  labels = jnp.array([1.0, 0.0])
  np.testing.assert_array_equal(sj.binary_cross_entropy(inf, labels, reduction="none"), 0.0)
  np.testing.assert_array_equal(jax.grad(sj.binary_cross_entropy)(inf, labels), 0.0)


def test_half_precision_is_computed_in_float32(rng):
  z = logits(rng, (16,), jnp.bfloat16)
  y = jnp.asarray(rng.random(16), jnp.float32)
  val = sj.binary_cross_entropy(z, y, reduction="none")
  assert val.dtype == jnp.float32
  np.testing.assert_allclose(val, ref.binary_cross_entropy(f64(z), f64(y)), rtol=1e-6)
  assert jax.grad(sj.binary_cross_entropy)(z, y).dtype == jnp.bfloat16


def test_errors_name_the_argument():
  with pytest.raises(ValueError, match=r"labels has shape \(4,\) but logits has shape \(3,\)"):
    sj.binary_cross_entropy(jnp.zeros(3), jnp.zeros(4))
  with pytest.raises(TypeError, match="logits must be a floating-point array"):
    sj.binary_cross_entropy(jnp.zeros(3, jnp.int32), jnp.zeros(3))
  with pytest.raises(TypeError, match=r"labels must be real numbers in \[0, 1\]"):
    sj.binary_cross_entropy(jnp.zeros(3), jnp.zeros(3, jnp.complex64))
  with pytest.raises(ValueError, match="reduction must be one of"):
    sj.binary_cross_entropy(jnp.zeros(3), jnp.zeros(3), reduction="avg")
