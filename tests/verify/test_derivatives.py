"""softmax_jax.verify's check_jacobian / check_grad / check_jvp / check_vjp pass right
derivatives and fail wrong ones, from the default x64-off configuration (their finite
differences enable float64 themselves)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import softmax_jax as sj
from softmax_jax.verify import _references, check_grad, check_jacobian, check_jvp, check_vjp


@pytest.fixture
def x(rng):
  return jnp.asarray(rng.normal(size=(3, 5)) * 2, jnp.float32)


def test_right_jacobian_passes_every_method(x):
  result = check_jacobian(sj.softmax, sj.softmax_jacobian, x, batch_dims=1)
  assert not jax.config.jax_enable_x64  # the finite differences' float64 did not leak
  assert result.passed, str(result)
  assert [e.method for e in result.errors] == ["jacfwd", "jacrev", "fd"]
  assert result.shape == (3, 5, 5)
  assert "PASSED" in str(result)
  # one example, no batch axis; and a jitted jac_fn
  assert check_jacobian(sj.softmax, jax.jit(sj.softmax_jacobian), x[0]).passed


def test_transposed_non_symmetric_jacobian_fails(x):
  # the Jacobian of log_softmax, I − 1 yᵀ, is not symmetric: its transpose is wrong
  def analytic(z):
    y = sj.softmax(z)
    return jnp.eye(z.shape[-1]) - y[..., None, :]
  assert check_jacobian(sj.log_softmax, analytic, x, batch_dims=1).passed
  wrong = check_jacobian(sj.log_softmax, lambda z: jnp.swapaxes(analytic(z), -1, -2), x,
                         batch_dims=1)
  assert not wrong.passed
  assert all(not e.passed for e in wrong.errors)
  assert wrong["jacfwd"].max_abs_err > 0.1
  assert "FAILED" in str(wrong) and "FAIL" in str(wrong["fd"])


def test_jacobian_off_by_a_scale_fails_and_names_the_worst_entry(x):
  result = check_jacobian(sj.softmax, lambda z: sj.softmax_jacobian(z) * 1.001, x, batch_dims=1)
  assert not result.passed
  worst = result["jacrev"]
  b, i, j = worst.worst_index
  full = np.asarray(sj.softmax_jacobian(x), np.float64)
  # the entry furthest beyond its bound: its error is 0.1 % of it, and is reported beside it
  assert worst.error == pytest.approx(1e-3 * abs(full[b, i, j]), rel=1e-2)
  assert worst.error > worst.allowed
  assert worst.allowed == pytest.approx(worst.rtol * worst.scale)
  assert worst.scale >= np.max(np.abs(full[b]))  # at least the largest entry of that example
  assert worst.max_rel_err == pytest.approx(1e-3, rel=1e-2)


def test_pytree_inputs():
  params = {"w": jnp.ones((2, 3)) * 0.3, "b": jnp.array([0.1, -0.2])}

  def f(p):
    return sj.softmax(p["w"] @ jnp.arange(3.0) + p["b"])

  result = check_jacobian(f, jax.jacrev(f), params)
  assert result.passed, str(result)

  def wrong(p):
    jac = jax.jacrev(f)(p)
    return {"w": jac["w"], "b": -jac["b"]}

  bad = check_jacobian(f, wrong, params, methods=("jacfwd",))
  assert not bad.passed and "['b']" in str(bad["jacfwd"].worst_index)


def test_bad_arguments_raise_value_error_naming_shapes(x):
  with pytest.raises(ValueError, match=r"jac_fn\(x\) has shape \(3, 5\) but jax.jacfwd\(fn\)\(x\) "
                     r"has shape \(3, 5, 3, 5\)"):
    check_jacobian(sj.softmax, sj.softmax, x)
  with pytest.raises(ValueError, match=r"x has dtype int32 and shape \(3,\)"):
    check_jacobian(sj.softmax, sj.softmax_jacobian, jnp.arange(3, dtype=jnp.int32))
  with pytest.raises(ValueError, match="unknown methods"):
    check_jacobian(sj.softmax, sj.softmax_jacobian, x, methods=("magic",))
  with pytest.raises(ValueError, match="must be a scalar"):
    check_grad(sj.softmax, sj.softmax, x)


def test_check_grad(x):
  labels = jnp.array([0, 4, 2])
  t = jax.nn.one_hot(labels, 5, dtype=x.dtype)
  loss = lambda z: sj.cross_entropy_with_integer_labels(z, labels, reduction="sum")  # noqa: E731
  assert check_grad(loss, lambda z: sj.cross_entropy_grad(z, t), x).passed
  missing_t = check_grad(loss, lambda z: sj.softmax(z), x)  # forgot − t
  assert not missing_t.passed and missing_t["grad"].max_abs_err > 0.5


def test_check_jvp_and_vjp(x, rng):
  v = jnp.asarray(rng.normal(size=x.shape), x.dtype)
  assert check_jvp(sj.softmax, sj.softmax_jvp, x, v).passed
  assert check_vjp(sj.softmax, sj.softmax_vjp, x, v).passed
  sloppy = lambda z, v: sj.softmax(z) * v  # drops −⟨y, v⟩  # noqa: E731
  assert not check_jvp(sj.softmax, sloppy, x, v).passed
  assert not check_vjp(sj.softmax, sloppy, x, v).passed
  with pytest.raises(ValueError, match=r"tangent has shape \(5,\) but x has shape \(3, 5\)"):
    check_jvp(sj.softmax, sj.softmax_jvp, x, v[0])


def test_tolerance_follows_dtype(x):
  r32 = check_jacobian(sj.softmax, sj.softmax_jacobian, x, batch_dims=1, methods=("jacrev",))
  xb = x.astype(jnp.bfloat16)
  rb = check_jacobian(sj.softmax, sj.softmax_jacobian, xb, batch_dims=1, methods=("jacrev",))
  assert rb.passed and rb.dtype == "bfloat16"
  assert rb["jacrev"].rtol > 1000 * r32["jacrev"].rtol


# ---------------------------------------------------------------------------
# The bound scales with the derivative: a 1 % error is caught at any C in float32,
# correct derivatives pass in float32, bfloat16 and float64.
# ---------------------------------------------------------------------------

SIZES = [10, 1000, 50000, 200000]


def _point(c, dtype, seed=0, shift=0.0):
  """Logits and a cotangent of one example; ``shift`` moves ⟨y, u⟩ away from 0 (where it
  is ~1/√C), so that dropping the −y⟨y, u⟩ term is an error of a few % of the VJP."""
  rng = np.random.default_rng(seed + c)
  x = jnp.asarray(rng.normal(size=c)).astype(dtype)
  u = jnp.asarray(rng.normal(size=c) + shift).astype(dtype)
  return x, u


def _relative_size(bug, x, u):
  """How big a planted error is: max|bug − correct| / max|correct| in float64 NumPy (the
  softmax Jacobian is symmetric: its VJP is its JVP)."""
  exact = _references.softmax_jvp(x, u)
  return np.max(np.abs(np.asarray(bug, np.float64) - exact)) / np.max(np.abs(exact))


def _missing_term(z, u):
  return sj.softmax(z) * u  # y ⊙ u without −y⟨y, u⟩


def _scaled(z, u):
  return sj.softmax_vjp(z, u) * 1.01


def _one_entry(z, u):
  """1 % of the VJP's largest entry added to one entry in the middle."""
  g = sj.softmax_vjp(z, u)
  return g.at[g.shape[-1] // 2].add(0.01 * jnp.max(jnp.abs(g)))


# The missing term at every size (a fixed absolute tolerance passed it at large C); the other
# bugs at the smallest and the largest.
BUGS = ([(c, _missing_term) for c in SIZES]
        + [(c, bug) for bug in (_scaled, _one_entry) for c in (SIZES[0], SIZES[-1])])


@pytest.mark.parametrize("c, bug", BUGS, ids=lambda v: getattr(v, "__name__", str(v)))
def test_check_vjp_catches_a_one_percent_error_in_float32(c, bug):
  x, u = _point(c, jnp.float32, shift=0.1)
  size = _relative_size(bug(x, u), x, u)
  assert size >= 0.005, size  # the planted error is about 1 % of the derivative (or more)
  result = check_vjp(sj.softmax, bug, x, u, methods=("vjp",))
  assert not result.passed, str(result)
  e = result["vjp"]
  assert e.error > e.allowed and "FAIL" in str(e)
  assert e.allowed < 1e-3 * np.max(np.abs(np.asarray(sj.softmax_vjp(x, u))))  # far below 1 %


@pytest.mark.parametrize("c", SIZES)
def test_check_vjp_passes_correct_vjps_in_float32(c):
  x, u = _point(c, jnp.float32)
  nn_vjp = lambda z, v: jax.vjp(jax.nn.softmax, z)[1](v)[0]  # noqa: E731
  for fn, vjp in ((sj.softmax, sj.softmax_vjp), (sj.softmax, nn_vjp)):
    result = check_vjp(fn, vjp, x, u, methods=("vjp",))
    assert result.passed, str(result)
    assert result["vjp"].error < 0.1 * result["vjp"].allowed  # not by luck


@pytest.mark.parametrize("c", [SIZES[0], SIZES[-1]])  # the same bound as the VJP's
def test_check_jvp_passes_the_jvp_and_catches_one_percent_in_float32(c):
  x, v = _point(c, jnp.float32)
  assert check_jvp(sj.softmax, sj.softmax_jvp, x, v, methods=("jvp",)).passed
  assert not check_jvp(sj.softmax, _scaled, x, v, methods=("jvp",)).passed


@pytest.mark.parametrize("dtype", [jnp.bfloat16, pytest.param(jnp.float64, marks=pytest.mark.x64)])
def test_check_vjp_passes_correct_and_catches_wrong_in_other_dtypes(dtype):
  x, u = _point(50000, dtype, shift=0.05)
  nn_vjp = lambda z, v: jax.vjp(jax.nn.softmax, z)[1](v)[0]  # noqa: E731
  for vjp in (sj.softmax_vjp, nn_vjp):
    result = check_vjp(sj.softmax, vjp, x, u, methods=("vjp",))
    assert result.passed, str(result)
    assert result.dtype == jnp.dtype(dtype).name
  # bfloat16 resolves a few % (its documented bound), float64 far below 1 %
  factor = 1.1 if dtype == jnp.bfloat16 else 1.01
  wrong = check_vjp(sj.softmax, lambda z, v: sj.softmax_vjp(z, v) * factor, x, u,
                    methods=("vjp",))
  assert not wrong.passed, str(wrong)


def test_saturated_softmax_has_no_false_alarm_and_says_why():
  # logits of scale 30: the VJP is far smaller than its terms y ⊙ u and y⟨y, u⟩, so the
  # rounding of those terms, not max|ref|, sets the bound
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(4, 1000)) * 30, jnp.float32)
  u = jnp.asarray(rng.normal(size=(4, 1000)), jnp.float32)
  nn_vjp = lambda z, v: jax.vjp(jax.nn.softmax, z)[1](v)[0]  # noqa: E731
  result = check_vjp(sj.softmax, nn_vjp, x, u, methods=("vjp",))
  assert result.passed, str(result)
  assert "Σ|terms|" in result["vjp"].scale_rule
  assert result["vjp"].scale > np.max(np.abs(np.asarray(sj.softmax_vjp(x, u))))


