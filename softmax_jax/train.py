"""Training softmax regression with optax (see ``softmax_jax._train``).

Run directories (``softmax-jax train``): :func:`train_run`, :func:`predict_run`.
"""

from ._checkpoint import CheckpointError as CheckpointError
from ._runs import DataConfig as DataConfig
from ._runs import Interrupted as Interrupted
from ._runs import load_params as load_params
from ._runs import predict_run as predict_run
from ._runs import train_run as train_run
from ._train import OPTIMIZERS as OPTIMIZERS
from ._train import TrainConfig as TrainConfig
from ._train import TrainResult as TrainResult
from ._train import TrainState as TrainState
from ._train import evaluate as evaluate
from ._train import fit as fit
from ._train import init_state as init_state
from ._train import make_epoch as make_epoch
from ._train import make_optimizer as make_optimizer

__all__ = ["OPTIMIZERS", "CheckpointError", "DataConfig", "Interrupted", "TrainConfig",
           "TrainResult", "TrainState", "evaluate", "fit", "init_state", "load_params",
           "make_epoch", "make_optimizer", "predict_run", "train_run"]
