"""Class-sharded softmax and cross-entropy over a device mesh (see ``softmax_jax.sharded``).

The mesh-taking functions lay the logits out over the mesh themselves; the
``*_local`` ones run inside a ``jax.shard_map`` that the caller writes, with the
classes split over ``axis_name`` (vocabulary parallelism inside a model).
"""

from softmax_jax.sharded._sharded import (
    cross_entropy_with_integer_labels as cross_entropy_with_integer_labels,
)
from softmax_jax.sharded._sharded import (
    cross_entropy_with_integer_labels_local as cross_entropy_with_integer_labels_local,
)
from softmax_jax.sharded._sharded import linear_cross_entropy as linear_cross_entropy
from softmax_jax.sharded._sharded import log_softmax as log_softmax
from softmax_jax.sharded._sharded import log_softmax_local as log_softmax_local
from softmax_jax.sharded._sharded import softmax as softmax
from softmax_jax.sharded._sharded import softmax_local as softmax_local

__all__ = ["cross_entropy_with_integer_labels", "cross_entropy_with_integer_labels_local",
           "linear_cross_entropy", "log_softmax", "log_softmax_local", "softmax",
           "softmax_local"]
