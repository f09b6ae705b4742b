"""Softmax regression and its one-hidden-layer variant (see ``softmax_jax._model``)."""

from ._model import Params as Params
from ._model import analytic_grad as analytic_grad
from ._model import init as init
from ._model import logits as logits
from ._model import loss as loss
from ._model import predict as predict
from ._model import predict_proba as predict_proba

__all__ = ["Params", "analytic_grad", "init", "logits", "loss", "predict", "predict_proba"]
