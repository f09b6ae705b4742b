"""Timing the package against ``jax.nn`` and optax, with the hardware's memory bandwidth
(and, for the linear loss, its matmul rate) at each case's own size as the roofline
(``softmax-jax bench``).

``_timing.py`` times one case (its compile time, and its roofline references),
``_cases.py`` builds the cases of every operation, ``_report.py`` writes the results as
tables, CSV and a plot, ``_context.py`` describes the machine and the versions of a run.
``_sweep.py`` times the row-wise operations over a geometric range of rows or classes
(``--sweep``), ``_compare.py`` lines up runs case by case (``softmax-jax bench compare``;
its tables and plot in ``_compare_report.py``).
"""

from softmax_jax.bench._cases import OPS as OPS
from softmax_jax.bench._cases import default_cases as default_cases
from softmax_jax.bench._cases import jacobian_cases as jacobian_cases
from softmax_jax.bench._cases import linear_cases as linear_cases
from softmax_jax.bench._cases import product_cases as product_cases
from softmax_jax.bench._cases import row_cases as row_cases
from softmax_jax.bench._cases import train_step_cases as train_step_cases
from softmax_jax.bench._compare import CompareError as CompareError
from softmax_jax.bench._compare import Comparison as Comparison
from softmax_jax.bench._compare import compare as compare
from softmax_jax.bench._compare import load as load
from softmax_jax.bench._context import context as context
from softmax_jax.bench._report import COLUMNS as COLUMNS
from softmax_jax.bench._report import SWEEP_COLUMNS as SWEEP_COLUMNS
from softmax_jax.bench._report import markdown as markdown
from softmax_jax.bench._report import plot as plot
from softmax_jax.bench._report import status as status
from softmax_jax.bench._report import text_table as text_table
from softmax_jax.bench._report import write_csv as write_csv
from softmax_jax.bench._sweep import ROW_OPS as ROW_OPS
from softmax_jax.bench._sweep import plot_sweep as plot_sweep
from softmax_jax.bench._sweep import sweep as sweep
from softmax_jax.bench._timing import FAILED as FAILED
from softmax_jax.bench._timing import Case as Case
from softmax_jax.bench._timing import Result as Result
from softmax_jax.bench._timing import Timings as Timings
from softmax_jax.bench._timing import copy_bandwidth as copy_bandwidth
from softmax_jax.bench._timing import is_failure as is_failure
from softmax_jax.bench._timing import run as run
from softmax_jax.bench._timing import run_case as run_case

__all__ = ["COLUMNS", "FAILED", "OPS", "ROW_OPS", "SWEEP_COLUMNS", "Case", "CompareError",
           "Comparison", "Result", "Timings", "compare", "context", "copy_bandwidth",
           "default_cases", "is_failure", "jacobian_cases", "linear_cases", "load", "markdown",
           "plot", "plot_sweep", "product_cases", "row_cases", "run", "run_case", "status",
           "sweep", "text_table", "train_step_cases", "write_csv"]
