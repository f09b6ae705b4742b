"""The default user configuration: float32 (and half precision) with x64 off, int32 labels.

Every public function, through chex's variants (jitted, not jitted, arguments placed on
the device or fetched to the host; a sample under its pmap variant) and ``jax.vmap``
(chex has no vmap variant).
Each checks the output's dtype and shape, that no warning is raised (no "float64 is not
available" from a stray float64 request), and the value against a float64 NumPy reference
computed from the same rounded inputs.  Derivatives taken by ``jax.grad`` / ``jax.jvp`` /
``jax.vjp`` are compared with the lecture's formulas: ∂ξ/∂z = y − t (over N for a mean)
and ∂y_i/∂z_j = y_i(δ_ij − y_j).  The tests run with x64 off: nothing here is marked x64.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

import softmax_jax as sj
from softmax_jax import model, sharded

import reference as ref

N, C, H = 4, 6, 3  # rows, classes, hidden features
_HALF = (jnp.bfloat16, jnp.float16)
# Bounds for a result of each dtype, from O(1) values (unit roundoff 2⁻²⁴, 2⁻¹¹, 2⁻⁸).
_TOL = {jnp.dtype(jnp.float32): dict(rtol=2e-5, atol=2e-6),
        jnp.dtype(jnp.float16): dict(rtol=4e-3, atol=2e-3),
        jnp.dtype(jnp.bfloat16): dict(rtol=2e-2, atol=1.6e-2)}
_MESH = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("model",))


def f64(tree):
  """The rounded inputs, exactly, in float64 (labels stay integers)."""
  def one(a):
    a = np.asarray(a)
    return a if np.issubdtype(a.dtype, np.integer) else a.astype(np.float64)
  return jax.tree.map(one, tree)


def inputs(dtype, seed=0):
  """Logits [N, C] at scale 3, a tangent, int32 labels, one-hot targets, a linear model."""
  rng = np.random.default_rng(seed)
  cast = lambda a: jnp.asarray(a, dtype)  # noqa: E731
  labels = jnp.asarray(rng.integers(0, C, N), jnp.int32)
  return dict(
      z=cast(3 * rng.normal(size=(N, C))), v=cast(rng.normal(size=(N, C))),
      labels=labels, t=jax.nn.one_hot(labels, C, dtype=dtype),
      z1=cast(3 * rng.normal(size=N)), b=cast(rng.integers(0, 2, N)),
      h=cast(rng.normal(size=(N, H))), w=cast(rng.normal(size=(H, C))),
      params={"W": cast(rng.normal(size=(H, C))), "b": cast(rng.normal(size=C))})


# --- the lecture's formulas, in float64 -------------------------------------------------

def sigmoid(z):
  return 1 / (1 + np.exp(-z))


def jacobian(z):
  """∂y_i/∂z_j = y_i(δ_ij − y_j)."""
  y = ref.softmax(z)
  return y[..., :, None] * (np.eye(y.shape[-1]) - y[..., None, :])


def jvp(z, v):
  return np.einsum("...ij,...j->...i", jacobian(z), v)


def nll(z, labels):
  """Mean of −log y_t."""
  return -np.mean(np.take_along_axis(ref.log_softmax(z), labels[..., None], -1))


def y_minus_t(z, labels):
  """∂ξ/∂z = y − t for each row."""
  return ref.softmax(z) - np.eye(z.shape[-1])[labels]


def linear(params, x):
  return x @ params["W"] + params["b"]


class Case(NamedTuple):
  fn: Callable  # the function under test, of arrays (and pytrees of arrays) only
  args: Callable[[dict], tuple]  # picks its arguments from inputs(dtype)
  want: Callable  # the float64 reference, of the same arguments in float64
  dtype: str = "same"  # of the result: "same" as the inputs, "float32" for half, "int32"
  rounded: bool = False  # True: computes in the inputs' dtype, so is bounded by theirs


# Values of every public function.
VALUES = {
    "softmax": Case(sj.softmax, lambda d: (d["z"],), ref.softmax),
    "log_softmax": Case(sj.log_softmax, lambda d: (d["z"],), ref.log_softmax),
    "logsumexp": Case(sj.logsumexp, lambda d: (d["z"],), ref.logsumexp),
    "sigmoid": Case(sj.sigmoid, lambda d: (d["z"],), sigmoid),
    "log_sigmoid": Case(sj.log_sigmoid, lambda d: (d["z"],), lambda z: -np.logaddexp(0, -z)),
    "sigmoid_derivative": Case(sj.sigmoid_derivative, lambda d: (d["z"],),
                               lambda z: sigmoid(z) * (1 - sigmoid(z))),
    "softmax_jacobian": Case(sj.softmax_jacobian, lambda d: (d["z"],), jacobian),
    "softmax_jvp": Case(sj.softmax_jvp, lambda d: (d["z"], d["v"]), jvp),
    "softmax_vjp": Case(sj.softmax_vjp, lambda d: (d["z"], d["v"]),
                        lambda z, u: np.einsum("...ij,...i->...j", jacobian(z), u)),
    "cross_entropy": Case(sj.cross_entropy, lambda d: (d["z"], d["t"]),
                          lambda z, t: ref.cross_entropy(z, t).mean(), "float32"),
    "cross_entropy_grad": Case(sj.cross_entropy_grad, lambda d: (d["z"], d["t"]),
                               lambda z, t: ref.softmax(z) - t),
    "cross_entropy_with_integer_labels": Case(
        sj.cross_entropy_with_integer_labels, lambda d: (d["z"], d["labels"]), nll, "float32"),
    "cross_entropy_with_integer_labels_none": Case(
        lambda z, labels: sj.cross_entropy_with_integer_labels(z, labels, reduction="none"),
        lambda d: (d["z"], d["labels"]),
        lambda z, labels: -np.take_along_axis(ref.log_softmax(z), labels[:, None], -1)[:, 0],
        "float32"),
    "binary_cross_entropy": Case(sj.binary_cross_entropy, lambda d: (d["z1"], d["b"]),
                                 lambda z, b: ref.binary_cross_entropy(z, b).mean(), "float32"),
    "linear_cross_entropy": Case(sj.linear_cross_entropy, lambda d: (d["h"], d["w"], d["labels"]),
                                 lambda h, w, labels: nll(h @ w, labels), "float32"),
    "model_loss": Case(model.loss, lambda d: (d["params"], d["h"], d["labels"]),
                       lambda p, x, labels: nll(linear(p, x), labels), "float32", True),
    "model_predict": Case(model.predict, lambda d: (d["params"], d["h"]),
                          lambda p, x: np.argmax(linear(p, x), -1), "int32"),
    "sharded_softmax": Case(lambda z: sharded.softmax(z, _MESH), lambda d: (d["z"],),
                            ref.softmax),
    "sharded_cross_entropy_with_integer_labels": Case(
        lambda z, labels: sharded.cross_entropy_with_integer_labels(z, labels, _MESH),
        lambda d: (d["z"], d["labels"]), nll, "float32"),
}

# Derivatives by JAX's transformations, against the lecture's formulas.
DERIVATIVES = {
    "grad_cross_entropy_with_integer_labels": Case(
        jax.grad(sj.cross_entropy_with_integer_labels), lambda d: (d["z"], d["labels"]),
        lambda z, labels: y_minus_t(z, labels) / N),
    "grad_cross_entropy": Case(jax.grad(sj.cross_entropy), lambda d: (d["z"], d["t"]),
                               lambda z, t: (ref.softmax(z) - t) / N),
    "grad_sharded_cross_entropy_with_integer_labels": Case(
        jax.grad(lambda z, labels: sharded.cross_entropy_with_integer_labels(z, labels, _MESH)),
        lambda d: (d["z"], d["labels"]), lambda z, labels: y_minus_t(z, labels) / N),
    "grad_linear_cross_entropy": Case(
        jax.grad(sj.linear_cross_entropy, argnums=(0, 1)),
        lambda d: (d["h"], d["w"], d["labels"]),
        lambda h, w, labels: (y_minus_t(h @ w, labels) @ w.T / N,
                              h.T @ y_minus_t(h @ w, labels) / N)),
    "grad_model_loss": Case(
        jax.grad(model.loss), lambda d: (d["params"], d["h"], d["labels"]),
        lambda p, x, labels: {"W": x.T @ y_minus_t(linear(p, x), labels) / N,
                              "b": y_minus_t(linear(p, x), labels).sum(0) / N}),
    "grad_binary_cross_entropy": Case(jax.grad(sj.binary_cross_entropy),
                                      lambda d: (d["z1"], d["b"]),
                                      lambda z, b: (sigmoid(z) - b) / N),
    "grad_logsumexp": Case(jax.grad(lambda z: sj.logsumexp(z).sum()), lambda d: (d["z"],),
                           ref.softmax),
    "grad_sigmoid": Case(jax.grad(lambda z: sj.sigmoid(z).sum()), lambda d: (d["z"],),
                         lambda z: sigmoid(z) * (1 - sigmoid(z))),
    "jvp_softmax": Case(lambda z, v: jax.jvp(sj.softmax, (z,), (v,))[1],
                        lambda d: (d["z"], d["v"]), jvp),
    "jvp_log_softmax": Case(
        lambda z, v: jax.jvp(sj.log_softmax, (z,), (v,))[1], lambda d: (d["z"], d["v"]),
        lambda z, v: v - np.sum(ref.softmax(z) * v, -1, keepdims=True)),
    "vjp_softmax": Case(lambda z, u: jax.vjp(sj.softmax, z)[1](u)[0],
                        lambda d: (d["z"], d["v"]),
                        lambda z, u: np.einsum("...ij,...i->...j", jacobian(z), u)),
    "jacfwd_softmax": Case(jax.jacfwd(lambda z: sj.softmax(z)), lambda d: (d["z"][0],),
                           jacobian),
}


def _expected_dtype(case, dtype):
  if case.dtype == "int32":
    return jnp.int32
  if case.dtype == "float32" and dtype in _HALF:
    return jnp.float32
  return dtype


def _check(case, fn, dtype, seed=0):
  args = case.args(inputs(dtype, seed))
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    got = jax.block_until_ready(fn(*args))
  assert not caught, [str(w.message) for w in caught]
  want = case.want(*f64(args))
  want_dtype = _expected_dtype(case, dtype)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    chex.assert_type(g, want_dtype)
    chex.assert_shape(g, np.shape(w))
    assert g.dtype != jnp.float64
  if case.dtype == "int32":
    chex.assert_trees_all_equal(got, jax.tree.map(lambda a: a.astype(np.int32), want))
  else:
    bound = _TOL[jnp.dtype(dtype if case.rounded else want_dtype)]
    chex.assert_trees_all_close(jax.tree.map(lambda a: np.asarray(a, np.float64), got), want,
                                **bound)


def _params(cases, dtypes):
  return [(f"_{name}_{jnp.dtype(d).name}", name, d) for name in cases for d in dtypes]


CASES = {**VALUES, **DERIVATIVES}
# float16 samples the functions (bfloat16 takes them all): the core, one loss, two derivatives.
FLOAT16 = ("softmax", "log_softmax", "logsumexp", "sigmoid", "softmax_jvp",
           "cross_entropy_with_integer_labels", "binary_cross_entropy",
           "grad_cross_entropy_with_integer_labels", "jvp_softmax")

PMAP = ("softmax", "cross_entropy_with_integer_labels", "grad_cross_entropy_with_integer_labels",
        "jvp_softmax")


class DefaultConfigTest(chex.TestCase):
  """float32 under chex's four variants; half precision jitted and not; pmap sampled."""

  @chex.variants(with_jit=True, without_jit=True, with_device=True, without_device=True)
  @parameterized.named_parameters(*_params(CASES, (jnp.float32,)))
  def test_float32(self, name, dtype):
    _check(CASES[name], self.variant(CASES[name].fn), dtype)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*_params(CASES, (jnp.bfloat16,)),
                                  *_params(FLOAT16, (jnp.float16,)))
  def test_half(self, name, dtype):
    _check(CASES[name], self.variant(CASES[name].fn), dtype)

  # chex's pmap variant copies the arguments to every device (8 simulated CPU devices,
  # see conftest) and returns the first device's result: sampled, for its compile cost.
  @chex.variants(with_pmap=True)
  @parameterized.named_parameters(*_params(PMAP, (jnp.float32,)))
  def test_pmap(self, name, dtype):
    _check(CASES[name], self.variant(CASES[name].fn), dtype)


