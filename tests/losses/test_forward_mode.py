"""Forward mode, higher orders and the exact tail of every XLA loss.

The derivatives of each loss are compared, transformation by transformation (``jax.jvp``,
``jax.jacfwd``, ``jax.linearize``, ``jax.hessian``, reverse-over-reverse), with the same
transformations of the formula written out in the test, in float64; all transformations
of one function are compiled as one program (``jax.jit``), so a case costs two compiles.
Central finite differences (``check_grads``, orders 1 and 2, both modes) run on the case
with every option at once.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import softmax_jax as sj

from _util import FULL_MATRIX, logits

WEIGHTS = np.linspace(0.5, 2.0, 7)  # float64 on the host; jnp arrays are made under x64
OPTIONS = {
    "plain": {},
    "weights": {"class_weights": WEIGHTS},
    "smoothing": {"label_smoothing": 0.2},
    "weights+smoothing": {"class_weights": WEIGHTS, "label_smoothing": 0.1},
    "ignore": {"ignore_index": 3},
    "z_loss": {"z_loss": 1e-2},
    "softcap": {"logit_softcap": 5.0},
    "everything": {"class_weights": WEIGHTS, "label_smoothing": 0.1, "ignore_index": 3,
                   "z_loss": 1e-2, "logit_softcap": 5.0},
}
FINITE_DIFFERENCES = set(OPTIONS) if FULL_MATRIX else {"everything"}


def _options(name):
  return {k: jnp.asarray(v) if isinstance(v, np.ndarray) else v
          for k, v in OPTIONS[name].items()}


def _int_case(rng, opts, masked=False, dtype=jnp.float64):
  z = logits(rng, (5, 7), dtype)
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


def _every_mode(f, v):
  """Value, forward-mode, linearized, reverse-over-reverse and Hessian of ``f``, jitted."""
  return jax.jit(lambda x: dict(
      value=f(x), jvp=jax.jvp(f, (x,), (v,))[1], jacfwd=jax.jacfwd(f)(x),
      linearize=jax.linearize(f, x)[1](v), hessian=jax.hessian(f)(x),
      rev_rev=jax.jacrev(jax.grad(f))(x)))


@pytest.mark.x64
@pytest.mark.parametrize("name", list(OPTIONS))
def test_integer_loss_every_mode_matches_autodiff_of_the_formula(rng, name):
  opts = _options(name)
  z, t, f = _int_case(rng, opts)
  naive = lambda z: _naive_int(z, t, **opts)  # noqa: E731
  v = jnp.asarray(rng.normal(size=z.shape))
  got, want = _every_mode(f, v)(z), _every_mode(naive, v)(z)
  chex.assert_trees_all_close(got["value"], want["value"], rtol=1e-12)
  chex.assert_trees_all_close({k: got[k] for k in ("jvp", "jacfwd", "linearize")},
                              {k: want[k] for k in ("jvp", "jacfwd", "linearize")},
                              rtol=1e-11, atol=1e-14)
  chex.assert_trees_all_close((got["hessian"], got["rev_rev"]),
                              (want["hessian"], want["hessian"]), rtol=1e-9, atol=1e-12)
  if name in FINITE_DIFFERENCES:
    check_grads(f, (z,), order=2, modes=("fwd", "rev"))


@pytest.mark.x64
def test_class_weights_forward_mode(rng):
  z, t, _ = _int_case(rng, {})
  w = jnp.asarray(WEIGHTS)
  f = lambda w: sj.cross_entropy_with_integer_labels(z, t, class_weights=w,  # noqa: E731
                                                        label_smoothing=0.1)
  naive = lambda w: _naive_int(z, t, class_weights=w, label_smoothing=0.1)  # noqa: E731
  np.testing.assert_allclose(jax.jacfwd(f)(w), jax.grad(naive)(w), rtol=1e-11)
  check_grads(f, (w,), order=2, modes=("fwd", "rev"))


@pytest.mark.x64
def test_class_weight_gradient_on_an_empty_row_is_zero(rng):
  z = logits(rng, (3, 4), jnp.float64).at[0].set(-jnp.inf)
  t = jnp.array([2, 1, 3])
  w = jnp.linspace(0.5, 2.0, 4)
  for eps in (0.0, 0.1):
    f = lambda w, eps=eps: sj.cross_entropy_with_integer_labels(  # noqa: E731
        z, t, class_weights=w, label_smoothing=eps)
    naive = lambda w, eps=eps: _naive_int(z[1:], t[1:], class_weights=w,  # noqa: E731
                                          label_smoothing=eps)
    want = jax.grad(naive)(w)
    chex.assert_trees_all_close((jax.grad(f)(w), jax.jacfwd(f)(w)), (want, want), rtol=1e-12)


def test_forward_mode_on_masked_rows_has_no_nan(rng):
  z, t, f = _int_case(rng, {"label_smoothing": 0.1}, masked=True, dtype=jnp.float32)
  where = jnp.ones(z.shape, bool).at[0, 5].set(False)
  g = lambda z: sj.cross_entropy_with_integer_labels(z, t, where=where)  # noqa: E731
  for fn in (f, g):
    jac, grad, hess = jax.jit(lambda z, fn=fn: (jax.jacfwd(fn)(z), jax.grad(fn)(z),
                                                jax.hessian(fn)(z)))(z)
    for d in (jac, grad, hess):
      assert not np.isnan(np.asarray(d)).any()
    assert np.all(np.asarray(jac)[4] == 0)  # the all −inf row
    np.testing.assert_allclose(jac, grad, rtol=1e-6, atol=1e-7)


@pytest.mark.x64
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
  for i, (f, x, naive) in enumerate(cases):
    v = jnp.asarray(rng.normal(size=x.shape))
    got, want = _every_mode(f, v)(x), _every_mode(naive, v)(x)
    chex.assert_trees_all_close(got, want, rtol=1e-9, atol=1e-12)
    if i in (0, 2) or FULL_MATRIX:  # the logits' derivatives of both losses
      check_grads(f, (x,), order=2, modes=("fwd", "rev"))


@pytest.mark.parametrize("dtype,z", [
    (jnp.float32, [20.0, 0.0, -1.0]),
    pytest.param(jnp.float64, [40.0, 0.0, -1.0], marks=pytest.mark.x64),
])
def test_exact_tail_of_every_xla_loss(dtype, z):
  """``y_0 − 1`` of a dominant label from the tail of the row sum (where ``1 − y_0`` rounds
  to 0), so the gradient row sums to zero to a few ulps of that entry."""
  # y_0 − 1 = −(e^{−z0} + e^{−z0−1}) / (1 + e^{−z0} + e^{−z0−1}), in float64 on the host
  tail = np.exp(-z[0]) + np.exp(-z[0] - 1)
  entry = -tail / (1 + tail)
  z = jnp.asarray([z], dtype)
  label = jnp.array([0])
  one_hot = jax.nn.one_hot(label, 3, dtype=dtype)
  grads = {
      "int": jax.grad(lambda z: sj.cross_entropy_with_integer_labels(z, label))(z),
      "int_fwd": jax.jacfwd(lambda z: sj.cross_entropy_with_integer_labels(z, label))(z),
      "soft": jax.grad(lambda z: sj.cross_entropy(z, one_hot))(z),
      "grad_fn": sj.cross_entropy_grad(z, one_hot),
  }
  for name, g in grads.items():
    assert g.dtype == dtype, name
    g = np.asarray(g, np.float64)[0]
    np.testing.assert_allclose(g[0], entry, rtol=1e-6, err_msg=name)
    assert abs(g.sum()) <= 4 * np.finfo(dtype).eps * abs(entry), name


def test_float32_forward_mode_agrees_with_float64():
  """The default configuration (float32, x64 off): the loss under jit, jvp and grad agrees
  with the float64 loss on the same logits."""
  z64 = np.random.default_rng(1).normal(size=(8, 10))
  t = np.arange(8) % 10
  z = jnp.asarray(z64, jnp.float32)
  assert z.dtype == jnp.float32
  f = jax.jit(lambda z: sj.cross_entropy_with_integer_labels(z, jnp.asarray(t)))
  val, tan = jax.jvp(f, (z,), (jnp.ones_like(z),))
  g = jax.grad(f)(z)
  with jax.enable_x64(True):
    ref = lambda z: sj.cross_entropy_with_integer_labels(z, jnp.asarray(t))  # noqa: E731
    want, want_g = ref(jnp.asarray(z64)), jax.grad(ref)(jnp.asarray(z64))
  np.testing.assert_allclose(val, want, rtol=1e-6)
  np.testing.assert_allclose(tan, 0.0, atol=1e-6)  # softmax is shift invariant
  np.testing.assert_allclose(g, want_g, rtol=1e-5, atol=1e-7)
