"""Test configuration: 64-bit floats for the float64 reference checks, and 8 simulated
CPU devices for the sharding tests (set before JAX starts its backend)."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8").strip()
# The CLI's persistent compilation cache would outlive the test run (and change what the
# in-process tests see of JAX's own caches); subprocess tests inherit this too.
os.environ["SOFTMAX_JAX_COMPILATION_CACHE"] = "0"

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)


@pytest.fixture
def key():
  return jax.random.key(0)


@pytest.fixture
def rng():
  return np.random.default_rng(0)
