"""Forward mode, higher orders and the exact tail of every XLA loss (float64 references)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import softmax_jax as sj

from _util import logits

pytestmark = pytest.mark.x64

OPTIONS = {
    "plain": {},
    "weights": {"class_weights": jnp.linspace(0.5, 2.0, 7)},
    "smoothing": {"label_smoothing": 0.2},
    "weights+smoothing": {"class_weights": jnp.linspace(0.5, 2.0, 7), "label_smoothing": 0.1},
    "ignore": {"ignore_index": 3},
    "z_loss": {"z_loss": 1e-2},
    "softcap": {"logit_softcap": 5.0},
}


def _int_case(rng, opts, masked=False):
  z = logits(rng, (5, 7), jnp.float64)
  if masked:
    z = z.at[1, 2].set(-jnp.inf).at[4].set(-jnp.inf)
  t = jnp.array([0, 3, 6, 3, 2])
  return z, t, (lambda z: sj.cross_entropy_with_integer_labels(z, t, **opts))


def _naive_int(z, t, class_weights=None, label_smoothing=0.0, ignore_index=None, z_loss=0.0,
               logit_softcap=None):
  """PyTorch's F.cross_entropy written from its definition, differentiated by JAX."""
  if logit_softcap is not None:
    z = logit_softcap * jnp.tanh(z / logit_softcap)
  c = z.shape[-1]
  w = jnp.ones(c) if class_weights is None else class_weights
  log_y = jax.nn.log_softmax(z)
  keep = jnp.ones(t.shape, bool) if ignore_index is None else t != ignore_index
  ts = jnp.where(keep, t, 0)
  w_t = w[ts]
  loss = (1 - label_smoothing) * w_t * -jnp.take_along_axis(log_y, ts[:, None], -1)[:, 0]
  loss = loss + label_smoothing / c * jnp.sum(w * -log_y, -1)
  loss = loss + z_loss * jnp.square(jax.nn.logsumexp(z, -1))
  return jnp.sum(jnp.where(keep, loss, 0)) / jnp.sum(jnp.where(keep, w_t, 0))


@pytest.mark.parametrize("name", list(OPTIONS))
def test_integer_loss_every_mode_matches_autodiff_of_the_formula(rng, name):
  z, t, f = _int_case(rng, OPTIONS[name])
  naive = lambda z: _naive_int(z, t, **OPTIONS[name])  # noqa: E731
  v = jnp.asarray(rng.normal(size=z.shape))
  np.testing.assert_allclose(f(z), naive(z), rtol=1e-12)
  np.testing.assert_allclose(jax.jvp(f, (z,), (v,))[1], jax.jvp(naive, (z,), (v,))[1],
                             rtol=1e-11, atol=1e-14)
  np.testing.assert_allclose(jax.jacfwd(f)(z), jax.grad(naive)(z), rtol=1e-11, atol=1e-14)
  np.testing.assert_allclose(jax.linearize(f, z)[1](v), jax.jvp(naive, (z,), (v,))[1],
                             rtol=1e-11, atol=1e-14)
  np.testing.assert_allclose(jax.hessian(f)(z), jax.hessian(naive)(z), rtol=1e-9, atol=1e-12)
  np.testing.assert_allclose(jax.jacrev(jax.grad(f))(z), jax.hessian(naive)(z), rtol=1e-9,
                             atol=1e-12)
  check_grads(f, (z,), order=2, modes=("fwd", "rev"))


def test_class_weights_forward_mode(rng):
  z, t, _ = _int_case(rng, {})
  w = jnp.linspace(0.5, 2.0, 7)
  f = lambda w: sj.cross_entropy_with_integer_labels(z, t, class_weights=w,  # noqa: E731
                                                        label_smoothing=0.1)
  naive = lambda w: _naive_int(z, t, class_weights=w, label_smoothing=0.1)  # noqa: E731
  np.testing.assert_allclose(jax.jacfwd(f)(w), jax.grad(naive)(w), rtol=1e-11)
  check_grads(f, (w,), order=2, modes=("fwd", "rev"))


def test_class_weight_gradient_on_an_empty_row_is_zero(rng):
  z = logits(rng, (3, 4), jnp.float64).at[0].set(-jnp.inf)
  t = jnp.array([2, 1, 3])
  w = jnp.linspace(0.5, 2.0, 4)
  for eps in (0.0, 0.1):
    f = lambda w, eps=eps: sj.cross_entropy_with_integer_labels(  # noqa: E731
        z, t, class_weights=w, label_smoothing=eps)
    naive = lambda w, eps=eps: _naive_int(z[1:], t[1:], class_weights=w,  # noqa: E731
                                          label_smoothing=eps)
    np.testing.assert_allclose(jax.grad(f)(w), jax.grad(naive)(w), rtol=1e-12)
    np.testing.assert_allclose(jax.jacfwd(f)(w), jax.grad(naive)(w), rtol=1e-12)


