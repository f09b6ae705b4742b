"""The machine a command runs on: the JAX platform it asks for, and its faults as one line.

Standard library only at the top (JAX is imported inside the functions).
"""

from __future__ import annotations


def select_platform(name: str | None) -> None:
  """Ask JAX for the platform ``name`` (before anything starts a backend)."""
  if name:
    import jax

    jax.config.update("jax_platforms", name)


def device_problem(name: str | None) -> str | None:
  """An error message when the selected platform is not there."""
  import jax

  try:
    jax.devices()
  except RuntimeError as e:
    return f"--device {name}: JAX found no such backend here ({e})"
  return None


def fault(e: OSError) -> str:
  """A machine fault (read-only or full disk...) as one line naming the path and the cause."""
  where = f" {e.filename}" if e.filename else ""
  return f"cannot write{where}: {e.strerror or e}"
