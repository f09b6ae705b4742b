"""softmax_jax.verify._pytrees: flat positions back to pytree indices, batches, Jacobians."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from softmax_jax.verify import _pytrees


def test_a_flat_position_names_its_leaf_and_index():
  tree = {"b": jnp.zeros(2), "w": jnp.zeros((2, 3))}
  index_of = _pytrees.flat_index_of(tree)
  assert index_of(0) == ("['b']", 0)
  assert index_of(2) == ("['w']", 0, 0) and index_of(7) == ("['w']", 1, 2)
  assert _pytrees.flat_index_of(jnp.zeros((2, 2)))(3) == (1, 1)  # a bare array: no path
  assert _pytrees.leaf_sizes(tree) == [2, 6]


def test_batch_axes_must_be_shared_by_every_leaf():
  tree = {"a": jnp.zeros((4, 3)), "b": jnp.zeros((4,))}
  assert _pytrees.batch_shape(tree, 1) == (4,)
  with pytest.raises(ValueError, match=r"batch_dims=1 but the leaves of x have leading shapes"):
    _pytrees.batch_shape({"a": jnp.zeros((4, 3)), "b": jnp.zeros((5,))}, 1)
  one = _pytrees.example_structure(tree, 1)
  assert one["a"].shape == (3,) and one["b"].shape == ()


def test_per_example_sees_one_example_with_its_batch_axis():
  seen = []

  def fn(x):
    seen.append(x.shape)
    return x * 2

  single = _pytrees.per_example(fn, 2)
  out = _pytrees.vmap_leading(single, 2)(jnp.ones((2, 3, 5)))
  assert seen == [(1, 1, 5)] and out.shape == (2, 3, 5)


def test_a_nested_jacobian_becomes_one_dense_matrix_per_example():
  x = {"a": jnp.array([1.0, 2.0]), "b": jnp.array(3.0)}

  def f(p):
    return {"y": p["a"] * p["b"], "z": jnp.sum(p["a"])}

  dense = _pytrees.dense_jacobian(jax.jacfwd(f)(x), jax.eval_shape(f, x), x)
  np.testing.assert_array_equal(dense, [[[3.0, 0.0, 1.0], [0.0, 3.0, 2.0], [1.0, 1.0, 0.0]]])


def test_argument_errors_name_the_leaf():
  with pytest.raises(ValueError, match=r"x\['n'\] has dtype int32 and shape \(2,\)"):
    _pytrees.require_float({"n": jnp.arange(2)}, "x")
  with pytest.raises(ValueError, match=r"got\['a'\] has shape \(3,\) but want\['a'\] has shape"):
    _pytrees.require_same_structure({"a": jnp.zeros(3)}, {"a": jnp.zeros(2)}, "got", "want")
  with pytest.raises(ValueError, match="has structure"):
    _pytrees.require_same_structure([jnp.zeros(3)], (jnp.zeros(3),), "got", "want")