def test_forward_mode_on_masked_rows_has_no_nan(rng):
  z, t, f = _int_case(rng, {"label_smoothing": 0.1}, masked=True)
  where = jnp.ones(z.shape, bool).at[0, 5].set(False)
  g = lambda z: sj.cross_entropy_with_integer_labels(z, t, where=where)  # noqa: E731
  for fn in (f, g):
    for d in (jax.jacfwd(fn)(z), jax.grad(fn)(z), jax.hessian(fn)(z)):
      assert not np.isnan(np.asarray(d)).any()
    assert np.all(np.asarray(jax.jacfwd(fn)(z))[4] == 0)  # the all −inf row


def test_probability_and_binary_losses_every_mode(rng):
  z = logits(rng, (4, 6), jnp.float64)
  t = jax.nn.softmax(jnp.asarray(rng.normal(size=(4, 6))))
  zb = jnp.asarray(rng.normal(size=(9,)) * 3)
  yb = jnp.asarray(rng.random(9))
  cases = [
      (lambda z: sj.cross_entropy(z, t, label_smoothing=0.1), z,
       lambda z: -jnp.mean(jnp.sum((0.9 * t + 0.1 / 6) * jax.nn.log_softmax(z), -1))),
      (lambda t: sj.cross_entropy(z, t), t,
       lambda t: -jnp.mean(jnp.sum(t * jax.nn.log_softmax(z), -1))),
      (lambda z: sj.binary_cross_entropy(z, yb), zb,
       lambda z: -jnp.mean(yb * jax.nn.log_sigmoid(z) + (1 - yb) * jax.nn.log_sigmoid(-z))),
      (lambda y: sj.binary_cross_entropy(zb, y), yb,
       lambda y: -jnp.mean(y * jax.nn.log_sigmoid(zb) + (1 - y) * jax.nn.log_sigmoid(-zb))),
  ]
  for f, x, naive in cases:
    np.testing.assert_allclose(jax.jacfwd(f)(x), jax.grad(naive)(x), rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(jax.hessian(f)(x), jax.hessian(naive)(x), rtol=1e-9, atol=1e-12)
    check_grads(f, (x,), order=2, modes=("fwd", "rev"))


def test_hessian_of_the_loss_is_the_softmax_jacobian(rng):
  z = logits(rng, (6,), jnp.float64)
  for f in (lambda z: sj.cross_entropy_with_integer_labels(z, jnp.array(2)),
            lambda z: sj.cross_entropy(z, jax.nn.one_hot(2, 6, dtype=z.dtype))):
    np.testing.assert_allclose(jax.hessian(f)(z), sj.softmax_jacobian(z), rtol=1e-12,
                               atol=1e-15)
    np.testing.assert_allclose(jax.jacfwd(jax.jacfwd(f))(z), sj.softmax_jacobian(z),
                               rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype,z", [
    (jnp.float32, [20.0, 0.0, -1.0]),
    (jnp.float64, [40.0, 0.0, -1.0]),
])
def test_exact_tail_of_every_xla_loss(dtype, z):
  # y_0 − 1 = −(e^{−z0} + e^{−z0−1}) / (1 + e^{−z0} + e^{−z0−1}), in float64 on the host
  tail = np.exp(-z[0]) + np.exp(-z[0] - 1)
  entry = -tail / (1 + tail)
  z = jnp.asarray([z], dtype)
  label = jnp.array([0])
  grads = {
      "int": jax.grad(lambda z: sj.cross_entropy_with_integer_labels(z, label))(z),
      "int_fwd": jax.jacfwd(lambda z: sj.cross_entropy_with_integer_labels(z, label))(z),
      "soft": jax.grad(lambda z: sj.cross_entropy(z, jax.nn.one_hot(label, 3, dtype=dtype)))(z),
      "grad_fn": sj.cross_entropy_grad(z, jax.nn.one_hot(label, 3, dtype=dtype)),
  }
  for name, g in grads.items():
    g = np.asarray(g, np.float64)[0]
    np.testing.assert_allclose(g[0], entry, rtol=1e-6, err_msg=name)
    assert abs(g.sum()) <= 4 * np.finfo(dtype).eps * abs(entry), name


def test_x64_off_default_configuration_forward_mode():
  """The default user configuration (float32, x64 off) in a subprocess-free way: the
  float32 loss under jit, jvp and grad agrees with float64."""
  z64 = jnp.asarray(np.random.default_rng(1).normal(size=(8, 10)))
  t = jnp.arange(8) % 10
  with jax.enable_x64(False):
    z = jnp.asarray(np.asarray(z64, np.float32))
    assert z.dtype == jnp.float32
    f = jax.jit(lambda z: sj.cross_entropy_with_integer_labels(z, jnp.asarray(np.arange(8) % 10)))
    val, tan = jax.jvp(f, (z,), (jnp.ones_like(z),))
    g = jax.grad(f)(z)
  ref = lambda z: sj.cross_entropy_with_integer_labels(z, t)  # noqa: E731
  np.testing.assert_allclose(val, ref(z64), rtol=1e-6)
  np.testing.assert_allclose(tan, 0.0, atol=1e-6)  # softmax is shift invariant
  np.testing.assert_allclose(g, jax.grad(ref)(z64), rtol=1e-5, atol=1e-7)
