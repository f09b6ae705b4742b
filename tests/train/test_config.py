"""TrainConfig: what it accepts, what it refuses, and the optimizers it names."""

import pytest

from softmax_jax.train import OPTIMIZERS, TrainConfig, make_optimizer


@pytest.mark.parametrize("kw,match", [
    ({"optimizer": "rmsprop"}, "optimizer must be one of"),
    ({"epochs": 0}, "epochs must be an integer >= 1"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1 or None"),
    ({"learning_rate": float("nan")}, "learning_rate must be a finite number"),
    ({"l2": -1.0}, "l2 must be a finite number >= 0"),
    ({"grad": "numeric"}, "grad must be one of"),
    ({"optimizer": "lbfgs"}, "lbfgs' is full batch; set batch_size=None"),
    ({"compute_dtype": "float16"}, "compute_dtype must be one of"),
    ({"epochs": True}, "epochs must be an integer >= 1"),
])
def test_config_errors(kw, match):
  with pytest.raises(ValueError, match=match):
    TrainConfig(**kw)


def test_dict_round_trip_and_unknown_fields():
  cfg = TrainConfig(optimizer="momentum", hidden=4, patience=3)
  assert TrainConfig.from_dict(cfg.to_dict()) == cfg
  with pytest.raises(ValueError, match=r"unknown fields \['momentum'\]"):
    TrainConfig.from_dict({**cfg.to_dict(), "momentum": 0.9})


def test_every_optimizer_is_made_and_an_unknown_one_refused():
  for name in OPTIMIZERS:
    assert callable(make_optimizer(name, 0.1).update)
  with pytest.raises(ValueError, match="optimizer must be one of"):
    make_optimizer("rmsprop", 0.1)
