"""softmax_jax.verify._compare: one result against one reference under a bound."""

import numpy as np
import pytest

from softmax_jax.verify import CheckResult, MethodError, compare
from softmax_jax.verify._compare import max_per_segment
from softmax_jax.verify._tolerances import Bound, bound

B = Bound(rtol=1e-3, atol=0.0, n=1, rule="test")


def test_the_bound_is_rtol_times_the_scale_plus_atol_plus_extra():
  want = np.array([10.0, 1.0])
  assert compare(want + [0.0, 9e-3], want, "m", bound=B).passed  # 1e-3 × max|want| = 1e-2
  assert not compare(want + [0.0, 1.1e-2], want, "m", bound=B).passed
  assert not compare(want + [0.0, 9e-3], want, "m", bound=B, scale=1.0).passed
  assert compare(want + [0.0, 9e-3], want, "m", bound=B, scale=1.0, extra_atol=8e-3).passed
  assert compare(want + [0.0, 9e-3], want, "m", bound=B._replace(atol=8e-3), scale=1.0).passed
  # Σ|terms| raises the scale of an entry, never lowers it
  assert compare(want + [0.0, 0.9], want, "m", bound=B, magnitude=[0.0, 1000.0]).passed
  assert not compare(want + [0.0, 0.9], want, "m", bound=B, magnitude=[0.0, 1e-9]).passed


def test_the_report_names_the_entry_closest_to_its_bound():
  want = np.array([[10.0, 1.0], [1.0, 1.0]])
  got = want + [[5e-3, 0.0], [0.0, 8e-3]]
  err = compare(got, want, "jacrev", bound=B, scale=[[10.0], [1.0]],
                index_of=lambda k: divmod(k, 2), scale_rule="per row")
  assert not err.passed and err.worst_index == (1, 1)  # 8e-3 > 1e-3, where 5e-3 < 1e-2
  assert err.error == pytest.approx(8e-3) and err.allowed == pytest.approx(1e-3)
  assert err.max_abs_err == pytest.approx(8e-3) and err.max_rel_err == pytest.approx(8e-3)
  assert err.scale_rule == "per row" and err.rule == "test"
  text = str(err)
  assert text.startswith("jacrev   error  8.00e-03 vs bound  1.00e-03 at (1, 1)")
  assert text.endswith("FAIL")


def test_nans_in_the_same_places_and_equal_infinities_agree():
  want = np.array([np.nan, np.inf, -np.inf, 1.0])
  assert compare(want.copy(), want, "m", bound=B).passed
  assert not compare(np.array([0.0, np.inf, -np.inf, 1.0]), want, "m", bound=B).passed
  assert not compare(np.array([np.nan, -np.inf, -np.inf, 1.0]), want, "m", bound=B).passed
  wrong = compare(np.array([np.nan, np.inf, -np.inf, np.nan]), want, "m", bound=B)
  assert not wrong.passed and wrong.worst_index == (3,)


def test_the_default_bound_catches_one_percent_in_float32():
  want = np.linspace(-1.0, 1.0, 1000)
  b = bound("float32", 1000)
  assert compare(want.astype(np.float32), want, "m", bound=b).passed
  assert not compare(want * 1.01, want, "m", bound=b).passed


def test_scale_is_the_largest_entry_of_each_segment():
  scale = max_per_segment(np.array([[1.0, -3.0, np.inf, 0.5, 2.0]]), [3, 2])
  np.testing.assert_array_equal(scale, [[3.0, 3.0, 3.0, 2.0, 2.0]])


def test_a_check_result_passes_when_every_method_does():
  ok = MethodError("jacfwd", 0.0, 0.0, (0,), 1e-6, 0.0, True)
  bad = MethodError("fd", 1.0, 1.0, (0,), 1e-6, 0.0, False)
  result = CheckResult("jacobian", "float32", (3, 3), (ok, bad))
  assert not result.passed and CheckResult("jacobian", "float32", (3, 3), (ok,)).passed
  assert result["fd"] is bad
  with pytest.raises(KeyError):
    result["jacrev"]
  assert str(result).splitlines()[0] == "jacobian check, float32, compared shape (3, 3): FAILED"
