"""Timing the package against ``jax.nn`` and optax, with the hardware's memory bandwidth
as the roofline (``softmax-jax bench``).
"""

from softmax_jax.bench._harness import COLUMNS as COLUMNS
from softmax_jax.bench._harness import FAILED as FAILED
from softmax_jax.bench._harness import OPS as OPS
from softmax_jax.bench._harness import Case as Case
from softmax_jax.bench._harness import Result as Result
from softmax_jax.bench._harness import copy_bandwidth as copy_bandwidth
from softmax_jax.bench._harness import default_cases as default_cases
from softmax_jax.bench._harness import is_failure as is_failure
from softmax_jax.bench._harness import jacobian_cases as jacobian_cases
from softmax_jax.bench._harness import linear_cases as linear_cases
from softmax_jax.bench._harness import markdown as markdown
from softmax_jax.bench._harness import plot as plot
from softmax_jax.bench._harness import product_cases as product_cases
from softmax_jax.bench._harness import row_cases as row_cases
from softmax_jax.bench._harness import run as run
from softmax_jax.bench._harness import run_case as run_case
from softmax_jax.bench._harness import status as status
from softmax_jax.bench._harness import text_table as text_table
from softmax_jax.bench._harness import train_step_cases as train_step_cases
from softmax_jax.bench._harness import write_csv as write_csv

__all__ = ["COLUMNS", "FAILED", "OPS", "Case", "Result", "copy_bandwidth", "default_cases",
           "is_failure", "jacobian_cases", "linear_cases", "markdown", "plot", "product_cases",
           "row_cases", "run", "run_case", "status", "text_table", "train_step_cases",
           "write_csv"]
