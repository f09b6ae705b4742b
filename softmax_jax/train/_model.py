r"""Softmax regression (multinomial logistic regression) and its one-hidden-layer variant.

The model of the lecture: logits ``z = x W + b``, probabilities ``y = softmax(z)``
and the cross-entropy ``ξ(t, z) = −Σ_c t_c log y_c``.  With the L2 penalty the
regularised objective over a batch of ``n`` examples is

.. math::
  J(W, b) = \frac{1}{n} \sum_i \xi(t^{(i)}, x^{(i)} W + b) + \frac{\lambda}{2} \lVert W \rVert^2

and, since ``∂ξ/∂z = y − t`` (lecture, "Derivative of the cross-entropy loss
function for the softmax function"), its batch gradient is

.. math::
  \nabla_W J = X^\top (Y - T) / n + \lambda W, \qquad \nabla_b J = \operatorname{mean}(Y - T).

With ``hidden > 0`` the model is the lecture's "NN with Softmax layer":
``h = tanh(x W₁ + b₁)``, ``z = h W + b``; :func:`analytic_grad` then back-propagates
``Y − T`` through the hidden layer by hand.

Parameters are a plain dict pytree: ``{"W": [features, classes], "b": [classes]}``,
plus ``"hidden": {"W": [features, hidden], "b": [hidden]}`` for the network.
Only the weight matrices are penalised, never the biases (as scikit-learn does).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from softmax_jax import _arguments
from softmax_jax._softmax import softmax
from softmax_jax.losses import cross_entropy_with_integer_labels

Params = dict


def init(key: ArrayLike, n_features: int, n_classes: int, *, hidden: int = 0,
         dtype=jnp.float32) -> Params:
  """Initial parameters.

  Softmax regression starts from zero (the objective is convex, and zero is
  where scikit-learn starts too); the network draws Glorot-uniform weights
  from ``key`` and zero biases.

  Args:
    key: a PRNG key (used only when ``hidden > 0``).
    n_features: number of input features.
    n_classes: number of classes, at least 2.
    hidden: width of the tanh hidden layer; 0 for plain softmax regression.
    dtype: parameter dtype.

  Returns:
    The parameter pytree.

  Examples:
    >>> import jax
    >>> from softmax_jax import model
    >>> params = model.init(jax.random.key(0), 4, 3)
    >>> params["W"].shape, params["b"].shape
    ((4, 3), (3,))
  """
  for name, value, low in (("n_features", n_features, 1), ("n_classes", n_classes, 2),
                           ("hidden", hidden, 0)):
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
      raise ValueError(f"init: {name} must be an integer >= {low}, got {value!r}")
  if hidden == 0:
    return {"W": jnp.zeros((n_features, n_classes), dtype), "b": jnp.zeros((n_classes,), dtype)}
  k1, k2 = jax.random.split(key)
  glorot = jax.nn.initializers.glorot_uniform()
  return {
      "hidden": {"W": glorot(k1, (n_features, hidden), dtype), "b": jnp.zeros((hidden,), dtype)},
      "W": glorot(k2, (hidden, n_classes), dtype),
      "b": jnp.zeros((n_classes,), dtype),
  }


def _dense(x, w, b, compute_dtype):
  """``x w + b``; with ``compute_dtype`` the product runs in it and accumulates in float32."""
  if compute_dtype is None:
    return x @ w + b
  out = jnp.dot(x.astype(compute_dtype), w.astype(compute_dtype),
                preferred_element_type=jnp.promote_types(w.dtype, jnp.float32))
  return out + b


def _check_x(params, x, fn):
  x = jnp.asarray(x)
  first = params["hidden"]["W"] if "hidden" in params else params["W"]
  if x.ndim != 2 or x.shape[1] != first.shape[0]:
    raise ValueError(f"{fn}: x has shape {x.shape} but the parameters expect "
                     f"[batch, {first.shape[0]}] (W has shape {first.shape})")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(first.dtype)
  return x


def _forward(params, x, compute_dtype=None):
  """``(hidden activations or None, logits)``."""
  h = None
  inp = x
  if "hidden" in params:
    h = jnp.tanh(_dense(x, params["hidden"]["W"], params["hidden"]["b"], compute_dtype))
    inp = h
  return h, _dense(inp, params["W"], params["b"], compute_dtype)


def logits(params: Params, x: ArrayLike, *, compute_dtype=None) -> jax.Array:
  """Logits ``z = x W + b`` (through the hidden layer when there is one).

  Args:
    params: the parameter pytree from :func:`init`.
    x: ``[batch, features]`` inputs.
    compute_dtype: optional dtype (``jnp.bfloat16``) for the matrix products;
      they accumulate in float32 and the logits come back in float32.

  Returns:
    ``[batch, classes]`` logits.
  """
  x = _check_x(params, x, "logits")
  return _forward(params, x, compute_dtype)[1]


def predict_proba(params: Params, x: ArrayLike, *, compute_dtype=None) -> jax.Array:
  """Class probabilities ``softmax(z)``, ``[batch, classes]``; rows sum to 1."""
  return softmax(logits(params, x, compute_dtype=compute_dtype))


def predict(params: Params, x: ArrayLike, *, compute_dtype=None) -> jax.Array:
  """Most probable class per example, ``[batch]`` int32."""
  return jnp.argmax(logits(params, x, compute_dtype=compute_dtype), axis=-1).astype(jnp.int32)


def _weights_and_norm(labels, weights, reduction, dtype):
  w = jnp.ones(labels.shape, dtype) if weights is None else jnp.asarray(weights, dtype)
  if w.shape != labels.shape:
    raise ValueError(f"weights has shape {w.shape} but labels has shape {labels.shape}")
  if reduction == "mean":
    norm = jnp.sum(w)
    return w, jnp.where(norm > 0, norm, jnp.ones_like(norm))
  if reduction == "sum":
    return w, jnp.ones((), dtype)
  raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")


def _penalty(params, l2):
  mats = [params["W"]] + ([params["hidden"]["W"]] if "hidden" in params else [])
  return 0.5 * l2 * sum(jnp.sum(jnp.square(m)) for m in mats)


def _check_labels(labels, z, fn):
  return _arguments.integer_labels(labels, z.shape[:1], f"logits of shape {z.shape}", fn)


def loss(params: Params, x: ArrayLike, labels: ArrayLike, *, l2: float = 0.0,
         weights: ArrayLike | None = None, reduction: str = "mean",
         compute_dtype=None) -> jax.Array:
  r"""The regularised objective ``J = Σ_i w_i ξ_i / Σ_i w_i + (λ/2) Σ ‖W‖²``.

  Args:
    params: the parameter pytree.
    x: ``[batch, features]`` inputs.
    labels: ``[batch]`` integer class labels.
    l2: the L2 strength ``λ`` (weight matrices only).
    weights: optional ``[batch]`` example weights (0 drops an example; the
      trainer pads its last mini-batch this way).
    reduction: ``"mean"`` (divide by ``Σ w``) or ``"sum"`` (the lecture's
      ``Σ_i``, no division).
    compute_dtype: optional dtype of the matrix products (see :func:`logits`).

  Returns:
    A scalar.
  """
  return _loss_and_terms(params, x, labels, l2, weights, reduction, compute_dtype)[0]


def loss_impl() -> str:
  """The loss's ``impl`` for the backend the model's programs run on.

  ``"auto"`` builds the Pallas kernel into a program beside the XLA path (for a program
  lowered for CUDA); tracing it costs a CPU run a few tenths of a second per program and
  is never used there, so on a CPU backend the model asks for XLA directly.
  """
  return "xla" if jax.default_backend() == "cpu" else "auto"


def _loss_and_terms(params, x, labels, l2, weights, reduction, compute_dtype):
  """``(objective, (logits, per-example ξ))``: the extra terms serve the training metrics."""
  x = _check_x(params, x, "loss")
  z = _forward(params, x, compute_dtype)[1]
  labels = _check_labels(labels, z, "loss")
  w, norm = _weights_and_norm(labels, weights, reduction, z.dtype)
  per_example = cross_entropy_with_integer_labels(z, labels, reduction="none",
                                                   impl=loss_impl())
  objective = jnp.sum(w * per_example) / norm + _penalty(params, l2).astype(z.dtype)
  return objective, (z, per_example)


def analytic_grad(params: Params, x: ArrayLike, labels: ArrayLike, *, l2: float = 0.0,
                  weights: ArrayLike | None = None, reduction: str = "mean",
                  compute_dtype=None) -> Params:
  r"""The lecture's batch gradient of :func:`loss`, written out by hand.

  .. math::
    G = \operatorname{diag}(w)\,(Y - T) / \textstyle\sum_i w_i, \quad
    \nabla_W = X^\top G + \lambda W, \quad \nabla_b = \textstyle\sum_i G_i

  (``Σ w`` is ``n`` without weights; no division with ``reduction="sum"``).
  With a hidden layer ``h = tanh(x W₁ + b₁)`` the same ``G`` flows back:
  ``∇W₁ = Xᵀ ((G Wᵀ) ⊙ (1 − h²)) + λ W₁``.  Equal to ``jax.grad(loss)`` (a
  test checks it in float64).

  Returns:
    A pytree of the same structure as ``params``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from softmax_jax import model
    >>> params = model.init(jax.random.key(0), 2, 3)
    >>> x, y = jnp.array([[1.0, 2.0], [0.5, -1.0]]), jnp.array([0, 2])
    >>> g = model.analytic_grad(params, x, y, l2=0.1)
    >>> bool(jnp.allclose(g["W"], jax.grad(model.loss)(params, x, y, l2=0.1)["W"]))
    True
  """
  x = _check_x(params, x, "analytic_grad")
  h, z = _forward(params, x, compute_dtype)
  labels = _check_labels(labels, z, "analytic_grad")
  w, norm = _weights_and_norm(labels, weights, reduction, z.dtype)
  y_minus_t = softmax(z) - jax.nn.one_hot(labels, z.shape[-1], dtype=z.dtype)  # ∂ξ/∂z = y − t
  g = y_minus_t * (w / norm)[:, None]
  inp = x if h is None else h
  grads = {"W": (_dense(inp.T, g.astype(inp.dtype), 0, compute_dtype).astype(params["W"].dtype)
                 + l2 * params["W"]),
           "b": jnp.sum(g, axis=0).astype(params["b"].dtype)}
  if h is not None:
    dh = _dense(g, params["W"].T.astype(g.dtype), 0, compute_dtype) * (1 - jnp.square(h))
    hw = params["hidden"]["W"]
    grads["hidden"] = {
        "W": _dense(x.T, dh.astype(x.dtype), 0, compute_dtype).astype(hw.dtype) + l2 * hw,
        "b": jnp.sum(dh, axis=0).astype(params["hidden"]["b"].dtype),
    }
  return grads
