"""The losses of the lecture: cross-entropy with probability targets or integer labels,
its binary (logistic) form and the chunked linear cross-entropy.

Every loss here shares one numerics core (``softmax_jax._numerics``): label validity,
masking, log-sum-exp, smoothing, soft-cap, reductions and upcasting are written once.
"""

from softmax_jax.losses._cross_entropy import binary_cross_entropy as binary_cross_entropy
from softmax_jax.losses._cross_entropy import cross_entropy as cross_entropy
from softmax_jax.losses._cross_entropy import cross_entropy_grad as cross_entropy_grad
from softmax_jax.losses._cross_entropy import (
           cross_entropy_with_integer_labels as cross_entropy_with_integer_labels,
)
from softmax_jax.losses._cross_entropy import validate_labels as validate_labels
from softmax_jax.losses._linear import linear_cross_entropy as linear_cross_entropy

__all__ = ["binary_cross_entropy", "cross_entropy", "cross_entropy_grad",
           "cross_entropy_with_integer_labels", "linear_cross_entropy", "validate_labels"]
