"""softmax_jax.bench._timing: a case is timed beside its baseline and its roofline at its own
size, with its compile time, and a wrong or failing implementation is marked, not timed as
if it were right.  Speed itself is not tested."""

import math
import time

import jax
import jax.numpy as jnp
import pytest

from softmax_jax import bench

SHAPE = (4, 8)


def _case(ours, baseline=jax.nn.softmax, *, rtol=1e-5, make_inputs=None):
  make = make_inputs or (lambda k: (jax.random.normal(k, SHAPE),))
  return bench.Case("softmax", SHAPE, "float32", ours, {"jax.nn.softmax": baseline}, make,
                    2 * 4 * math.prod(SHAPE), rtol)


def test_run_case_times_ours_then_the_baseline_with_its_figures():
  ours, base = bench.run_case(_case(lambda z: jax.nn.softmax(z) + 0.0), reps=5,
                              key=jax.random.key(0))
  assert (ours.impl, base.impl) == ("softmax_jax", "jax.nn.softmax")
  assert ours.baseline == base.baseline == "jax.nn.softmax"
  assert ours.correct and base.correct and not ours.failed
  assert ours.shape == "4x8" and ours.backend == jax.default_backend()
  for r in (ours, base):
    assert 0 < r.p25_ms <= r.median_ms <= r.p75_ms
    assert r.gbps == pytest.approx(2 * 4 * 32 / (r.median_ms / 1e3) / 1e9)
    # the roofline: the copy of the same bytes and dtype, timed in the same run
    assert r.ref_gbps > 0 and r.fraction_of_copy == pytest.approx(r.gbps / r.ref_gbps)
    assert r.gflops is r.ref_gflops is r.fraction_of_matmul is None  # not a matmul case
    assert 0 < r.compile_ms <= r.first_call_ms
  assert ours.ref_gbps == base.ref_gbps  # one reference for the case
  assert ours.speedup > 0 and base.speedup is None  # the ratio is on our row only


def test_without_the_reference_the_fraction_is_over_the_figure_given():
  rows = bench.run_case(_case(jax.nn.softmax), reps=1, key=jax.random.key(0), copy_gbps=10.0,
                        reference=False)
  assert all(r.ref_gbps == 10.0 and r.fraction_of_copy == pytest.approx(r.gbps / 10.0)
             for r in rows)
  rows = bench.run_case(_case(jax.nn.softmax), reps=1, key=jax.random.key(0), reference=False)
  assert all(r.ref_gbps is None and r.fraction_of_copy is None for r in rows)


def test_the_reference_is_measured_once_per_bytes_and_dtype():
  memo = {}
  first = bench.run_case(_case(jax.nn.softmax), reps=1, key=jax.random.key(0), memo=memo)
  assert list(memo) == [("copy", 2 * 4 * 32, "float32")]
  memo[("copy", 2 * 4 * 32, "float32")] = 123.0  # a second case of that size reads it back
  again = bench.run_case(_case(jax.nn.log_softmax, jax.nn.log_softmax), reps=1,
                         key=jax.random.key(1), memo=memo)
  assert first[0].ref_gbps != 123.0 and {r.ref_gbps for r in again} == {123.0}
  other = bench.Case("softmax", (4, 16), "bfloat16", jax.nn.softmax,
                     {"jax.nn.softmax": jax.nn.softmax},
                     lambda k: (jax.random.normal(k, (4, 16), jnp.bfloat16),), 2 * 2 * 64, 1e-2)
  bench.run_case(other, reps=1, key=jax.random.key(2), memo=memo)
  assert ("copy", 2 * 2 * 64, "bfloat16") in memo and len(memo) == 2


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_the_copy_reference_moves_the_case_bytes_and_is_not_folded_away(dtype):
  from softmax_jax.bench._timing import _copy_reference

  ref = _copy_reference(1 << 20, dtype)
  (a,) = ref.arg_sets[0]
  assert a.dtype == jnp.dtype(dtype) and ref.work == 1 << 20 == 2 * a.size * a.dtype.itemsize
  assert len(ref.arg_sets) == 8  # in cache: it rotates among buffers as the case does
  out = jax.jit(ref.fn)(a)
  assert out.dtype == a.dtype and bool((out != a).all())  # the scale is not 1 in this dtype


