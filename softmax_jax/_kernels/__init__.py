"""Pallas kernels (Triton on GPU, interpret mode elsewhere) and their dispatch.

Private: reached through ``implementation=`` of :func:`softmax_jax.softmax`,
:func:`softmax_jax.log_softmax` and :func:`softmax_jax.cross_entropy_with_integer_labels`.
"""

from softmax_jax._kernels._pallas import IMPLS as IMPLS
from softmax_jax._kernels._pallas import choose as choose
from softmax_jax._kernels._pallas import cross_entropy as cross_entropy
from softmax_jax._kernels._pallas import softmax as softmax

__all__ = ["IMPLS", "choose", "cross_entropy", "softmax"]
