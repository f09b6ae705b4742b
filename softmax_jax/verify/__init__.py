"""Checking derivatives against autodiff and finite differences.

``check_derivatives`` (``softmax_jax/verify/_check_derivatives.py``) checks every mode of a
function's derivatives in one call and returns a ``DerivativeReport`` (``_report.py``):
forward and reverse mode against float64 central differences and against each other, by
full Jacobians or random projections (``_projections.py``); ``jax.vmap`` of each against a
loop and ``jax.jit`` against eager (``_batching.py``), and second order against
differences of the gradient (``_second_order.py``).  ``assert_derivatives`` raises
``AssertionError`` with the report, for test suites.

``check_jacobian``, ``check_jvp``, ``check_vjp`` and ``check_grad``
(``_derivatives.py``) compare a candidate derivative with ``jax.jacfwd`` / ``jax.jacrev`` /
``jax.jvp`` / ``jax.vjp`` and central finite differences in float64
(``_finite_differences.py``), under error bounds scaled to the inputs
(``_tolerances.py``, applied by ``compare`` in ``_compare.py``).  ``softmax-jax verify``
runs the package's own grid (``_grid.py``: its points in ``_cases.py``, what it compares
in ``_comparisons.py``).
"""

from softmax_jax.verify._check_derivatives import assert_derivatives as assert_derivatives
from softmax_jax.verify._check_derivatives import check_derivatives as check_derivatives
from softmax_jax.verify._compare import CheckResult as CheckResult
from softmax_jax.verify._compare import MethodError as MethodError
from softmax_jax.verify._compare import compare as compare
from softmax_jax.verify._derivatives import check_grad as check_grad
from softmax_jax.verify._derivatives import check_jacobian as check_jacobian
from softmax_jax.verify._derivatives import check_jvp as check_jvp
from softmax_jax.verify._derivatives import check_vjp as check_vjp
from softmax_jax.verify._report import Check as Check
from softmax_jax.verify._report import DerivativeReport as DerivativeReport
from softmax_jax.verify._tolerances import fd_tolerance as fd_tolerance

__all__ = ["Check", "CheckResult", "DerivativeReport", "MethodError", "assert_derivatives",
           "check_derivatives", "check_grad", "check_jacobian", "check_jvp", "check_vjp",
           "compare", "fd_tolerance"]
