"""Row blocks and tiles (``_kernels._tiling``): the tile sizes are arguments of the program,
and both kernels lower for the Triton backend with odd shapes and several tiles."""

import importlib
import pkgutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from softmax_jax import _kernels
from softmax_jax._kernels import _softmax, _tiling, _xent_kernel

TRITON = "__gpu$xla.gpu.triton"  # the custom call a Pallas Triton kernel lowers to


def test_blocks():
  assert _tiling.blocks(13, 1000, 16384, 16384) == (1024, 1, 16)
  assert _tiling.blocks(13, 1000, 256, 16384) == (256, 4, 16)  # four tiles, the last masked
  assert _tiling.blocks(3, 1000, 256, 16384) == (256, 4, 4)  # rows: a power of two
  assert _tiling.blocks(13, 40000, 16384, 16384).width == 3 * 16384
  assert _tiling.blocks(13, 40000, 16384, 8192).rows == 1  # a block holds at least a row
  for bad in (100, 0, 2.0):
    with pytest.raises(ValueError, match="max_tile must be a power of two"):
      _tiling.blocks(4, 8, bad, 16384)
  with pytest.raises(ValueError, match="row_elems must be a power of two"):
    _tiling.blocks(4, 8, 16, 3)


def _kernel_modules():
  return [importlib.import_module(f"softmax_jax._kernels.{m.name}")
          for m in pkgutil.iter_modules(_kernels.__path__)]


@pytest.mark.internals
def test_tile_sizes_are_arguments_of_the_program(masked_logits, rng, monkeypatch):
  """``max_tile`` and ``row_elems`` change the compiled program (same values); the module
  constants are only defaults, not read while tracing: the constants patched in every
  kernel module that holds them change nothing."""
  x = masked_logits((8, 300))
  t = jnp.asarray(rng.integers(0, 300, 8)).at[1].set(299)

  def lowered(**kw):
    f = jax.jit(lambda z: _kernels.cross_entropy(z, t, "mean", **kw))
    return f.lower(x).as_text(), f(x)

  default, v0 = lowered()
  small, v1 = lowered(max_tile=128)
  blocks, v2 = lowered(max_tile=128, row_elems=256)
  assert len({default, small, blocks}) == 3
  np.testing.assert_allclose(v1, v0, rtol=1e-6)
  np.testing.assert_allclose(v2, v0, rtol=1e-6)
  soft = [jax.jit(lambda z, k=k: _kernels.softmax(z, False, max_tile=k)).lower(x).as_text()
          for k in (128, 16384)]
  assert soft[0] != soft[1]
  holders = [m for m in _kernel_modules() if hasattr(m, "MAX_TILE")]
  assert {m.__name__.rpartition(".")[2] for m in holders} >= {"_tiling", "_softmax",
                                                              "_cross_entropy"}
  for m in holders:
    monkeypatch.setattr(m, "MAX_TILE", 128)
    monkeypatch.setattr(m, "ROW_ELEMS", 256)
  assert lowered()[0] == default  # were they read, this would be the program `blocks`
  soft_default = jax.jit(lambda z: _kernels.softmax(z, False)).lower(x).as_text()
  assert soft_default == soft[1]


@pytest.mark.internals
@pytest.mark.parametrize("shape", [(4096, 1000), (13, 1024), (64, 40000)])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_kernels_lower_for_the_gpu_triton_backend(cuda_module, shape, dtype):
  """Lowering for CUDA needs no GPU: it checks the Triton backend's rules (power-of-two
  array shapes, block layout) for odd row and class counts and the multi-tile path, with
  the core's merge, log1p and complement inside the kernel (and float16's row scale)."""
  x = jax.ShapeDtypeStruct(shape, dtype)
  t = jax.ShapeDtypeStruct(shape[:1], jnp.int32)
  w = jax.ShapeDtypeStruct(shape[1:], jnp.float32)
  for fn, args in ((lambda x: _softmax.softmax_2d(x, log=True, interpret=False), (x,)),
                   (lambda x, t: _xent_kernel.xent_2d(x, t, interpret=False), (x, t)),
                   (lambda x, t, w: _xent_kernel.xent_2d(x, t, w, eps=0.1, z_loss=1e-4,
                                                         softcap=30.0, interpret=False),
                    (x, t, w))):
    assert TRITON in cuda_module(fn, *args)
