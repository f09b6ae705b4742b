"""Softmax regression: the lecture's analytic batch gradient against autodiff, FD and NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from softmax_jax import model
from softmax_jax.verify import check_grad


def _problem(rng, hidden, n=24, f=5, c=4):
  params = model.init(jax.random.key(1), f, c, hidden=hidden, dtype=jnp.float64)
  params = jax.tree.map(lambda a: a + 0.3 * rng.normal(size=a.shape), params)
  x = rng.normal(size=(n, f))
  y = rng.integers(0, c, n)
  return params, x, y


@pytest.mark.x64
@pytest.mark.parametrize("hidden", [0, 6])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True])
def test_analytic_grad_equals_autodiff_and_fd(rng, hidden, reduction, weighted):
  params, x, y = _problem(rng, hidden)
  w = (rng.random(len(y)) > 0.3).astype(np.float64) if weighted else None
  kw = dict(l2=0.37, weights=w, reduction=reduction)
  result = check_grad(lambda p: model.loss(p, x, y, **kw),
                      lambda p: model.analytic_grad(p, x, y, **kw), params)
  assert result.passed, result
  exact = jax.grad(model.loss)(params, x, y, **kw)
  got = model.analytic_grad(params, x, y, **kw)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(exact), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.x64
def test_analytic_grad_is_the_lecture_formula(rng):
  params, x, y = _problem(rng, 0)
  lam = 0.25
  z = x @ np.asarray(params["W"]) + np.asarray(params["b"])
  p = np.exp(z - z.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  t = np.eye(4)[y]
  g = model.analytic_grad(params, x, y, l2=lam)
  np.testing.assert_allclose(g["W"], x.T @ (p - t) / len(y) + lam * np.asarray(params["W"]),
                             rtol=1e-12)
  np.testing.assert_allclose(g["b"], (p - t).mean(0), rtol=1e-12, atol=1e-15)


@pytest.mark.x64
def test_loss_second_order_derivatives(rng):
  params, x, y = _problem(rng, 3, n=8, f=3, c=3)
  check_grads(lambda p: model.loss(p, x, y, l2=0.1), (params,), order=2, modes=("rev",))


@pytest.mark.x64
def test_loss_value_matches_numpy(rng):
  params, x, y = _problem(rng, 0)
  z = x @ np.asarray(params["W"]) + np.asarray(params["b"])
  logp = z - z.max(1, keepdims=True)
  logp -= np.log(np.exp(logp).sum(1, keepdims=True))
  want = -logp[np.arange(len(y)), y].mean() + 0.05 * np.sum(np.asarray(params["W"]) ** 2)
  np.testing.assert_allclose(model.loss(params, x, y, l2=0.1), want, rtol=1e-13)


@pytest.mark.x64
@pytest.mark.parametrize("hidden", [0, 5])
def test_predictions(rng, hidden):
  params, x, _ = _problem(rng, hidden)
  proba = model.predict_proba(params, x)
  np.testing.assert_allclose(proba.sum(-1), 1.0, rtol=1e-14)
  np.testing.assert_array_equal(model.predict(params, x), np.argmax(proba, -1))
  assert model.predict(params, x).dtype == jnp.int32


@pytest.mark.x64
def test_bfloat16_compute_close_to_float32(rng):
  params, x, y = _problem(rng, 0)
  p32 = jax.tree.map(lambda a: a.astype(jnp.float32), params)
  x32 = jnp.asarray(x, jnp.float32)
  z16 = model.logits(p32, x32, compute_dtype=jnp.bfloat16)
  assert z16.dtype == jnp.float32
  np.testing.assert_allclose(z16, model.logits(p32, x32), rtol=0.05, atol=0.05)
  g = model.analytic_grad(p32, x32, y, compute_dtype=jnp.bfloat16)
  assert g["W"].dtype == jnp.float32


def test_init():
  p = model.init(jax.random.key(0), 4, 3)
  assert p["W"].shape == (4, 3) and not p["W"].any()
  net = model.init(jax.random.key(0), 4, 3, hidden=7)
  assert net["hidden"]["W"].shape == (4, 7) and net["W"].shape == (7, 3)
  assert float(jnp.abs(net["hidden"]["W"]).max()) > 0
  with pytest.raises(ValueError, match="n_classes must be an integer >= 2"):
    model.init(jax.random.key(0), 4, 1)
  with pytest.raises(ValueError, match="hidden must be"):
    model.init(jax.random.key(0), 4, 3, hidden=-1)


@pytest.mark.x64
def test_shape_errors(rng):
  params, x, y = _problem(rng, 0)
  with pytest.raises(ValueError, match=r"x has shape \(24, 3\) but the parameters expect"):
    model.logits(params, x[:, :3])
  with pytest.raises(ValueError, match="labels must be integers of shape"):
    model.loss(params, x, y[:5])
  with pytest.raises(ValueError, match="labels must be integers"):
    model.loss(params, x, y.astype(float))
  with pytest.raises(ValueError, match="weights has shape"):
    model.loss(params, x, y, weights=np.ones(3))
  with pytest.raises(ValueError, match="reduction must be"):
    model.loss(params, x, y, reduction="max")
