"""The losses of the lecture, one module per formula.

* ``_probability_targets``: :func:`cross_entropy` (``ξ = −Σ_c t_c log y_c``) and
  :func:`cross_entropy_grad` (``∂ξ/∂z = y − t``);
* ``_integer_labels``: :func:`cross_entropy_with_integer_labels` (``−log y_t``, with
  PyTorch's options);
* ``_binary``: :func:`binary_cross_entropy` (the logistic-regression cost ``J(θ)``);
* ``_linear``: :func:`linear_cross_entropy` (``ξ(t, softmax(h W + b))`` in vocabulary
  chunks);
* ``_validate``: :func:`validate_labels` (the host-side label check).

Every loss here shares one numerics core (``softmax_jax._numerics``): label validity,
masking, log-sum-exp, smoothing, soft-cap, reductions and upcasting are written once.
"""

from softmax_jax.losses._binary import binary_cross_entropy as binary_cross_entropy
from softmax_jax.losses._integer_labels import (
    cross_entropy_with_integer_labels as cross_entropy_with_integer_labels,
)
from softmax_jax.losses._linear import linear_cross_entropy as linear_cross_entropy
from softmax_jax.losses._probability_targets import cross_entropy as cross_entropy
from softmax_jax.losses._probability_targets import cross_entropy_grad as cross_entropy_grad
from softmax_jax.losses._validate import validate_labels as validate_labels

__all__ = ["binary_cross_entropy", "cross_entropy", "cross_entropy_grad",
           "cross_entropy_with_integer_labels", "linear_cross_entropy", "validate_labels"]
