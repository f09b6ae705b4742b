"""What determines a training run: :class:`TrainConfig` and the optax optimizers it names."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw", "lbfgs")
GRADS = ("autodiff", "analytic")
DTYPES = ("float32", "float64")
COMPUTE_DTYPES = (None, "bfloat16")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything that determines a training run (and so its checkpoints).

  Attributes:
    optimizer: one of ``sgd`` (the lecture's gradient descent), ``momentum``
      (SGD with momentum 0.9), ``adam``, ``adamw`` or ``lbfgs`` (optax's L-BFGS
      with its zoom line search; full batch only, ``learning_rate`` unused).
    learning_rate: the step size.
    epochs: number of passes over the training set.
    batch_size: mini-batch size; ``None`` for full batch.
    l2: the L2 strength ``λ`` in ``J = mean ξ + (λ/2)‖W‖²``.
    hidden: width of a tanh hidden layer; 0 for softmax regression.
    seed: seeds the initial parameters and the shuffling.
    grad: ``"autodiff"`` (``jax.grad``) or ``"analytic"`` (the lecture's formula).
    dtype: parameter and data dtype, ``"float32"`` or ``"float64"`` (needs 64-bit
      JAX: train inside ``with jax.enable_x64(True):``).
    compute_dtype: ``None`` or ``"bfloat16"`` for the matrix products.
    patience: stop when the validation loss has not improved for this many
      epochs and keep the best parameters; ``None`` trains every epoch.
    reduction: ``"mean"`` or ``"sum"`` (the lecture's ``Σ_i`` update).
  """

  optimizer: str = "adam"
  learning_rate: float = 0.01
  epochs: int = 200
  batch_size: int | None = 32
  l2: float = 1e-3
  hidden: int = 0
  seed: int = 0
  grad: str = "autodiff"
  dtype: str = "float32"
  compute_dtype: str | None = None
  patience: int | None = None
  reduction: str = "mean"

  def __post_init__(self):
    def choice(name, options):
      if getattr(self, name) not in options:
        raise ValueError(f"TrainConfig: {name} must be one of {options}, "
                         f"got {getattr(self, name)!r}")

    def integer(name, low, optional=False):
      value = getattr(self, name)
      if optional and value is None:
        return
      if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"TrainConfig: {name} must be an integer >= {low}"
                         f"{' or None' if optional else ''}, got {value!r}")

    choice("optimizer", OPTIMIZERS)
    choice("grad", GRADS)
    choice("dtype", DTYPES)
    choice("compute_dtype", COMPUTE_DTYPES)
    choice("reduction", ("mean", "sum"))
    integer("epochs", 1)
    integer("batch_size", 1, optional=True)
    integer("hidden", 0)
    integer("seed", 0)
    integer("patience", 1, optional=True)
    for name in ("learning_rate", "l2"):
      value = getattr(self, name)
      if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"TrainConfig: {name} must be a finite number >= 0, got {value!r}")
    if self.optimizer == "lbfgs" and self.batch_size is not None:
      raise ValueError("TrainConfig: optimizer='lbfgs' is full batch; set batch_size=None "
                       f"(got batch_size={self.batch_size})")

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict) -> TrainConfig:
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - fields
    if unknown:
      raise ValueError(f"TrainConfig: unknown fields {sorted(unknown)}")
    return cls(**d)


def make_optimizer(name: str, learning_rate: float) -> optax.GradientTransformationExtraArgs:
  """The optax optimizer called ``name`` (see :class:`TrainConfig`)."""
  if name == "sgd":
    opt = optax.sgd(learning_rate)
  elif name == "momentum":
    opt = optax.sgd(learning_rate, momentum=0.9)
  elif name == "adam":
    opt = optax.adam(learning_rate)
  elif name == "adamw":
    # Decoupled weight decay on the weight matrices only, like the L2 penalty.
    opt = optax.adamw(learning_rate, mask=lambda p: jax.tree.map(lambda a: a.ndim > 1, p))
  elif name == "lbfgs":
    opt = optax.lbfgs()
  else:
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
  return optax.with_extra_args_support(opt)


def compute_dtype_of(config: TrainConfig):
  """The dtype of ``config``'s matrix products, or ``None`` for the parameter dtype."""
  return None if config.compute_dtype is None else jnp.dtype(config.compute_dtype)
