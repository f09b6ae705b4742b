"""The fused cross-entropy kernel (``_kernels._xent_kernel``): its outputs against the XLA
path and its XLA-op twin ``xent_formula``, the tail's label entry, float16's row scale,
and the gradient's alias to the logits in the CUDA program."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import softmax_jax as sj
from softmax_jax._kernels import _cross_entropy, _xent_kernel

TRITON = "__gpu$xla.gpu.triton"  # the custom call a Pallas Triton kernel lowers to


def _xla(z, t, reduction="mean", **kw):
  return sj.cross_entropy_with_integer_labels(z, t, reduction=reduction, impl="xla", **kw)


@pytest.mark.parametrize("c,max_tile", [(10, 16384), (4096, 512)])
def test_loss_gradient_and_formula(masked_logits, rng, c, max_tile):
  x = masked_logits((11, c))
  t = jnp.asarray(rng.integers(0, c, 11)).at[1].set(c - 1)  # a label on a finite logit
  out = _xent_kernel.xent_2d(x, t, max_tile=max_tile)
  np.testing.assert_allclose(out.loss, _xla(x, t, "none"), rtol=2e-6, atol=2e-6)
  want_grad = jax.grad(lambda z: _xla(z, t, "sum"))(x)
  np.testing.assert_allclose(out.grad, want_grad, atol=2e-7)
  np.testing.assert_array_equal(out.counted, [0.0] + [1.0] * 10)
  np.testing.assert_array_equal(out.row_scale, 1.0)  # float32: no storage scale
  formula = _xent_kernel.xent_formula(x, t, None)  # the XLA-op twin of the kernel
  np.testing.assert_allclose(formula.loss, out.loss, rtol=2e-6, atol=2e-6)
  np.testing.assert_allclose(formula.grad, out.grad, atol=2e-7)
  np.testing.assert_allclose(formula.nll, out.nll, rtol=2e-6, atol=2e-6)
  np.testing.assert_allclose(formula.lse, out.lse, rtol=2e-6)


@pytest.mark.parametrize("max_tile", [16384, 16])
def test_exact_tail_in_the_label_entry(max_tile):
  """float32 logits [20, 0, −1] with label 0: the label entry of the gradient is
  −(1 − y_0) = −2.8194e-9 from the tail, not 0 (single tile, and merged over tiles with
  the dominant class in a later tile)."""
  x = jnp.full((2, 40), -jnp.inf, jnp.float32)
  x = x.at[0, :3].set(jnp.asarray([20.0, 0.0, -1.0], jnp.float32)).at[1, 30:33].set(
      jnp.asarray([-1.0, 0.0, 20.0], jnp.float32))
  t = jnp.asarray([0, 32])
  g = jax.grad(lambda z: _cross_entropy.cross_entropy(z, t, "sum", max_tile=max_tile))(x)
  tail = np.exp(-20.0) + np.exp(-21.0)
  np.testing.assert_allclose(g[0, 0], -tail, rtol=1e-6)
  np.testing.assert_allclose(g[1, 32], -tail, rtol=1e-6)
  np.testing.assert_allclose(jnp.sum(g, -1), 0, atol=1e-15)  # to an ulp of the label entry
  loss = _cross_entropy.cross_entropy(x, t, "none", max_tile=max_tile)
  np.testing.assert_allclose(loss, np.log1p(tail), rtol=1e-6)  # −log y_t, not 0


def test_float16_gradient_under_loss_scaling(rng):
  """float16 logits at N = 16384, C = 128, loss × 4096: the kernel does not fold 1/N into
  the stored float16 gradient (it would underflow), so the gradient matches a float64
  reference as closely as the XLA path does and has no spurious exact zeros."""
  n, c = 16384, 128
  x = jnp.asarray(rng.normal(size=(n, c)) * 3, jnp.float16)
  t = jnp.asarray(rng.integers(0, c, n))
  z = np.asarray(x, np.float64)
  y = np.exp(z - z.max(1, keepdims=True))
  y /= y.sum(1, keepdims=True)
  y[np.arange(n), np.asarray(t)] -= 1
  ref = 4096 * y / n
  representable = np.abs(ref) >= 2**-24  # nonzero in float16
  errors = {}
  for impl in ("pallas", "xla"):
    g = jax.jit(jax.grad(lambda z, impl=impl: 4096 * sj.cross_entropy_with_integer_labels(
        z, t, impl=impl)))(x)
    assert g.dtype == jnp.float16
    g = np.asarray(g, np.float64)
    assert not np.any((g == 0) & representable), impl
    errors[impl] = np.median(np.abs(g - ref)[ref != 0] / np.abs(ref[ref != 0]))
  assert errors["pallas"] <= 1.05 * errors["xla"] and errors["pallas"] < 5e-4, errors


@pytest.mark.internals
def test_donation_aliases_the_gradient_to_the_logits_in_the_gpu_program(cuda_module):
  """In the CUDA lowering, the Triton call's gradient output aliases its logits operand,
  also through ``jax.grad`` of the loss with the platform-dependent kernel."""
  x = jax.ShapeDtypeStruct((64, 1000), jnp.float32)
  t = jax.ShapeDtypeStruct((64,), jnp.int32)
  pattern = r"output_operand_alias<output_tuple_indices = \[(\d+)\], operand_index = (\d+)"
  aliases = {}
  for donate in (False, True):
    text = cuda_module(lambda x, t, d=donate: _xent_kernel.xent_2d(x, t, donate=d,
                                                                   interpret=False), x, t)
    assert TRITON in text
    aliases[donate] = re.findall(pattern, text)
  assert aliases[False] == []
  assert aliases[True] == [("1", "0")]  # output 1 (the gradient) takes operand 0 (the logits)
  text = cuda_module(jax.grad(lambda x, t: _cross_entropy.cross_entropy(x, t, "mean",
                                                                        donate=True)), x, t)
  assert re.findall(pattern, text) == [("1", "0")]
