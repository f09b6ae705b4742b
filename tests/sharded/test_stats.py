"""The collectives of the sharded functions (``sharded._stats``): one ``pmax`` and one
``psum`` in the forward pass, none in the backward pass."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from softmax_jax import sharded


def _all_reduces(fn, x):
  """(number of all-reduce ops, elements they reduce) in the compiled program."""
  hlo = jax.jit(fn).lower(x).compile().as_text()
  ops = [line for line in hlo.splitlines() if re.search(r"= .*all-reduce(-start)?\(", line)]
  elements = 0
  for line in ops:
    result_type = line.split("=", 1)[1].split("all-reduce")[0]
    for dims in re.findall(r"f32\[([\d,]*)\]", result_type):
      elements += int(np.prod([int(d) for d in dims.split(",") if d]))
  return len(ops), elements


@pytest.mark.internals
def test_two_collectives_and_none_in_the_backward_pass(mesh8, rng):
  """Reads the compiled program: one pmax of ``[n]`` and one psum of the tuple
  (s, tail, z_t) of ``[n]`` each; the smoothing and class-weight sums join the psum; the
  gradient y − t is local to each device (the tangent's psum transposes to a no-op), so
  value_and_grad has the forward's collectives only."""
  n = 64
  x = jnp.asarray(rng.normal(size=(n, 32)), jnp.float32)
  t = jnp.asarray(rng.integers(0, 32, n))
  loss = lambda z: sharded.cross_entropy_with_integer_labels(z, t, mesh8)  # noqa: E731
  fwd = _all_reduces(loss, x)
  assert fwd == (2, 4 * n)  # pmax m; psum (s, tail, z_t)
  assert _all_reduces(jax.value_and_grad(loss), x) == fwd
  full = lambda z: sharded.cross_entropy_with_integer_labels(  # noqa: E731
      z, t, mesh8, class_weights=jnp.ones(32, jnp.float32), label_smoothing=0.1, z_loss=1e-4,
      logit_softcap=30.0, ignore_index=-100)
  both = _all_reduces(jax.value_and_grad(full), x)
  assert both == (2, 8 * n)  # psum (s, tail, z_t, w_t, K, Σw, Σw(z − m))
  assert _all_reduces(lambda z: sharded.softmax(z, mesh8), x) == (2, 2 * n)  # pmax m; psum s