def _loss_point(c, dtype=jnp.float32):
  rng = np.random.default_rng(c)
  x = jnp.asarray(rng.normal(size=(2, c))).astype(dtype)
  t = jax.nn.softmax(jnp.asarray(rng.normal(size=(2, c)), jnp.float32)).astype(dtype)
  return x, t, jnp.asarray(rng.integers(0, c, 2))


@pytest.mark.parametrize("c", [SIZES[0], SIZES[-1]])  # the others: the VJP tests above
def test_check_grad_of_a_loss_passes_it_and_catches_one_percent(c):
  x, t, _ = _loss_point(c)
  loss = lambda z: sj.cross_entropy(z, t, reduction="sum")  # noqa: E731
  result = check_grad(loss, lambda z: sj.cross_entropy_grad(z, t), x, methods=("grad",))
  assert result.passed, str(result)
  wrong = check_grad(loss, lambda z: sj.cross_entropy_grad(z, t) * 1.01, x, methods=("grad",))
  assert not wrong.passed, str(wrong)


def test_check_grad_passes_a_loss_gradient_in_bfloat16():  # float64: tests/train
  x, t, _ = _loss_point(1000, jnp.bfloat16)
  result = check_grad(lambda z: sj.cross_entropy(z, t, reduction="sum"),
                      lambda z: sj.cross_entropy_grad(z, t), x, methods=("grad",))
  assert result.passed and result.dtype == "bfloat16", str(result)


