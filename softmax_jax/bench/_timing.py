"""Timing one case: this package's function beside its baselines, with roofline figures.

Each case compiles and warms up both implementations, checks that they agree
(a fast wrong answer is a failure, not a result), then times them
alternately with ``block_until_ready``.  Inputs rotate among several buffers
when they would fit in a cache.  The device's own elementwise-copy bandwidth
is measured in the same run, and every memory-bound case reports its
achieved GB/s (each input read once, each output written once) as a fraction
of it.  Temporary memory comes from the compiled executable's
``memory_analysis()``.  The cases themselves are built in ``softmax_jax.bench._cases``;
the tables, CSV and plot of the results in ``softmax_jax.bench._report``.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from softmax_jax import _arguments

CACHE_BYTES = 64 << 20  # inputs smaller than this rotate among several buffers


FAILED = "failed: "  # the start of the note of an implementation that did not compile or run


def is_failure(note: str) -> bool:
  """Whether ``note`` (of a :class:`Result`) says the implementation did not compile or run."""
  return note.startswith(FAILED)


@dataclasses.dataclass
class Result:
  """One implementation of one case: its times, bandwidth, memory and agreement."""

  op: str
  impl: str
  baseline: str
  shape: str
  dtype: str
  backend: str
  device: str
  median_ms: float
  p25_ms: float
  p75_ms: float
  bytes: int | None
  gbps: float | None
  fraction_of_copy: float | None
  temp_bytes: int | None
  speedup: float | None  # baseline time / this time (our rows only)
  correct: bool
  note: str = ""

  @property
  def failed(self) -> bool:
    """Whether the implementation did not compile or run (``note`` says why)."""
    return is_failure(self.note)


@dataclasses.dataclass(frozen=True)
class Case:
  """One operation at one shape: our function, its baseline(s), inputs and byte count."""

  op: str
  shape: tuple[int, ...]
  dtype: str
  ours: Callable
  baselines: dict[str, Callable]
  make_inputs: Callable[[jax.Array], tuple]
  bytes: int | None
  rtol: float


def _timed(fn, arg_sets, reps) -> list[float]:
  """Seconds of ``reps`` calls of ``fn``, each on the next of ``arg_sets``."""
  times = []
  for i in range(reps):
    args = arg_sets[i % len(arg_sets)]
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return times


def _temp_bytes(compiled) -> int | None:
  try:
    return int(compiled.memory_analysis().temp_size_in_bytes)
  except Exception:  # noqa: BLE001 - not every backend reports it
    return None


def _agree(a, b, rtol) -> bool:
  """Whether every leaf of ``a`` is within ``rtol`` of ``b`` (relative to ``max(1, max|b|)``)."""
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  if len(la) != len(lb):
    return False
  for x, y in zip(la, lb, strict=True):
    x = np.asarray(jnp.asarray(x, jnp.float32))
    y = np.asarray(jnp.asarray(y, jnp.float32))
    atol = rtol * max(1.0, float(np.abs(y).max()))
    if x.shape != y.shape or not np.allclose(x, y, rtol=rtol, atol=atol):
      return False
  return True


def copy_bandwidth(reps: int = 10, nbytes: int = 256 << 20) -> float:
  """GB/s of ``a * 1.0001`` on a float32 array of ``nbytes`` (read once, written once)."""
  n = nbytes // 4
  a = jnp.arange(n, dtype=jnp.float32)
  f = jax.jit(lambda a: a * 1.0001)
  jax.block_until_ready(f(a))
  t = statistics.median(_timed(f, [(a,)], reps))
  return 2 * 4 * n / t / 1e9


def run_case(case: Case, *, reps: int, key, copy_gbps: float | None) -> list[Result]:
  """Times ``case.ours`` and every baseline; returns our row first."""
  base_args = case.make_inputs(key)
  in_bytes = sum(int(a.size) * a.dtype.itemsize for a in jax.tree_util.tree_leaves(base_args))
  copies = int(min(8, max(1, CACHE_BYTES // max(in_bytes, 1)))) if in_bytes < CACHE_BYTES else 1
  arg_sets = [base_args] + [case.make_inputs(jax.random.fold_in(key, i)) for i in range(1, copies)]
  every = {"softmax_jax": case.ours, **case.baselines}
  compiled, temps, outs, failed = {}, {}, {}, {}
  for name, fn in every.items():
    # A function that does not compile or run here (a kernel the backend refuses, say)
    # becomes a failed row; the other implementations are still measured.
    try:
      compiled[name] = jax.jit(fn).lower(*base_args).compile()
      temps[name] = _temp_bytes(compiled[name])
      outs[name] = jax.block_until_ready(compiled[name](*base_args))
    except Exception as err:  # noqa: BLE001
      failed[name] = FAILED + _arguments.error_line(err, 200)
  impls = {name: fn for name, fn in every.items() if name not in failed}
  first_baseline = next(iter(case.baselines), None)
  correct = {name: True for name in impls}
  if (first_baseline is not None and np.isfinite(case.rtol)  # inf: a floor, not the same answer
      and not {"softmax_jax", first_baseline} & failed.keys()):
    ok = _agree(outs["softmax_jax"], outs[first_baseline], case.rtol)
    correct = {name: ok for name in impls}
  times = {name: [] for name in impls}
  for _ in range(2):  # warm-up
    for name in impls:
      _timed(compiled[name], arg_sets, 1)
  # Blocks of repetitions, alternating between implementations: each block
  # runs with its own data in cache, and a burst of load on a shared machine
  # falls on every implementation alike.
  blocks = 5
  for _ in range(blocks):
    for name in impls:
      times[name] += _timed(compiled[name], arg_sets, max(1, reps // blocks))
  common = dict(op=case.op, baseline=first_baseline or "",
                shape="x".join(map(str, case.shape)), dtype=case.dtype,
                backend=jax.default_backend(), device=jax.devices()[0].device_kind,
                bytes=case.bytes)
  results = []
  nan = float("nan")
  for name in every:
    if name in failed:
      results.append(Result(
          **common, impl=name, median_ms=nan, p25_ms=nan, p75_ms=nan, gbps=None,
          fraction_of_copy=None, temp_bytes=None, speedup=None, correct=False,
          note=failed[name]))
      continue
    ts = sorted(t * 1e3 for t in times[name])
    med = statistics.median(ts)
    gbps = case.bytes / (med / 1e3) / 1e9 if case.bytes else None
    frac = gbps / copy_gbps if gbps is not None and copy_gbps else None
    speedup = None
    if name == "softmax_jax" and first_baseline is not None and first_baseline in impls:
      speedup = statistics.median(times[first_baseline]) * 1e3 / med
    results.append(Result(
        **common, impl=name, median_ms=med, p25_ms=float(np.percentile(ts, 25)),
        p75_ms=float(np.percentile(ts, 75)), gbps=gbps, fraction_of_copy=frac,
        temp_bytes=temps[name], speedup=speedup, correct=correct[name]))
  return results


class Timings(NamedTuple):
  """What :func:`run` measured: one :class:`Result` per implementation of every case, and the
  elementwise-copy bandwidth (GB/s) measured first (``None`` if not measured)."""

  rows: list[Result]
  copy_gbps: float | None


def run(cases: Sequence[Case], *, reps: int = 15, seed: int = 0, measure_copy: bool = True,
        progress=None) -> Timings:
  """Runs every case; returns the rows and the copy bandwidth (GB/s) measured first.

  ``progress(i, n, case)`` is called before case ``i`` of ``n``.
  """
  copy_gbps = copy_bandwidth() if measure_copy else None
  key = jax.random.key(seed)
  rows: list[Result] = []
  for i, case in enumerate(cases):
    if progress is not None:
      progress(i, len(cases), case)
    rows += run_case(case, reps=reps, key=jax.random.fold_in(key, i), copy_gbps=copy_gbps)
  return Timings(rows, copy_gbps)
