"""Pallas kernels (Triton on GPU, interpret mode elsewhere) and their dispatch.

Private: reached through ``impl=`` of :func:`softmax_jax.softmax`,
:func:`softmax_jax.log_softmax` and :func:`softmax_jax.cross_entropy_with_integer_labels`.

Modules, lowest first: ``_triton`` (the Triton backend's availability and limits),
``_tiling`` (row blocks, tiles, the ``pallas_call``), ``_softmax`` (the softmax kernel
and its JVP), ``_xent_kernel`` (the cross-entropy kernel and its XLA-op twin),
``_cross_entropy`` (the reduced loss and its derivatives), ``_dispatch`` (``choose``).
"""

from softmax_jax._kernels._cross_entropy import cross_entropy as cross_entropy
from softmax_jax._kernels._dispatch import IMPLS as IMPLS
from softmax_jax._kernels._dispatch import choose as choose
from softmax_jax._kernels._softmax import softmax as softmax

__all__ = ["IMPLS", "choose", "cross_entropy", "softmax"]