def test_a_matmul_case_is_judged_against_the_plain_matmul_of_its_shape():
  (case,) = bench.linear_cases(16, 8, 64)
  ours, base = bench.run_case(case, reps=1, key=jax.random.key(0))
  assert ours.correct and base.correct
  for r in (ours, base):
    assert r.gbps is r.ref_gbps is r.fraction_of_copy is None  # not memory-bound
    assert r.gflops == pytest.approx(3 * 2 * 16 * 8 * 64 / (r.median_ms / 1e3) / 1e9)
    assert r.ref_gflops > 0 and r.fraction_of_matmul == pytest.approx(r.gflops / r.ref_gflops)


def test_compile_time_is_the_trace_and_compile_of_each_implementation_not_the_call():
  traces = []

  def slow_to_trace(z):
    traces.append(1)
    time.sleep(0.2)  # at trace time only: the compiled program does not sleep
    return jax.nn.softmax(z)

  for _ in range(2):  # a fresh program every time, never an earlier case's
    ours, base = bench.run_case(_case(slow_to_trace), reps=2, key=jax.random.key(0),
                                reference=False)
    assert ours.compile_ms >= 200 and ours.median_ms < 200 and ours.first_call_ms >= 200
    assert base.compile_ms < ours.compile_ms
  assert len(traces) == 2


def test_a_wrong_answer_marks_both_implementations():
  rows = bench.run_case(_case(lambda z: jax.nn.softmax(z) * 1.01), reps=1,
                        key=jax.random.key(0))
  assert [r.correct for r in rows] == [False, False]
  assert all(r.fraction_of_copy > 0 for r in rows)  # timed, with every figure, yet wrong
  assert [bench.status(r) for r in rows] == ["WRONG", "WRONG"]


def test_a_floor_with_infinite_tolerance_is_not_compared():
  # the outer-product write of the Jacobian cases: a cost floor, not the same answer
  rows = bench.run_case(_case(lambda z: jax.nn.softmax(z) * 2, rtol=float("inf")), reps=1,
                        key=jax.random.key(0), copy_gbps=None)
  assert all(r.correct for r in rows)


def test_an_implementation_that_fails_is_a_failed_row_and_the_baseline_is_still_timed():
  def broken(z):
    raise NotImplementedError("no kernel | for this backend")

  ours, base = bench.run_case(_case(broken), reps=2, key=jax.random.key(0))
  assert ours.failed and not ours.correct and math.isnan(ours.median_ms)
  assert ours.compile_ms is None and ours.fraction_of_copy is None
  assert ours.note == "failed: NotImplementedError: no kernel | for this backend"
  assert bench.status(ours) == "failed: NotImplementedError: no kernel / for this backend"
  assert ours.speedup is None and ours.temp_bytes is None
  assert base.median_ms > 0 and base.correct and not base.failed


def test_small_inputs_rotate_among_several_buffers():
  keys = []

  def make(k):
    keys.append(k)
    return (jax.random.normal(k, SHAPE),)

  bench.run_case(_case(jax.nn.softmax, make_inputs=make), reps=1, key=jax.random.key(0),
                 reference=False)
  assert len(keys) == 8  # far below the cache size: eight copies of the inputs
  assert len({int(jax.random.key_data(k).sum()) for k in keys}) == 8


def test_run_reports_progress_and_returns_rows_and_copy_bandwidth():
  seen = []
  case = _case(jax.nn.softmax)
  timings = bench.run([case], reps=1, measure_copy=False,
                      progress=lambda i, n, c: seen.append((i, n, c)))
  assert seen == [(0, 1, case)]
  rows, copy_gbps = timings
  assert copy_gbps is None and timings.rows is rows
  assert [r.impl for r in rows] == ["softmax_jax", "jax.nn.softmax"]
  assert all(r.ref_gbps > 0 for r in rows)  # each case's own roofline, without the large copy


def test_copy_bandwidth_is_measured():
  assert bench.copy_bandwidth(reps=2, nbytes=1 << 20) > 0


def test_agreement_compares_every_leaf():
  from softmax_jax.bench._timing import _agree

  one = (jnp.ones(3), jnp.zeros(2))
  assert _agree(one, (jnp.ones(3), jnp.zeros(2)), 1e-6)
  assert not _agree(one, (jnp.ones(3), jnp.full(2, 1e-3)), 1e-6)  # relative to max(1, |b|)
  assert not _agree(one, (jnp.ones(3),), 1e-6)
  assert not _agree((jnp.ones(3),), (jnp.ones(4),), 1e-6)
