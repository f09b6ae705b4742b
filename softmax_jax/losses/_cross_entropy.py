"""The losses' former home, kept so that ``softmax_jax.losses._cross_entropy`` imports work.

Each loss now has its own module (``_probability_targets``, ``_integer_labels``,
``_binary``, ``_validate``); import them from :mod:`softmax_jax.losses`.  This module
only re-exports the public names and can go once nothing imports it.
"""

from softmax_jax.losses._binary import binary_cross_entropy as binary_cross_entropy
from softmax_jax.losses._integer_labels import (
    cross_entropy_with_integer_labels as cross_entropy_with_integer_labels,
)
from softmax_jax.losses._probability_targets import cross_entropy as cross_entropy
from softmax_jax.losses._probability_targets import cross_entropy_grad as cross_entropy_grad
from softmax_jax.losses._validate import validate_labels as validate_labels
