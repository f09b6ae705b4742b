"""softmax_jax.verify._tolerances: the bound per dtype, and Σ|terms| of a linear map."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from softmax_jax.verify._tolerances import bound, fd_tolerance, term_magnitude, tolerance, underflow


def test_rtol_is_a_few_roundings_plus_the_growth_of_a_sum():
  b = bound("float32", 10000)
  assert b.rtol == pytest.approx(16 * 2.0**-23 + 2 * 2.0**-23 * 100)
  assert b.n == 10000 and "16ε + 2ε√n" in b.rule and "n = 10000" in b.rule
  # half precision: a few roundings of its own, sums in float32
  h = bound("bfloat16", 10000)
  assert h.rtol == pytest.approx(4 * 2.0**-7 + 2 * 2.0**-23 * 100)
  assert "ε₃₂" in h.rule
  assert bound("float64", 0).n == 1  # no sum: one term


def test_finite_differences_floor_and_explicit_values():
  assert bound("float64", 10, fd=True).rtol == fd_tolerance(jnp.float64)
  assert fd_tolerance(jnp.float64) == pytest.approx(1e3 * 2.0 ** (-52 * 2 / 3))
  assert bound("bfloat16", 10, fd=True).rtol == bound("bfloat16", 10).rtol  # already looser
  given = bound("float32", 10, rtol=0.5, atol=0.25)
  assert (given.rtol, given.atol) == (0.5, 0.25) and given.rule == "rtol given"


def test_atol_is_the_floor_below_which_the_dtype_resolves_nothing():
  assert underflow("float16") == pytest.approx(4 * 2.0**-24)  # float16's smallest subnormal
  assert underflow("bfloat16") == pytest.approx(4 * float(jnp.finfo(jnp.float32).tiny))
  assert bound("float32", 10).atol == underflow("float32")


def test_elementwise_tolerance():
  rtol, atol = tolerance(jnp.bfloat16)
  assert rtol == atol == 2 * 2.0**-7
  assert tolerance("float32").rtol == 16 * 2.0**-23
  with pytest.raises(ValueError, match="no tolerance for dtype int32"):
    tolerance(jnp.int32)
  assert math.isclose(tolerance("float64").atol, 16 * 2.0**-52)


@pytest.mark.internals
def test_term_magnitude_of_the_softmax_vjp_is_the_sum_of_its_terms(rng):
  # the Σ|terms| interpreter on JAX's own pullback of softmax: depends on that program
  x = jnp.asarray(rng.normal(size=(3, 5)) * 2, jnp.float32)
  u = jnp.asarray(rng.normal(size=x.shape), x.dtype)
  pullback = jax.vjp(jax.nn.softmax, x)[1]
  magnitude, reason = term_magnitude(lambda c: pullback(c)[0], u)
  assert reason is None
  y, au = np.asarray(jax.nn.softmax(x), np.float64), np.abs(np.asarray(u, np.float64))
  np.testing.assert_allclose(magnitude, y * (au + np.sum(y * au, -1, keepdims=True)), rtol=1e-5)


def test_term_magnitude_of_a_difference_is_the_sum_of_its_sizes():
  a = jnp.array([1.0, -2.0])
  result = term_magnitude(lambda t: a * t - 3.0 * t, jnp.array([0.5, 1.0]))
  np.testing.assert_allclose(result.magnitude, [0.5 + 1.5, 2.0 + 3.0])
  loop = term_magnitude(lambda t: jax.lax.fori_loop(0, 2, lambda i, s: s * 2.0, t), a)
  assert loop.magnitude is None and loop.reason.startswith("primitive")
