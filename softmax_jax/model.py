"""Softmax regression and its one-hidden-layer variant (see ``softmax_jax.train._model``)."""

from softmax_jax.train._model import Params as Params
from softmax_jax.train._model import analytic_grad as analytic_grad
from softmax_jax.train._model import init as init
from softmax_jax.train._model import logits as logits
from softmax_jax.train._model import loss as loss
from softmax_jax.train._model import predict as predict
from softmax_jax.train._model import predict_proba as predict_proba

__all__ = ["Params", "analytic_grad", "init", "logits", "loss", "predict", "predict_proba"]
