"""softmax_jax.bench._cases: which cases each operation gets, and what they count."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from softmax_jax import _softmax, bench


def test_every_op_has_a_case_and_nothing_else_is_built():
  cases = bench.default_cases([(64, 32)], ["float32"], bench.OPS, jacobian_shape=(8, 8),
                              product_shape=(2, 64), linear_shape=(16, 8, 64))
  assert {c.op for c in cases} == set(bench.OPS)
  only = bench.default_cases([(64, 32), (8, 16)], ["float32", "bfloat16"],
                             ("softmax", "linear_xent_fwd_bwd"), linear_shape=(16, 8, 64))
  assert [(c.op, c.shape, c.dtype) for c in only] == [
      ("softmax", (64, 32), "float32"), ("softmax", (8, 16), "float32"),
      ("softmax", (64, 32), "bfloat16"), ("softmax", (8, 16), "bfloat16"),
      ("linear_xent_fwd_bwd", (16, 8, 64), "float32"),
      ("linear_xent_fwd_bwd", (16, 8, 64), "bfloat16")]


def test_bytes_count_each_input_read_and_each_output_written_once():
  by_op = {c.op: c for c in bench.row_cases(64, 32, "bfloat16")}
  assert by_op["softmax"].bytes == 2 * 2 * 64 * 32
  assert by_op["xent_int_fwd"].bytes == 2 * 64 * 32 + 4 * 64  # logits and int32 labels
  jac = bench.jacobian_cases(8, 4)
  assert {c.bytes for c in jac} == {4 * 8 * 4 * 4 + 4 * 8 * 4}
  assert bench.train_step_cases(16, 4, 3)[0].bytes is None  # not memory-bound
  assert by_op["softmax"].flops is None and by_op["softmax"].matmul is None


def test_the_linear_loss_counts_its_matmuls_and_names_the_reference_matmul():
  (case,) = bench.linear_cases(16, 8, 64, "bfloat16")
  assert case.bytes is None  # its cost is the matmuls
  assert case.flops == 3 * 2 * 16 * 8 * 64  # logits, dL/dh, dL/dW: 2 N H V each
  assert case.matmul == (16, 8, 64) and case.dtype == "bfloat16"


def test_the_jacobian_has_every_baseline_and_the_write_floor_is_not_compared():
  jac = bench.jacobian_cases(8, 4)
  assert [next(iter(c.baselines)) for c in jac] == [
      "vmap(jacfwd)", "vmap(jacrev)", "closed form y(I − y)", "outer-product write"]
  assert [np.isinf(c.rtol) for c in jac] == [False, False, False, True]


@pytest.mark.parametrize("dtype, tol", [("float32", 1e-4), ("bfloat16", 4 * 2.0**-7)])
def test_inputs_have_the_case_dtype_and_the_tolerance_follows_it(dtype, tol):
  (z,) = bench.row_cases(4, 8, dtype)[0].make_inputs(jax.random.key(0))
  assert z.dtype == jnp.dtype(dtype) and z.shape == (4, 8)
  assert bench.row_cases(4, 8, dtype)[0].rtol == pytest.approx(tol)


@pytest.mark.internals
def test_a_case_calls_the_package_function_when_it_runs(monkeypatch):
  # what the CLI's wrong-implementation test relies on: patching _softmax.softmax reaches
  # the cases already built
  case = bench.row_cases(4, 8, "float32")[0]
  monkeypatch.setattr(_softmax, "softmax", lambda z: jnp.zeros_like(z) - 1)
  (z,) = case.make_inputs(jax.random.key(0))
  assert float(case.ours(z).sum()) == -32
