"""Runs the ``got`` side of the grid's comparisons: one compiled program per function and
shape, compiled in the background while the next one is traced."""

from __future__ import annotations

import concurrent.futures

import jax

from softmax_jax.verify import _comparisons
from softmax_jax.verify._cases import ARRAYS, Case


class Evaluator:
  """Evaluates the ``got`` side of the checks, one compiled program per check and shape.

  A program is traced (and lowered) in the calling thread, under its ``x64``
  setting, and compiled in a pool of ``workers`` threads, so compiling one
  check overlaps tracing and compiling the next; grid points with the same
  dtype, class count and presence of a ``where`` mask share it (the logit
  scale is data).  Each evaluator traces afresh, so a patched function is seen.
  """

  def __init__(self, workers: int = 2):
    def gots(arrays, name, dtype, classes):
      case = Case(dtype, classes, "", **arrays)
      return [comparison.got() for comparison in _comparisons.CHECKS[name](case)]

    self._jitted = jax.jit(gots, static_argnums=(1, 2, 3))
    self._pool = concurrent.futures.ThreadPoolExecutor(workers)
    self._programs: dict[tuple, concurrent.futures.Future] = {}

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self._pool.shutdown(wait=False, cancel_futures=True)

  @staticmethod
  def _arrays(case: Case) -> dict:
    return {field: getattr(case, field) for field in ARRAYS}

  def prepare(self, name: str, case: Case) -> concurrent.futures.Future:
    """Starts compiling check ``name`` for ``case`` (once per dtype, class count and mask)."""
    key = (name, case.dtype, case.classes, case.where is None)
    if key not in self._programs:
      try:
        lowered = self._jitted.trace(self._arrays(case), name, case.dtype, case.classes).lower()
      except Exception as err:  # noqa: BLE001 - reported as a failed row when evaluated
        failed = concurrent.futures.Future()
        failed.set_exception(err)
        self._programs[key] = failed
      else:
        self._programs[key] = self._pool.submit(lowered.compile)
    return self._programs[key]

  def __call__(self, name: str, case: Case) -> list:
    return self.prepare(name, case).result()(self._arrays(case))
