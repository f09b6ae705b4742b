"""Checking derivatives against autodiff and finite differences.

``check_jacobian``, ``check_jvp``, ``check_vjp`` and ``check_grad``
(``softmax_jax/verify/_derivatives.py``) compare a candidate derivative with
``jax.jacfwd`` / ``jax.jacrev`` / ``jax.jvp`` / ``jax.vjp`` and central finite
differences in float64 (``_finite_differences.py``), under error bounds scaled to the
inputs (``_tolerances.py``, applied by ``compare`` in ``_compare.py``).  ``softmax-jax
verify`` runs the package's own grid (``_grid.py``: its points in ``_cases.py``, what
it compares in ``_comparisons.py``).
"""

from softmax_jax.verify._compare import CheckResult as CheckResult
from softmax_jax.verify._compare import MethodError as MethodError
from softmax_jax.verify._compare import compare as compare
from softmax_jax.verify._derivatives import check_grad as check_grad
from softmax_jax.verify._derivatives import check_jacobian as check_jacobian
from softmax_jax.verify._derivatives import check_jvp as check_jvp
from softmax_jax.verify._derivatives import check_vjp as check_vjp
from softmax_jax.verify._tolerances import fd_tolerance as fd_tolerance

__all__ = ["CheckResult", "MethodError", "check_grad", "check_jacobian", "check_jvp",
           "check_vjp", "compare", "fd_tolerance"]
