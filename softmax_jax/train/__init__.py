"""Training softmax regression with optax (see ``softmax_jax.train._loop``).

Run directories (``softmax-jax train``): :func:`train_run` (``_runs``), and
:func:`predict_run` and :func:`load_params` (``_predict``).
"""

from softmax_jax.train._checkpoint import CheckpointError as CheckpointError
from softmax_jax.train._config import OPTIMIZERS as OPTIMIZERS
from softmax_jax.train._config import TrainConfig as TrainConfig
from softmax_jax.train._config import make_optimizer as make_optimizer
from softmax_jax.train._loop import TrainResult as TrainResult
from softmax_jax.train._loop import TrainState as TrainState
from softmax_jax.train._loop import evaluate as evaluate
from softmax_jax.train._loop import fit as fit
from softmax_jax.train._loop import init_state as init_state
from softmax_jax.train._loop import make_epoch as make_epoch
from softmax_jax.train._predict import load_params as load_params
from softmax_jax.train._predict import predict_run as predict_run
from softmax_jax.train._rundir import RunError as RunError
from softmax_jax.train._runs import DataConfig as DataConfig
from softmax_jax.train._runs import Interrupted as Interrupted
from softmax_jax.train._runs import train_run as train_run

__all__ = ["OPTIMIZERS", "CheckpointError", "DataConfig", "Interrupted", "RunError",
           "TrainConfig", "TrainResult", "TrainState", "evaluate", "fit", "init_state",
           "load_params", "make_epoch", "make_optimizer", "predict_run", "train_run"]