_VMAP = ("softmax", "logsumexp", "softmax_jacobian", "softmax_vjp", "cross_entropy",
         "cross_entropy_with_integer_labels", "binary_cross_entropy", "linear_cross_entropy",
         "model_loss", "sharded_cross_entropy_with_integer_labels",
         "grad_cross_entropy_with_integer_labels", "jvp_softmax", "grad_linear_cross_entropy")


@pytest.mark.parametrize("name,dtype", [(n, jnp.float32) for n in _VMAP] + [
    (n, jnp.bfloat16) for n in ("softmax", "cross_entropy_with_integer_labels", "jvp_softmax",
                                "grad_cross_entropy_with_integer_labels")])
def test_vmap(name, dtype):
  """``jax.vmap`` over a leading axis of two input draws equals the reference draw by draw."""
  case = CASES[name]
  draws = [case.args(inputs(dtype, seed)) for seed in (0, 1)]
  args = jax.tree.map(lambda *a: jnp.stack(a), *draws)
  want = jax.tree.map(lambda *a: np.stack(a), *[case.want(*f64(a)) for a in draws])
  _check(case._replace(args=lambda d: args, want=lambda *a: want), jax.vmap(case.fn), dtype)


def test_the_tests_run_with_x64_off():
  assert not jax.config.jax_enable_x64
  assert jnp.asarray(np.zeros(1)).dtype == jnp.float32


def test_a_wrong_value_is_caught():
  """The check is not vacuous: softmax off by 1e-4 (relative) fails in float32."""
  with pytest.raises(AssertionError):
    _check(VALUES["softmax"], lambda z: sj.softmax(z) * (1 + 1e-4), jnp.float32)
  with pytest.raises(AssertionError, match="float64 requested"):
    _check(VALUES["softmax"], lambda z: sj.softmax(jnp.asarray(z, jnp.float64)), jnp.float32)
