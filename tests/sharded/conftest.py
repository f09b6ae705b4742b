"""Meshes over the 8 simulated CPU devices (tests/conftest.py sets them up)."""

import jax
import numpy as np
import pytest
from jax.sharding import Mesh


def _mesh(shape, names):
  return Mesh(np.array(jax.devices()[:int(np.prod(shape))]).reshape(shape), names)


@pytest.fixture(scope="session")
def mesh8():
  """The classes over 8 devices (``"model"``)."""
  assert jax.device_count() == 8, "tests/conftest.py sets 8 simulated CPU devices"
  return _mesh((8,), ("model",))


@pytest.fixture(scope="session")
def mesh2x4():
  """The rows over 2 devices (``"data"``), the classes over 4 (``"model"``)."""
  return _mesh((2, 4), ("data", "model"))
