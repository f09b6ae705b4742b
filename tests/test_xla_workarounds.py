"""The XLA CPU workaround applied at ``import softmax_jax`` (``_xla_workarounds``): in a
fresh process, as users import the package.  On an affected jaxlib the flag goes in and
the miscompiled programs give the right values; a user's own setting, an opt-out and a
backend started too early are respected or reported."""

import importlib.metadata
import os
import subprocess
import sys

import pytest

from softmax_jax import _xla_workarounds as xw

AFFECTED = importlib.metadata.version("jaxlib") in xw.AFFECTED_JAXLIB

# The programs jaxlib 0.10.2 miscompiles on the CPU (checked against NumPy in float64).
PROGRAMS = """
import jax, jax.numpy as jnp, numpy as np
rng = np.random.default_rng(0)
y = rng.random((15, 50)).astype(np.float32)
v = rng.normal(size=(64, 15, 50)).astype(np.float32)
f = jax.jit(lambda y, v: y[None] * (v - jnp.sum(y[None] * v, axis=-1, keepdims=True)))
yd, vd = y.astype(np.float64), v.astype(np.float64)
want = yd[None] * (vd - (yd[None] * vd).sum(-1, keepdims=True))
print("fused", float(np.abs(np.asarray(f(y, v)) - want).max()))
import softmax_jax as sj
x = jnp.asarray(rng.normal(size=(15, 50)), jnp.float32)
print("jacfwd", float(jnp.abs(jax.jacfwd(sj.softmax)(x) - jax.jacfwd(jax.nn.softmax)(x)).max()))
"""


def _run(code: str, **env) -> subprocess.CompletedProcess:
  environ = {k: v for k, v in os.environ.items()
             if k not in ("XLA_FLAGS", xw.OPT_OUT)}
  environ.update(JAX_PLATFORMS="cpu", **env)
  return subprocess.run([sys.executable, "-W", "always", "-c", code], env=environ,
                        capture_output=True, text=True, timeout=300, check=True)


def _errors(out: str) -> dict:
  return {k: float(v) for k, v in (line.split() for line in out.splitlines())}


def test_importing_the_package_first_gives_the_right_values():
  proc = _run("import os, softmax_jax\nprint('flags', 1 if os.environ.get('XLA_FLAGS') == "
              f"{xw.FLAG!r} else 0)\n" + PROGRAMS)
  errors = _errors(proc.stdout)
  assert errors["flags"] == (1 if AFFECTED else 0)
  assert errors["fused"] < 1e-5 and errors["jacfwd"] < 1e-6, errors


@pytest.mark.skipif(not AFFECTED, reason="the installed jaxlib needs no workaround")
def test_the_fault_is_real_without_the_flag():
  """The opt-out leaves XLA as it is: on this jaxlib the same programs are wrong (so the
  test above shows the flag at work, not a program that happens to be right)."""
  errors = _errors(_run(PROGRAMS, **{xw.OPT_OUT: "1"}).stdout)
  assert errors["fused"] > 1.0 and errors["jacfwd"] > 1e-2, errors


def test_a_users_own_setting_is_kept():
  flags = "--xla_cpu_experimental_ynn_fusion_type= --xla_force_host_platform_device_count=2"
  proc = _run("import os, softmax_jax\nprint(os.environ['XLA_FLAGS'])", XLA_FLAGS=flags)
  assert proc.stdout.strip() == flags


@pytest.mark.skipif(not AFFECTED, reason="the installed jaxlib needs no workaround")
def test_a_backend_started_before_the_import_is_reported():
  proc = _run("import jax; jax.numpy.zeros(1).block_until_ready()\n"
              "import os, softmax_jax\nprint(os.environ.get('XLA_FLAGS', ''))")
  assert proc.stdout.strip() == ""
  assert "RuntimeWarning" in proc.stderr and xw.FLAG in proc.stderr
  assert "jax-ml/jax#39103" in proc.stderr


def test_in_this_process_forward_mode_of_softmax_is_right():
  """The test session itself imports the package before JAX starts its backend, so the
  package's own checks run on a correctly compiled CPU backend."""
  import jax
  import jax.numpy as jnp

  import softmax_jax as sj

  x = jax.random.normal(jax.random.key(0), (15, 50))
  err = jnp.abs(jax.jacfwd(sj.softmax)(x) - jax.jacfwd(jax.nn.softmax)(x)).max()
  assert float(err) < 1e-6
