"""Where and how a benchmark ran: what a reader needs to reproduce or compare its figures.

:func:`context` collects the versions (jax, jaxlib, optax, this package, Python), the
JAX backend and its devices, the CPU (model, cores, the cores this process may use),
the XLA and JAX settings that change what is compiled or how it runs, the command line,
the date and the git commit of the source when it is a checkout.  Every item is best
effort: what cannot be read is ``None``, never an error.
"""

from __future__ import annotations

import os
import pathlib
import platform
import subprocess
import sys
import time

# JAX settings that change the compiled programs or their timing (the persistent cache
# makes compile times cache hits).
_JAX_CONFIG = ("jax_enable_x64", "jax_platforms", "jax_default_matmul_precision",
               "jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")


def _best_effort(fn):
  try:
    return fn()
  except Exception:  # noqa: BLE001 - a figure of context is never worth failing a run
    return None


def _version(module: str) -> str | None:
  def read():
    from importlib import metadata

    return metadata.version(module)

  return _best_effort(read)


def cpu_model() -> str | None:
  """The CPU's model name (``/proc/cpuinfo`` on Linux, else what ``platform`` says)."""
  def read():
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.lower().startswith(("model name", "hardware", "cpu model")):
        return line.split(":", 1)[1].strip()
    return None

  return _best_effort(read) or platform.processor() or platform.machine() or None


def _affinity() -> int | None:
  return _best_effort(lambda: len(os.sched_getaffinity(0)))


def _git_commit() -> str | None:
  """The commit of the checkout this package runs from, with ``+dirty`` if it has changes."""
  root = pathlib.Path(__file__).resolve().parents[2]
  if not (root / ".git").exists():
    return None

  def git(*args):
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                          timeout=5, check=True).stdout.strip()

  def read():
    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return commit + ("+dirty" if dirty else "")

  return _best_effort(read)


def _devices() -> dict:
  import jax

  devices = _best_effort(jax.devices) or []
  return {"backend": _best_effort(jax.default_backend),
          "device_kind": devices[0].device_kind if devices else None,
          "device_count": len(devices),
          "platform_version": _best_effort(lambda: devices[0].client.platform_version)}


def context(argv: list[str] | None = None) -> dict:
  """A JSON-ready description of this process: versions, devices, CPU, settings, command.

  ``argv`` is the command line to record (default ``sys.argv``).
  """
  import jax

  config = {name: _best_effort(lambda n=name: getattr(jax.config, n)) for name in _JAX_CONFIG}
  env = {k: v for k, v in sorted(os.environ.items())
         if k == "XLA_FLAGS" or k.startswith(("JAX_", "SOFTMAX_JAX_", "TF_CPP_"))
         or k in ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES")}
  return {
      "versions": {"softmax_jax": _version("softmax_jax"), "jax": _version("jax"),
                   "jaxlib": _version("jaxlib"), "optax": _version("optax"),
                   "numpy": _version("numpy"), "python": platform.python_version()},
      **_devices(),
      "cpu": {"model": cpu_model(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
              "usable_cpus": _affinity(), "load_average": _best_effort(os.getloadavg)},
      "platform": platform.platform(),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "environment": env,
      "jax_config": config,
      "argv": list(sys.argv if argv is None else argv),
      "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
      "git_commit": _git_commit(),
  }
