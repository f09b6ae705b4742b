"""Test configuration.

Tests run in the configuration a user gets by default: 32-bit JAX (``jax_enable_x64``
off).  A test or module marked ``x64`` runs under ``jax.enable_x64(True)`` instead, for
the float64 reference checks; nothing here changes JAX's configuration for the process.
Tests marked ``internals`` inspect implementation details (jaxprs, HLO, compile logs,
patched module globals): they can need updating when the implementation changes even
though the behaviour has not.

The sharding tests get 8 simulated CPU devices (set before JAX starts its backend).
"""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8").strip()
# The CLI's persistent compilation cache would outlive the test run (and change what the
# in-process tests see of JAX's own caches); subprocess tests inherit this too.
os.environ["SOFTMAX_JAX_COMPILATION_CACHE"] = "0"

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


def pytest_configure(config):
  config.addinivalue_line(
      "markers", "x64: run under jax.enable_x64(True) (float64 reference checks); "
      "unmarked tests run with x64 off, as users do by default")
  config.addinivalue_line(
      "markers", "internals: inspects implementation details (jaxprs, HLO, compile logs, "
      "patched module globals) rather than behaviour alone")


@pytest.fixture(autouse=True)
def _x64_mode(request):
  with jax.enable_x64(request.node.get_closest_marker("x64") is not None):
    yield


@pytest.fixture
def key():
  return jax.random.key(0)


@pytest.fixture
def rng():
  return np.random.default_rng(0)
