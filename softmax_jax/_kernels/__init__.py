"""Pallas kernels (Triton on GPU, interpret mode elsewhere) and their dispatch.

Private: reached through ``implementation=`` of :func:`softmax_jax.softmax`,
:func:`softmax_jax.log_softmax` and :func:`softmax_jax.cross_entropy_with_integer_labels`.
"""
