"""softmax_jax: softmax, its analytic Jacobian and cross-entropy as pure JAX functions."""

from softmax_jax._jacobian import softmax_jacobian as softmax_jacobian
from softmax_jax._jacobian import softmax_jvp as softmax_jvp
from softmax_jax._jacobian import softmax_vjp as softmax_vjp
from softmax_jax._softmax import log_sigmoid as log_sigmoid
from softmax_jax._softmax import log_softmax as log_softmax
from softmax_jax._softmax import logsumexp as logsumexp
from softmax_jax._softmax import sigmoid as sigmoid
from softmax_jax._softmax import sigmoid_derivative as sigmoid_derivative
from softmax_jax._softmax import softmax as softmax
from softmax_jax.losses import binary_cross_entropy as binary_cross_entropy
from softmax_jax.losses import cross_entropy as cross_entropy
from softmax_jax.losses import cross_entropy_grad as cross_entropy_grad
from softmax_jax.losses import (
    cross_entropy_with_integer_labels as cross_entropy_with_integer_labels,
)
from softmax_jax.losses import linear_cross_entropy as linear_cross_entropy
from softmax_jax.losses import validate_labels as validate_labels

__version__ = "0.1.0"

__all__ = [
    "binary_cross_entropy", "cross_entropy", "cross_entropy_grad",
    "cross_entropy_with_integer_labels", "linear_cross_entropy", "log_sigmoid", "log_softmax",
    "logsumexp", "sigmoid", "sigmoid_derivative", "softmax", "softmax_jacobian", "softmax_jvp",
    "softmax_vjp", "validate_labels",
]
