"""softmax_jax.verify._finite_differences: central differences in float64, with x64 off."""

import jax
import jax.numpy as jnp
import numpy as np

from softmax_jax.verify import _finite_differences as fd


def test_a_float32_point_is_differenced_in_float64_and_x64_stays_off():
  x = jnp.array([0.5, -1.25], jnp.float32)
  v = jnp.array([1.0, 2.0], jnp.float32)
  d = fd.directional_difference(lambda z: jnp.sin(z) * z, x, v)
  assert not jax.config.jax_enable_x64  # the context did not leak
  assert d.value.dtype == np.float64
  x64 = np.asarray(x, np.float64)
  exact = (np.cos(x64) * x64 + np.sin(x64)) * np.asarray(v, np.float64)
  np.testing.assert_allclose(d.value, exact, rtol=1e-8)
  assert np.all(np.abs(d.value - exact) <= d.error)  # the estimate covers the actual error
  assert np.all(d.error < 1e-7)


def test_entries_where_the_function_is_not_finite_are_zero():
  d = fd.directional_difference(lambda z: jnp.log(z), jnp.array([0.0, 2.0]), jnp.ones(2))
  assert d.value[0] == 0.0 and d.error[0] == 0.0
  assert abs(d.value[1] - 0.5) < 1e-8


def test_the_jacobian_of_a_pytree_function_by_columns():
  x = {"a": jnp.array([1.0, 2.0]), "b": jnp.array(3.0)}
  jac = fd.jacobian_by_differences(lambda p: jnp.stack([p["a"][0] * p["b"], p["a"][1] ** 2]), x)
  np.testing.assert_allclose(jac.value, [[3.0, 0.0, 1.0], [0.0, 4.0, 0.0]], atol=1e-8)
  assert jac.error.shape == (2, 3)


def test_batched_columns_match_one_example_at_a_time():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)), jnp.float32)
  per_row = fd.batched_jacobian_by_differences(jax.nn.softmax, x, 1, 4)
  assert per_row.value.shape == (3, 4, 4)
  for i in range(3):
    one = fd.jacobian_by_differences(jax.nn.softmax, x[i])
    np.testing.assert_allclose(per_row.value[i], one.value, atol=1e-9)


def test_batched_evaluation_is_the_same_difference_under_jit():
  f = lambda z: jnp.exp(z) / 3  # noqa: E731
  x, v = jnp.array([0.1, 0.7]), jnp.array([1.0, -1.0])
  plain = fd.central_difference(f, x, v)
  with fd.float64_enabled():
    batched = jax.jit(lambda x, v: fd.central_difference(f, x, v, batched=True))(x, v)
  np.testing.assert_allclose(batched.value, plain.value, rtol=1e-12)
  np.testing.assert_allclose(batched.error, plain.error, rtol=1e-6, atol=1e-16)
