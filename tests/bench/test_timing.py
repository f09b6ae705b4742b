"""softmax_jax.bench._timing: a case is timed beside its baseline, and a wrong or failing
implementation is marked, not timed as if it were right.  Speed itself is not tested."""

import math

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
                              key=jax.random.key(0), copy_gbps=10.0)
  assert (ours.impl, base.impl) == ("softmax_jax", "jax.nn.softmax")
  assert ours.baseline == base.baseline == "jax.nn.softmax"
  assert ours.correct and base.correct and not ours.failed
  assert ours.shape == "4x8" and ours.backend == jax.default_backend()
  for r in (ours, base):
    assert 0 < r.p25_ms <= r.median_ms <= r.p75_ms
    assert r.gbps == pytest.approx(2 * 4 * 32 / (r.median_ms / 1e3) / 1e9)
    assert r.fraction_of_copy == pytest.approx(r.gbps / 10.0)
  assert ours.speedup > 0 and base.speedup is None  # the ratio is on our row only


def test_a_wrong_answer_marks_both_implementations():
  rows = bench.run_case(_case(lambda z: jax.nn.softmax(z) * 1.01), reps=1,
                        key=jax.random.key(0), copy_gbps=None)
  assert [r.correct for r in rows] == [False, False]
  assert all(r.fraction_of_copy is None for r in rows)  # no copy bandwidth measured
  assert [bench.status(r) for r in rows] == ["WRONG", "WRONG"]


def test_a_floor_with_infinite_tolerance_is_not_compared():
  # the outer-product write of the Jacobian cases: a cost floor, not the same answer
  rows = bench.run_case(_case(lambda z: jax.nn.softmax(z) * 2, rtol=float("inf")), reps=1,
                        key=jax.random.key(0), copy_gbps=None)
  assert all(r.correct for r in rows)


def test_an_implementation_that_fails_is_a_failed_row_and_the_baseline_is_still_timed():
  def broken(z):
    raise NotImplementedError("no kernel | for this backend")

  ours, base = bench.run_case(_case(broken), reps=2, key=jax.random.key(0), copy_gbps=None)
  assert ours.failed and not ours.correct and math.isnan(ours.median_ms)
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
                 copy_gbps=None)
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


def test_copy_bandwidth_is_measured():
  assert bench.copy_bandwidth(reps=2, nbytes=1 << 20) > 0


def test_agreement_compares_every_leaf():
  from softmax_jax.bench._timing import _agree

  one = (jnp.ones(3), jnp.zeros(2))
  assert _agree(one, (jnp.ones(3), jnp.zeros(2)), 1e-6)
  assert not _agree(one, (jnp.ones(3), jnp.full(2, 1e-3)), 1e-6)  # relative to max(1, |b|)
  assert not _agree(one, (jnp.ones(3),), 1e-6)
  assert not _agree((jnp.ones(3),), (jnp.ones(4),), 1e-6)