def test_check_grad_passes_optax_gradient_of_the_same_loss():
  x, _, labels = _loss_point(1000)

  def loss(z):
    return sj.cross_entropy_with_integer_labels(z, labels, reduction="mean")

  def optax_loss(z):
    return optax.softmax_cross_entropy_with_integer_labels(z, labels).mean()

  result = check_grad(loss, jax.grad(optax_loss), x, methods=("grad",))
  assert result.passed, str(result)


def test_result_says_which_error_is_compared_with_which_bound(x, rng):
  v = jnp.asarray(rng.normal(size=x.shape), x.dtype)
  e = check_vjp(sj.softmax, sj.softmax_vjp, x, v)["vjp"]
  text = str(e)
  assert f"error {e.error:9.2e} vs bound {e.allowed:9.2e}" in text
  assert "rtol = 16ε + 2ε√n" in text and "n = 15" in text and "Σ|terms|" in text
  assert e.allowed == pytest.approx(e.rtol * e.scale)
  assert e.rtol == pytest.approx(16 * 2.0**-23 + 2 * 2.0**-23 * np.sqrt(15))


def test_a_program_the_magnitude_cannot_follow_falls_back_to_max_ref(x):
  def looped(z):  # a loop: Σ|terms| is not propagated through it
    return jax.lax.fori_loop(0, 2, lambda i, a: sj.softmax(a), z)

  jvp = lambda z, v: jax.jvp(looped, (z,), (v,))[1]  # noqa: E731
  result = check_jvp(looped, jvp, x, x, methods=("jvp",))
  assert result.passed
  assert result["jvp"].scale_rule.startswith(
      "max|ref| per leaf (Σ|terms| not propagated: primitive")
  assert not check_jvp(looped, lambda z, v: jvp(z, v) * 1.01, x, x, methods=("jvp",)).passed
