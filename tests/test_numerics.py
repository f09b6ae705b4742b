"""The label rule of ``_numerics.canonical_labels`` through the public XLA loss: any integer
dtype, ``ignore_index`` checked against it, nothing wraps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import softmax_jax as sj

import reference as ref
from _util import logits

X64 = pytest.mark.x64  # 64-bit label dtypes exist as JAX arrays only under x64


@pytest.mark.parametrize("dtype,c", [
    (jnp.uint8, 256), (jnp.int8, 128), (jnp.int16, 32768), (jnp.uint16, 65536),
    (jnp.int32, 5), pytest.param(jnp.int64, 5, marks=X64), (jnp.uint32, 5),
    pytest.param(jnp.uint64, 5, marks=X64)])
def test_the_largest_label_a_narrow_dtype_holds_is_valid(rng, dtype, c):
  z = logits(rng, (2, c), jnp.float32)
  top = np.iinfo(np.dtype(dtype)).max if c > np.iinfo(np.dtype(dtype)).max // 2 else c - 1
  labels = jnp.array([min(top, c - 1), 0], dtype)
  assert labels.dtype == dtype
  got = sj.cross_entropy_with_integer_labels(z, labels, reduction="none")
  want = sj.cross_entropy_with_integer_labels(z, labels.astype(jnp.int32), reduction="none")
  np.testing.assert_array_equal(got, want)
  np.testing.assert_allclose(got, ref.torch_cross_entropy(np.asarray(z, np.float64),
                                                          np.asarray(labels, np.int64),
                                                          reduction="none"), rtol=1e-5)


@pytest.mark.x64
def test_labels_beyond_32_bits_are_invalid_not_wrapped(rng):
  z = logits(rng, (3, 4), jnp.float64)
  labels = jnp.array([2**32 + 1, 1, -(2**33)], jnp.int64)
  loss = sj.cross_entropy_with_integer_labels(z, labels, reduction="none")
  assert np.isnan(loss[0]) and np.isfinite(loss[1]) and np.isnan(loss[2])
  g = jax.grad(lambda z: sj.cross_entropy_with_integer_labels(z, labels, reduction="sum"))(z)
  assert np.isnan(g[0]).all() and np.isfinite(g[1]).all()


def test_numpy_int64_labels_with_x64_off_are_not_wrapped():
  z = jnp.zeros((2, 4), jnp.float32)
  labels = np.array([2**32 + 1, 1], np.int64)
  loss = sj.cross_entropy_with_integer_labels(z, labels, reduction="none")
  assert np.isnan(loss[0])
  np.testing.assert_allclose(loss[1], np.log(4.0), rtol=1e-6)


@pytest.mark.parametrize("dtype,ignore", [(jnp.uint8, -100), (jnp.int8, 200),
                                          (jnp.int32, 2**40), (jnp.uint16, -1)])
def test_an_ignore_index_the_dtype_cannot_hold_is_refused(dtype, ignore):
  z = jnp.zeros((2, 3))
  with pytest.raises(ValueError, match=f"ignore_index={ignore} cannot occur in labels of dtype"):
    sj.cross_entropy_with_integer_labels(z, jnp.array([0, 1], dtype), ignore_index=ignore)


@pytest.mark.parametrize("bad", ["1", 1.0, True, np.bool_(False)])
def test_ignore_index_must_be_an_integer(bad):
  z = jnp.zeros((2, 3))
  with pytest.raises(TypeError, match="ignore_index must be an int or None"):
    sj.cross_entropy_with_integer_labels(z, jnp.array([0, 1]), ignore_index=bad)


def test_ignore_index_none_ignores_nothing():
  z = jnp.zeros((2, 3))
  loss = sj.cross_entropy_with_integer_labels(z, jnp.array([0, 1]), ignore_index=None,
                                              reduction="none")
  np.testing.assert_allclose(loss, np.log(3.0), rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.uint8, jnp.int8, jnp.int16,
                                   pytest.param(jnp.int64, marks=X64)])
def test_ignore_index_in_narrow_dtypes(rng, dtype):
  z = logits(rng, (4, 5), jnp.float32)
  ignore = int(np.iinfo(np.dtype(dtype)).max)
  labels = jnp.array([0, ignore, 4, 2], dtype)
  got = sj.cross_entropy_with_integer_labels(z, labels, ignore_index=ignore)
  keep = np.array([0, 2, 3])
  want = sj.cross_entropy_with_integer_labels(z[keep], jnp.array([0, 4, 2]))
  np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("label", [-1, -100, 5, 7])
def test_out_of_range_labels_give_nan_for_their_rows_only(rng, label):
  z = logits(rng, (3, 5), jnp.float32)
  labels = jnp.array([1, label, 2])
  loss = sj.cross_entropy_with_integer_labels(z, labels, reduction="none")
  assert np.isnan(loss[1]) and np.isfinite(np.asarray(loss)[[0, 2]]).all()


@pytest.mark.parametrize("loss", ["integer", "probability"])
def test_one_confident_row_among_uncertain_ones_keeps_its_exact_gradient(loss):
  # the tail behind 1 − y_t is computed only when some row is dominant (y_max > 1/2): a
  # confident row gets the exact value; a batch of uncertain rows skips the tail's pass
  z = jnp.zeros((4, 6)).at[0, 2].set(20.0)  # row 0: 1 − y_2 = 5e^-20 / (1 + 5e^-20)
  labels = jnp.array([2, 0, 1, 5])

  def grad(a, lab):
    if loss == "integer":
      fn = lambda b: sj.cross_entropy_with_integer_labels(b, lab, reduction="sum")  # noqa: E731
    else:
      fn = lambda b: sj.cross_entropy(b, jax.nn.one_hot(lab, 6), reduction="sum")  # noqa: E731
    return np.asarray(jax.jit(jax.grad(fn))(a), np.float64)

  g = grad(z, labels)
  assert g[0, 2] == pytest.approx(-5 * np.exp(-20.0) / (1 + 5 * np.exp(-20.0)), rel=1e-5)
  rest = grad(z[1:], labels[1:])  # no dominant row
  np.testing.assert_allclose(rest, g[1:], rtol=1e-6)
  np.testing.assert_allclose(rest, jax.nn.softmax(z[1:]) - jax.nn.one_hot(labels[1:], 6),
                             atol=1e-7)
