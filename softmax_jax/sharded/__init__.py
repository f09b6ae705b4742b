"""Class-sharded softmax and cross-entropy over a device mesh (see ``softmax_jax.sharded``).

The mesh-taking functions lay the logits out over the mesh themselves; the
``*_local`` ones run inside a ``jax.shard_map`` that the caller writes, with the
classes split over ``axis_name`` (vocabulary parallelism inside a model).

Modules: ``_stats`` (the whole row's statistics from each device's classes: one
``pmax``, one ``psum``), ``_mesh`` (laying arrays out over a mesh), ``_softmax``,
``_row_loss`` (the per-row loss and its JVP), ``_cross_entropy``, ``_linear``.
"""

from softmax_jax.sharded._cross_entropy import (
    cross_entropy_with_integer_labels as cross_entropy_with_integer_labels,
)
from softmax_jax.sharded._cross_entropy import (
    cross_entropy_with_integer_labels_local as cross_entropy_with_integer_labels_local,
)
from softmax_jax.sharded._linear import linear_cross_entropy as linear_cross_entropy
from softmax_jax.sharded._softmax import log_softmax as log_softmax
from softmax_jax.sharded._softmax import log_softmax_local as log_softmax_local
from softmax_jax.sharded._softmax import softmax as softmax
from softmax_jax.sharded._softmax import softmax_local as softmax_local

__all__ = ["cross_entropy_with_integer_labels", "cross_entropy_with_integer_labels_local",
           "linear_cross_entropy", "log_softmax", "log_softmax_local", "softmax",
           "softmax_local"]
