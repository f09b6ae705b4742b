"""Fixtures of the kernel tests: logits with an empty and a half-masked row, and the CUDA
lowering (which needs no GPU: it checks the Triton backend's rules)."""

import jax
import jax.numpy as jnp
import pytest
from jax import export


@pytest.fixture
def masked_logits(rng):
  """``make(shape, dtype)``: normal logits × 3 whose first row is all ``−inf`` and whose
  second row has its first half ``−inf``."""

  def make(shape, dtype=jnp.float32):
    x = jnp.asarray(rng.normal(size=shape) * 3, dtype)
    x = x.reshape(-1, shape[-1]).at[0].set(-jnp.inf)  # an empty row
    x = x.at[1, : shape[-1] // 2].set(-jnp.inf)  # a half-masked row
    return x.reshape(shape)

  return make


@pytest.fixture
def cuda_module():
  """``lower(fn, *args)``: the StableHLO text of ``jax.jit(fn)`` exported for CUDA."""

  def lower(fn, *args):
    check = export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")
    return export.export(jax.jit(fn), platforms=["cuda"], disabled_checks=[check])(
        *args).mlir_module()

  return lower
