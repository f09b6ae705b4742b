"""Timing one case: this package's function beside its baselines, with roofline figures.

Each case compiles and warms up every implementation, checks that they agree (a fast
wrong answer is a failure, not a result), then times them alternately with
``block_until_ready``.  Inputs rotate among several buffers when they would fit in a
cache.  The compile time of each implementation (trace, lower and compile of a fresh
``jax.jit``) and its first call are recorded beside the steady-state times.

The roofline of a case is measured in the same run at the case's own size: an
elementwise copy ``a * (1 + eps)`` of the case's dtype that reads and writes as many
bytes as the case moves (its buffers rotating by the same rule), so that ``of copy``
is a fraction of what this device does on data of that size, in cache or not; for
the linear loss, also the plain matmul ``[N, H] @ [H, V]`` of its shape and dtype.
Each reference is timed in the blocks of the first case that needs it and reused
for the cases of the same size (see ``memo`` of :func:`run_case`).  Temporary memory
comes from the compiled executable's ``memory_analysis()``.  The cases themselves are
built in ``softmax_jax.bench._cases``; the tables, CSV and plot in
``softmax_jax.bench._report``.
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
  """One implementation of one case: its times, bandwidth, memory and agreement.

  ``gbps`` is the case's bytes over the median time; ``ref_gbps`` that of the elementwise
  copy of the same bytes and dtype timed in the same run, and ``fraction_of_copy`` their
  ratio.  ``gflops`` (the case's minimum floating-point work over its time),
  ``ref_gflops`` (the plain matmul of the case's shape) and ``fraction_of_matmul`` are set
  for the cases whose cost is matmuls (the linear loss).  ``compile_ms`` is the trace,
  lower and compile of a fresh ``jax.jit``; ``first_call_ms`` that plus the first
  execution (what a first call costs).  The fields after ``note`` have defaults, so
  rows written before they existed still load.
  """

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
  ref_gbps: float | None = None
  gflops: float | None = None
  ref_gflops: float | None = None
  fraction_of_matmul: float | None = None
  compile_ms: float | None = None
  first_call_ms: float | None = None

  @property
  def failed(self) -> bool:
    """Whether the implementation did not compile or run (``note`` says why)."""
    return is_failure(self.note)


@dataclasses.dataclass(frozen=True)
class Case:
  """One operation at one shape: our function, its baseline(s), inputs and byte count.

  ``flops`` is the least floating-point work of the operation and ``matmul`` the
  ``(N, H, V)`` of the plain matmul it is judged against (both ``None`` unless its cost
  is matmuls).
  """

  op: str
  shape: tuple[int, ...]
  dtype: str
  ours: Callable
  baselines: dict[str, Callable]
  make_inputs: Callable[[jax.Array], tuple]
  bytes: int | None
  rtol: float
  flops: int | None = None
  matmul: tuple[int, int, int] | None = None


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


def _copies(in_bytes: int) -> int:
  """How many buffers inputs of ``in_bytes`` rotate among: up to 8 while they fit in cache."""
  return int(min(8, max(1, CACHE_BYTES // max(in_bytes, 1)))) if in_bytes < CACHE_BYTES else 1


def copy_bandwidth(reps: int = 10, nbytes: int = 256 << 20) -> float:
  """GB/s of ``a * 1.0001`` on a float32 array of ``nbytes`` (read once, written once)."""
  n = nbytes // 4
  a = jnp.arange(n, dtype=jnp.float32)
  f = jax.jit(lambda a: a * 1.0001)
  jax.block_until_ready(f(a))
  t = statistics.median(_timed(f, [(a,)], reps))
  return 2 * 4 * n / t / 1e9


class _Reference(NamedTuple):
  """A roofline program: its memo key, function, rotating inputs, and the work of one call
  (bytes read and written for the copy, floating-point operations for the matmul)."""

  key: tuple
  fn: Callable
  arg_sets: list[tuple]
  work: int


def _copy_reference(nbytes: int, dtype: str) -> _Reference:
  """``a * (1 + eps)`` on ``nbytes / 2`` of ``dtype`` (the scale is not 1 in any dtype)."""
  dt = jnp.dtype(dtype)
  n = max(1, nbytes // (2 * dt.itemsize))
  scale = 1 + float(jnp.finfo(dt).eps)
  sets = [(jnp.full((n,), 1 + i, dt),) for i in range(_copies(n * dt.itemsize))]
  return _Reference(("copy", nbytes, dt.name), lambda a: a * jnp.asarray(scale, dt), sets,
                    2 * n * dt.itemsize)


def _matmul_reference(shape: tuple[int, int, int], dtype: str, key) -> _Reference:
  """``x @ w`` of ``[N, H] @ [H, V]`` in ``dtype``: ``2 N H V`` floating-point operations."""
  n, h, v = shape
  dt = jnp.dtype(dtype)

  def make(k):
    k1, k2 = jax.random.split(k)
    return (jax.random.normal(k1, (n, h)).astype(dt), jax.random.normal(k2, (h, v)).astype(dt))

  sets = [make(jax.random.fold_in(key, i)) for i in range(_copies((n * h + h * v) * dt.itemsize))]
  return _Reference(("matmul", shape, dt.name), lambda x, w: x @ w, sets, 2 * n * h * v)


class _Compiled(NamedTuple):
  """An implementation compiled and run once: the seconds of trace + lower + compile, and
  of those and the first execution together."""

  executable: Callable
  output: object
  compile_s: float
  first_call_s: float


def _compile(fn, args) -> _Compiled:
  """``fn`` compiled for ``args`` and run once, through a fresh wrapper, so that no compiled
  program of an earlier case is reused."""
  t0 = time.perf_counter()
  executable = jax.jit(lambda *a: fn(*a)).lower(*args).compile()
  t1 = time.perf_counter()
  out = jax.block_until_ready(executable(*args))
  return _Compiled(executable, out, t1 - t0, time.perf_counter() - t0)


def run_case(case: Case, *, reps: int, key, copy_gbps: float | None = None,
             reference: bool = True, memo: dict | None = None) -> list[Result]:
  """Times ``case.ours`` and every baseline; returns our row first.

  With ``reference`` (the default) the same-bytes copy (and the matmul of a case with
  ``matmul``) is timed beside the implementations, or taken from ``memo`` (a dict shared
  by the cases of one run, filled here) if an earlier case measured it; ``copy_gbps`` is
  then unused.  Without it, nothing else is timed and ``fraction_of_copy`` is over
  ``copy_gbps`` (``None`` if that is ``None``).
  """
  memo = {} if memo is None else memo
  base_args = case.make_inputs(key)
  in_bytes = sum(int(a.size) * a.dtype.itemsize for a in jax.tree_util.tree_leaves(base_args))
  arg_sets = [base_args] + [case.make_inputs(jax.random.fold_in(key, i))
                            for i in range(1, _copies(in_bytes))]
  every = {"softmax_jax": case.ours, **case.baselines}
  compiled, temps, failed = {}, {}, {}
  for name, fn in every.items():
    # A function that does not compile or run here (a kernel the backend refuses, say)
    # becomes a failed row; the other implementations are still measured.
    try:
      compiled[name] = _compile(fn, base_args)
      temps[name] = _temp_bytes(compiled[name].executable)
    except Exception as err:  # noqa: BLE001
      failed[name] = FAILED + _arguments.error_line(err, 200)
  impls = {name: fn for name, fn in every.items() if name not in failed}
  refs = []
  if reference and case.bytes:
    refs.append(_copy_reference(case.bytes, case.dtype))
  if reference and case.matmul:
    refs.append(_matmul_reference(case.matmul, case.dtype, jax.random.fold_in(key, 99)))
  timed = {name: (compiled[name].executable, arg_sets) for name in impls}
  for ref in refs:
    if ref.key not in memo:
      try:
        timed[ref.key] = (_compile(ref.fn, ref.arg_sets[0]).executable, ref.arg_sets)
      except Exception:  # noqa: BLE001 - no roofline, the rows keep their own figures
        memo[ref.key] = None
  first_baseline = next(iter(case.baselines), None)
  correct = {name: True for name in impls}
  if (first_baseline is not None and np.isfinite(case.rtol)  # inf: a floor, not the same answer
      and not {"softmax_jax", first_baseline} & failed.keys()):
    ok = _agree(compiled["softmax_jax"].output, compiled[first_baseline].output, case.rtol)
    correct = {name: ok for name in impls}
  times = {name: [] for name in timed}
  for _ in range(2):  # warm-up
    for fn, sets in timed.values():
      _timed(fn, sets, 1)
  # Blocks of repetitions, alternating between implementations (and the references):
  # each block runs with its own data in cache, and a burst of load on a shared machine
  # falls on every implementation alike.
  blocks = 5
  for _ in range(blocks):
    for name, (fn, sets) in timed.items():
      times[name] += _timed(fn, sets, max(1, reps // blocks))
  for ref in refs:
    if ref.key in times:
      memo[ref.key] = ref.work / statistics.median(times[ref.key]) / 1e9
  ref_gbps = memo.get(refs[0].key) if refs and case.bytes else copy_gbps
  ref_gflops = memo.get(refs[-1].key) if refs and case.matmul else None
  common = dict(op=case.op, baseline=first_baseline or "",
                shape="x".join(map(str, case.shape)), dtype=case.dtype,
                backend=jax.default_backend(), device=jax.devices()[0].device_kind,
                bytes=case.bytes, ref_gbps=ref_gbps if case.bytes else None,
                ref_gflops=ref_gflops)
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
    gflops = case.flops / (med / 1e3) / 1e9 if case.flops else None
    speedup = None
    if name == "softmax_jax" and first_baseline is not None and first_baseline in impls:
      speedup = statistics.median(times[first_baseline]) * 1e3 / med
    results.append(Result(
        **common, impl=name, median_ms=med, p25_ms=float(np.percentile(ts, 25)),
        p75_ms=float(np.percentile(ts, 75)), gbps=gbps, fraction_of_copy=_ratio(gbps, ref_gbps),
        temp_bytes=temps[name], speedup=speedup, correct=correct[name], gflops=gflops,
        fraction_of_matmul=_ratio(gflops, ref_gflops), compile_ms=compiled[name].compile_s * 1e3,
        first_call_ms=compiled[name].first_call_s * 1e3))
  return results


def _ratio(a: float | None, b: float | None) -> float | None:
  return a / b if a is not None and b else None


class Timings(NamedTuple):
  """What :func:`run` measured: one :class:`Result` per implementation of every case, and the
  elementwise-copy bandwidth (GB/s) of a large array measured first (``None`` if not
  measured; context only: each row's ``fraction_of_copy`` is over its own ``ref_gbps``)."""

  rows: list[Result]
  copy_gbps: float | None


def run(cases: Sequence[Case], *, reps: int = 15, seed: int = 0, measure_copy: bool = True,
        progress=None, reference: bool = True) -> Timings:
  """Runs every case; returns the rows and the large-array copy bandwidth (GB/s).

  ``progress(i, n, case)`` is called before case ``i`` of ``n``.  With ``reference``, each
  row's roofline is measured at its own size (once per size and dtype in the run); without,
  it is the large-array copy.
  """
  copy_gbps = copy_bandwidth() if measure_copy else None
  key = jax.random.key(seed)
  rows: list[Result] = []
  memo: dict = {}
  for i, case in enumerate(cases):
    if progress is not None:
      progress(i, len(cases), case)
    rows += run_case(case, reps=reps, key=jax.random.fold_in(key, i), copy_gbps=copy_gbps,
                     reference=reference, memo=memo)
  return Timings(rows, copy_gbps)
