"""The benchmark's cases: each operation of :data:`OPS` at a shape, with its baselines.

A :class:`~softmax_jax.bench._timing.Case` holds our function, its baselines
(``jax.nn``, optax, autodiff, or a memory floor), a function making its inputs from a
key, the bytes a memory-bound implementation must move (or, for the linear loss, the
floating-point work and the matmul it is judged against), and the tolerance within
which the first baseline must agree.  Our functions are looked up in their modules
(``_softmax.softmax``, ...) when a case runs, so a patched function is what is timed.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax

from softmax_jax import _jacobian, _softmax, losses
from softmax_jax.bench._timing import Case


def _normal(key, shape, dtype, scale=4.0):
  """Normal logits of standard deviation ``scale``, drawn in float32, rounded to ``dtype``."""
  return (jax.random.normal(key, shape, jnp.float32) * scale).astype(dtype)


def _labels(key, n, c):
  """``n`` integer labels in ``[0, c)``."""
  return jax.random.randint(jax.random.fold_in(key, 7), (n,), 0, c)


def _targets(key, shape, dtype):
  """Probability targets (rows summing to 1)."""
  return jax.nn.softmax(jax.random.normal(jax.random.fold_in(key, 3), shape)).astype(dtype)


def row_cases(n: int, c: int, dtype: str) -> list[Case]:
  """softmax, log_softmax and the cross-entropies at one [N, C] shape."""
  dt = jnp.dtype(dtype)
  isz = dt.itemsize
  tol = 4 * float(jnp.finfo(dt).eps) if dt.itemsize < 4 else 1e-4
  nc = n * c
  logits = lambda k: (_normal(k, (n, c), dt),)  # noqa: E731
  with_labels = lambda k: (_normal(k, (n, c), dt), _labels(k, n, c))  # noqa: E731
  with_targets = lambda k: (_normal(k, (n, c), dt), _targets(k, (n, c), dt))  # noqa: E731

  def sj_int(z, y):
    return losses.cross_entropy_with_integer_labels(z, y)

  def ox_int(z, y):
    return optax.softmax_cross_entropy_with_integer_labels(z, y).mean()

  def sj_soft(z, t):
    return losses.cross_entropy(z, t)

  def ox_soft(z, t):
    return optax.softmax_cross_entropy(z, t).mean()

  s = (n, c)
  # On GPU our functions run the fused Pallas kernels ("auto"); our XLA path is then
  # timed beside them as a second baseline.
  gpu = jax.default_backend() == "gpu"

  def xla(name, fn):
    return {f"softmax_jax {name} (xla)": fn} if gpu else {}

  return [
      Case("softmax", s, dtype, lambda z: _softmax.softmax(z),
           {"jax.nn.softmax": lambda z: jax.nn.softmax(z),
            **xla("softmax", lambda z: _softmax.softmax(z, impl="xla"))},
           logits, 2 * isz * nc, tol),
      Case("log_softmax", s, dtype, lambda z: _softmax.log_softmax(z),
           {"jax.nn.log_softmax": lambda z: jax.nn.log_softmax(z),
            **xla("log_softmax", lambda z: _softmax.log_softmax(z, impl="xla"))},
           logits, 2 * isz * nc, max(tol, 1e-3)),
      Case("xent_int_fwd", s, dtype, sj_int, {"optax": ox_int}, with_labels, isz * nc + 4 * n,
           max(tol, 1e-4)),
      Case("xent_int_fwd_bwd", s, dtype, jax.value_and_grad(sj_int),
           {"optax": jax.value_and_grad(ox_int),
            **xla("xent", jax.value_and_grad(
                lambda z, y: losses.cross_entropy_with_integer_labels(z, y, impl="xla")))},
           with_labels, 2 * isz * nc + 4 * n, max(tol, 1e-4)),
      Case("xent_prob_fwd", s, dtype, sj_soft, {"optax": ox_soft}, with_targets, 2 * isz * nc,
           max(tol, 1e-4)),
      Case("xent_prob_fwd_bwd", s, dtype, jax.value_and_grad(sj_soft),
           {"optax": jax.value_and_grad(ox_soft)}, with_targets, 3 * isz * nc, max(tol, 1e-4)),
  ]


def jacobian_cases(n: int, c: int) -> list[Case]:
  """Dense Jacobian against autodiff and against the memory floor of writing it."""
  logits = lambda k: (_normal(k, (n, c), jnp.float32, 2.0),)  # noqa: E731
  out_bytes = 4 * n * c * c + 4 * n * c

  def floor(z):  # the cost of merely writing [N, C, C] from [N, C]: one outer product
    return z[:, :, None] * z[:, None, :]

  def closed_form(z):  # the plain formula y_i (δ_ij − y_j) on jax.nn.softmax
    y = jax.nn.softmax(z)
    return y[..., :, None] * (jnp.eye(c, dtype=y.dtype) - y[..., None, :])

  cases = [
      Case("softmax_jacobian", (n, c), "float32", _jacobian.softmax_jacobian,
           {"vmap(jacfwd)": jax.vmap(jax.jacfwd(jax.nn.softmax))}, logits, out_bytes, 1e-5),
      Case("softmax_jacobian", (n, c), "float32", _jacobian.softmax_jacobian,
           {"vmap(jacrev)": jax.vmap(jax.jacrev(jax.nn.softmax))}, logits, out_bytes, 1e-5),
      Case("softmax_jacobian", (n, c), "float32", _jacobian.softmax_jacobian,
           {"closed form y(I − y)": closed_form}, logits, out_bytes, 1e-5),
      Case("softmax_jacobian", (n, c), "float32", _jacobian.softmax_jacobian,
           {"outer-product write": floor}, logits, out_bytes, float("inf")),
  ]
  return cases


def product_cases(n: int, c: int) -> list[Case]:
  """Matrix-free products against forming J and multiplying."""
  inputs = lambda k: (_normal(k, (n, c), jnp.float32, 2.0),  # noqa: E731
                      jax.random.normal(jax.random.fold_in(k, 5), (n, c)))

  def dense(z, v):
    return jnp.einsum("nij,nj->ni", _jacobian.softmax_jacobian(z), v)

  return [
      Case("softmax_vjp", (n, c), "float32", _jacobian.softmax_vjp, {"dense J @ v": dense},
           inputs, 3 * 4 * n * c, 1e-4),
      Case("softmax_jvp", (n, c), "float32", _jacobian.softmax_jvp, {"dense J @ v": dense},
           inputs, 3 * 4 * n * c, 1e-4),
  ]


def train_step_cases(n: int, d: int, c: int) -> list[Case]:
  """One gradient-descent step of softmax regression (W: [D, C], b: [C])."""

  def make(k):
    x = jax.random.normal(k, (n, d))
    y = _labels(k, n, c)
    params = (jnp.zeros((d, c)), jnp.zeros((c,)))
    return params, x, y

  def step(loss):
    def run(params, x, y):
      grads = jax.grad(lambda p: loss(x @ p[0] + p[1], y))(params)
      return jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, params, grads)
    return run

  ours = step(lambda z, y: losses.cross_entropy_with_integer_labels(z, y))
  base = step(lambda z, y: optax.softmax_cross_entropy_with_integer_labels(z, y).mean())
  return [Case("train_step", (n, d, c), "float32", ours, {"optax": base}, make, None, 1e-4)]


def linear_cases(n: int, h: int, v: int, dtype: str = "float32") -> list[Case]:
  """Chunked ``linear_cross_entropy`` value+grad against materialising ``h @ W``."""
  from softmax_jax.losses._linear import linear_cross_entropy

  dt = jnp.dtype(dtype)

  def make(k):
    k1, k2 = jax.random.split(k)
    return (jax.random.normal(k1, (n, h), dt), (jax.random.normal(k2, (h, v)) / h**0.5).astype(dt),
            _labels(k, n, v))

  ours = jax.value_and_grad(lambda x, w, t: linear_cross_entropy(x, w, t), (0, 1))
  base = jax.value_and_grad(
      lambda x, w, t: optax.softmax_cross_entropy_with_integer_labels(
          (x @ w).astype(jnp.float32), t).mean(), (0, 1))
  tol = 2e-2 if dt.itemsize < 4 else 1e-4
  # Its cost is matmuls: value and gradient need at least three of [N, H] @ [H, V]'s size
  # (the logits, the gradients of h and of W), 2 N H V floating-point operations each; it
  # is judged against one plain matmul of that shape and dtype.
  return [Case("linear_xent_fwd_bwd", (n, h, v), dtype, ours, {"materialised (optax)": base},
               make, None, tol, flops=3 * 2 * n * h * v, matmul=(n, h, v))]


OPS = ("softmax", "log_softmax", "xent_int_fwd", "xent_int_fwd_bwd", "xent_prob_fwd",
       "xent_prob_fwd_bwd", "softmax_jacobian", "softmax_vjp", "softmax_jvp", "train_step",
       "linear_xent_fwd_bwd")


def default_cases(shapes: Sequence[tuple[int, int]], dtypes: Sequence[str],
                  ops: Sequence[str] = OPS, *, jacobian_shape=(256, 128), product_shape=(8, 4096),
                  train_shape=(4096, 64, 10), linear_shape=(1024, 128, 16384)) -> list[Case]:
  """The cases of ``ops``: the row-wise ones at every shape and dtype, the Jacobian, product
  and training-step ones once at their shapes, the linear cross-entropy once per dtype."""
  cases: list[Case] = []
  for dtype in dtypes:
    for n, c in shapes:
      cases += [k for k in row_cases(n, c, dtype) if k.op in ops]
  if "softmax_jacobian" in ops:
    cases += jacobian_cases(*jacobian_shape)
  cases += [k for k in product_cases(*product_shape) if k.op in ops]
  if "train_step" in ops:
    cases += train_step_cases(*train_shape)
  if "linear_xent_fwd_bwd" in ops:
    for dtype in dtypes:
      cases += linear_cases(*linear_shape, dtype)
  return cases
