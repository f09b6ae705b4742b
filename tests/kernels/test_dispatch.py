"""``_kernels.choose``: which implementation runs, decided by ``impl`` and by the platform
the program is lowered for (``_kernels._dispatch``)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import softmax_jax as sj
from softmax_jax import _kernels
from softmax_jax._kernels import _triton

TRITON = "__gpu$xla.gpu.triton"  # the custom call a Pallas Triton kernel lowers to


def _xla(x, t):
  return sj.cross_entropy_with_integer_labels(x, t, impl="xla")


def _auto(x, t):
  return _kernels.choose("auto", x, (x.ndim - 1,), "test",
                         kernel=lambda: _kernels.cross_entropy(x, t, "mean"),
                         xla=lambda: _xla(x, t))


@pytest.mark.internals
def test_auto_dispatch_follows_the_platform_of_the_export(cuda_module):
  """``jax.export`` of ``value_and_grad`` traced on this CPU host: the CUDA program holds
  the Triton kernel and none of the XLA path (no exponential outside the kernel, no
  interpret-mode loop); the CPU program holds no kernel."""
  x = jax.ShapeDtypeStruct((64, 1000), jnp.float32)
  t = jax.ShapeDtypeStruct((64,), jnp.int32)
  for fn, args in ((jax.value_and_grad(_auto), (x, t)),
                   (lambda x: _kernels.choose("auto", x, (1,), "test",
                                              kernel=lambda: _kernels.softmax(x, False),
                                              xla=lambda: sj.softmax(x, impl="xla")), (x,))):
    cuda = cuda_module(fn, *args)
    cpu = jax.export.export(jax.jit(fn), platforms=["cpu"])(*args).mlir_module()
    assert TRITON in cuda
    assert "stablehlo.exponential" not in cuda and "stablehlo.while" not in cuda
    assert TRITON not in cpu and "stablehlo.exponential" in cpu


@pytest.mark.internals
def test_impl_pallas_lowers_triton_for_cuda_and_interprets_elsewhere(cuda_module):
  x = jax.ShapeDtypeStruct((64, 1000), jnp.float32)
  t = jax.ShapeDtypeStruct((64,), jnp.int32)
  fn = jax.value_and_grad(lambda x, t: _kernels.cross_entropy(x, t, "mean"))
  assert TRITON in cuda_module(fn, x, t)
  cpu = jax.export.export(jax.jit(fn), platforms=["cpu"])(x, t).mlir_module()
  assert TRITON not in cpu and "stablehlo.while" in cpu  # the interpret-mode loop


@pytest.mark.internals
def test_auto_uses_xla_on_cpu_and_pallas_when_asked(rng):
  """The CPU program of ``impl="auto"`` holds no kernel (its jaxpr holds both branches of
  the platform-dependent choice); ``impl="pallas"`` runs the kernel in interpret mode."""
  x = jnp.asarray(rng.normal(size=(4, 8)), jnp.float32)
  assert "softmax_2d" not in jax.jit(sj.softmax).lower(x).as_text()
  assert "softmax_2d" in jax.jit(lambda z: sj.softmax(z, impl="pallas")).lower(x).as_text()
  assert "pallas_call" not in str(jax.make_jaxpr(lambda z: sj.softmax(z, impl="xla"))(x))


@pytest.mark.internals
def test_without_triton_auto_uses_xla_and_pallas_names_the_reason(rng, monkeypatch):
  """A patched ``_triton.why_unavailable`` stands for a missing Triton backend."""
  x = jnp.asarray(rng.normal(size=(4, 8)), jnp.float32)
  t = jnp.zeros(4, jnp.int32)
  # a new function for each trace: make_jaxpr caches the trace of a function it has seen
  assert "pallas_call" in str(jax.make_jaxpr(lambda x, t: _auto(x, t))(x, t))  # the control
  monkeypatch.setattr(_triton, "why_unavailable", lambda: "no Triton backend (test)")
  assert "pallas_call" not in str(jax.make_jaxpr(lambda x, t: _auto(x, t))(x, t))
  np.testing.assert_allclose(_auto(x, t), _xla(x, t))
  with pytest.raises(ValueError, match=r"impl='pallas' does not support no Triton backend"):
    _kernels.choose("pallas", x, (1,), "test", xla=lambda: _xla(x, t),
                    kernel=lambda: _kernels.cross_entropy(x, t, "mean"))
  # the kernel's own check reads the same function (a shape no other test traces)
  z = jax.ShapeDtypeStruct((3, 7), jnp.float32)
  with pytest.raises(_triton.KernelUnsupported, match=r"no Triton backend \(test\)"):
    jax.jit(lambda z: _kernels.softmax(z, False, interpret=False)).lower(z)


@pytest.mark.internals
def test_a_block_triton_refuses_falls_back_to_xla():
  """A row block over Triton's 2**20 elements is refused while tracing: ``"auto"`` uses
  XLA, ``"pallas"`` raises naming the reason."""
  x = jax.ShapeDtypeStruct((2048, 1024), jnp.float32)
  t = jax.ShapeDtypeStruct((2048,), jnp.int32)

  def loss(impl):
    return lambda x, t: _kernels.choose(
        impl, x, (1,), "test", xla=lambda: _xla(x, t),
        kernel=lambda: _kernels.cross_entropy(x, t, "mean", row_elems=2**22))

  assert "pallas_call" not in str(jax.make_jaxpr(loss("auto"))(x, t))
  with pytest.raises(ValueError, match="exceeds the Triton backend's 1048576"):
    jax.make_jaxpr(loss("pallas"))(x, t)


def test_impl_errors(rng):
  x = jnp.asarray(rng.normal(size=(4, 8)), jnp.float32)
  with pytest.raises(ValueError, match="impl must be one of"):
    sj.softmax(x, impl="triton")
  with pytest.raises(ValueError, match="impl must be one of"):
    _kernels.choose("triton", x, (1,), "f", kernel=lambda: x, xla=lambda: x)
  with pytest.raises(ValueError, match="impl='pallas' does not support where"):
    sj.softmax(x, where=x > 0, impl="pallas")
  with pytest.raises(ValueError, match="does not support temperature"):
    sj.log_softmax(x, temperature=2.0, impl="pallas")
  with pytest.raises(ValueError, match=r"axis=\(0,\)"):
    sj.softmax(x, axis=0, impl="pallas")
  with pytest.raises(ValueError, match="does not support where"):
    sj.cross_entropy_with_integer_labels(x, jnp.zeros(4, jnp.int32), where=x > 0,
                                         impl="pallas")


@pytest.mark.x64
def test_impl_pallas_refuses_float64(rng):
  x = jnp.asarray(rng.normal(size=(4, 8)), jnp.float64)
  with pytest.raises(ValueError, match="dtype float64"):
    sj.softmax(x, impl="pallas")
  np.testing.assert_allclose(sj.softmax(x), sj.softmax(x, impl="xla"))  # auto: XLA
