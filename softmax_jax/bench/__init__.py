"""Timing the package against ``jax.nn`` and optax, with the hardware's memory bandwidth
(and, for the linear loss, its matmul rate) at each case's own size as the roofline
(``softmax-jax bench``).

``_timing.py`` times one case (its compile time, and its roofline references),
``_cases.py`` builds the cases of every operation, ``_report.py`` writes the results as
tables, CSV and a plot, ``_context.py`` describes the machine and the versions of a run.
"""

from softmax_jax.bench._cases import OPS as OPS
from softmax_jax.bench._cases import default_cases as default_cases
from softmax_jax.bench._cases import jacobian_cases as jacobian_cases
from softmax_jax.bench._cases import linear_cases as linear_cases
from softmax_jax.bench._cases import product_cases as product_cases
from softmax_jax.bench._cases import row_cases as row_cases
from softmax_jax.bench._cases import train_step_cases as train_step_cases
from softmax_jax.bench._context import context as context
from softmax_jax.bench._report import COLUMNS as COLUMNS
from softmax_jax.bench._report import SWEEP_COLUMNS as SWEEP_COLUMNS
from softmax_jax.bench._report import markdown as markdown
from softmax_jax.bench._report import plot as plot
from softmax_jax.bench._report import status as status
from softmax_jax.bench._report import text_table as text_table
from softmax_jax.bench._report import write_csv as write_csv
from softmax_jax.bench._timing import FAILED as FAILED
from softmax_jax.bench._timing import Case as Case
from softmax_jax.bench._timing import Result as Result
from softmax_jax.bench._timing import Timings as Timings
from softmax_jax.bench._timing import copy_bandwidth as copy_bandwidth
from softmax_jax.bench._timing import is_failure as is_failure
from softmax_jax.bench._timing import run as run
from softmax_jax.bench._timing import run_case as run_case

__all__ = ["COLUMNS", "FAILED", "OPS", "SWEEP_COLUMNS", "Case", "Result", "Timings",
           "context", "copy_bandwidth", "default_cases", "is_failure", "jacobian_cases",
           "linear_cases", "markdown", "plot", "product_cases", "row_cases", "run", "run_case",
           "status", "text_table", "train_step_cases", "write_csv"]
