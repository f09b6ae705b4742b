"""The ``softmax-jax`` command: ``demo``, ``verify``, ``bench``, ``train`` and ``predict``."""

from softmax_jax.cli._main import main as main

__all__ = ["main"]
