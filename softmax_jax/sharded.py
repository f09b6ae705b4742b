"""Class-sharded softmax and cross-entropy over a device mesh (see ``softmax_jax._sharded``)."""

from ._sharded import cross_entropy_with_integer_labels as cross_entropy_with_integer_labels
from ._sharded import linear_cross_entropy as linear_cross_entropy
from ._sharded import log_softmax as log_softmax
from ._sharded import softmax as softmax

__all__ = ["cross_entropy_with_integer_labels", "linear_cross_entropy", "log_softmax", "softmax"]
