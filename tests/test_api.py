"""Every public function: the exported names, and the same answer eager, jitted and vmapped."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import softmax_jax as sj

PUBLIC = {
    "softmax", "log_softmax", "logsumexp", "sigmoid", "log_sigmoid", "sigmoid_derivative",
    "softmax_jacobian", "softmax_jvp", "softmax_vjp", "cross_entropy",
    "cross_entropy_with_integer_labels", "binary_cross_entropy", "cross_entropy_grad",
    "validate_labels", "linear_cross_entropy",
}


def test_public_names():
  assert set(sj.__all__) == PUBLIC
  assert all(callable(getattr(sj, name)) for name in PUBLIC)


def _cases(rng):
  z = jnp.asarray(rng.normal(size=(3, 4, 5)), jnp.float32)
  v = jnp.asarray(rng.normal(size=(3, 4, 5)), jnp.float32)
  t = jax.nn.softmax(v)
  y = jnp.asarray(rng.integers(0, 5, (3, 4)))
  b = jnp.asarray(rng.integers(0, 2, (3, 4, 5)), jnp.float32)
  w = jnp.asarray(rng.random(5) + 0.5, jnp.float32)
  return {
      "softmax": (lambda z: sj.softmax(z, temperature=1.5), (z,)),
      "log_softmax": (sj.log_softmax, (z,)),
      "logsumexp": (sj.logsumexp, (z,)),
      "sigmoid": (sj.sigmoid, (z,)),
      "log_sigmoid": (sj.log_sigmoid, (z,)),
      "sigmoid_derivative": (sj.sigmoid_derivative, (z,)),
      "softmax_jacobian": (sj.softmax_jacobian, (z,)),
      "softmax_jvp": (sj.softmax_jvp, (z, v)),
      "softmax_vjp": (sj.softmax_vjp, (z, v)),
      "cross_entropy": (lambda z, t: sj.cross_entropy(z, t, reduction="none"), (z, t)),
      "cross_entropy_with_integer_labels": (
          lambda z, y: sj.cross_entropy_with_integer_labels(
              z, y, class_weights=w, label_smoothing=0.1, reduction="none"), (z, y)),
      "binary_cross_entropy": (
          lambda z, b: sj.binary_cross_entropy(z, b, reduction="none"), (z, b)),
      "cross_entropy_grad": (sj.cross_entropy_grad, (z, t)),
      "linear_cross_entropy": (
          lambda z, y: sj.linear_cross_entropy(z, jnp.outer(w, w), y, chunk_size=3,
                                               reduction="none"), (z, y)),
  }


@pytest.mark.parametrize("name", sorted(PUBLIC - {"validate_labels"}))
def test_eager_jit_vmap_agree(rng, name):
  fn, args = _cases(rng)[name]
  eager = fn(*args)
  jitted = jax.jit(fn)(*args)
  mapped = jax.vmap(fn)(*args)  # maps over the leading batch axis
  np.testing.assert_allclose(jitted, eager, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(mapped, eager, rtol=1e-6, atol=1e-7)
  assert np.all(np.isfinite(np.asarray(eager, np.float64)))


def test_import_stays_light():
  """orbax, tqdm, matplotlib and scikit-learn load only when training writes a run."""
  import subprocess
  import sys

  code = ("import sys, softmax_jax, softmax_jax.cli, softmax_jax.train, softmax_jax.model, "
          "softmax_jax.datasets; print(sorted({m.split('.')[0] for m in sys.modules} & "
          "{'orbax', 'tqdm', 'matplotlib', 'sklearn', 'tensorstore'}))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]"
