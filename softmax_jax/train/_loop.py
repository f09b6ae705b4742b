r"""Training loop: any optax optimizer, one compiled call per epoch.

Each epoch shuffles the training set with the PRNG key carried in the state and
runs a ``lax.scan`` over its mini-batches inside one ``jax.jit`` call, so there
is no per-batch Python dispatch.  When the batch size does not divide the number
of examples the last batch is padded with zero-weight examples: every example
counts exactly once per epoch.  With ``batch_size=None`` each epoch is one
full-batch step (the lecture's gradient descent with ``optimizer="sgd"``).

The gradient is ``jax.grad`` of :func:`softmax_jax.model.loss` or the lecture's
hand-written :func:`softmax_jax.model.analytic_grad` (``grad="analytic"``); both
give the same trajectory.  Everything that depends on randomness derives from
``seed``, so a seed fixes the result to the bit.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from softmax_jax.losses._cross_entropy import cross_entropy_with_integer_labels
from softmax_jax.train import _model

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
    dtype: parameter and data dtype, ``"float32"`` or ``"float64"`` (needs
      ``jax_enable_x64``).
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


class TrainState(NamedTuple):
  """What a checkpoint holds: enough to continue a run to the same bits."""

  params: Any
  opt_state: Any
  key: jax.Array  # raw uint32[2] key, split once per epoch
  epoch: jax.Array  # epochs completed
  best_params: Any  # parameters of the best validation loss so far (early stopping)
  best_val: jax.Array
  bad_epochs: jax.Array  # epochs since the best validation loss


@dataclasses.dataclass
class TrainResult:
  """The outcome of :func:`fit`.

  Attributes:
    params: the final parameters (the best ones when early stopping is on).
    state: the last :class:`TrainState` (for checkpoints or further training).
    history: one dict per epoch: ``epoch``, ``train_loss``, ``train_accuracy``
      (over the epoch's mini-batches, before each step), ``val_loss`` and
      ``val_accuracy`` (after the epoch; NaN without a validation set).
    stopped_early: whether early stopping ended the run.
  """

  params: Any
  state: TrainState
  history: list[dict]
  stopped_early: bool


def _compute_dtype(config):
  """The dtype of the matrix products, or ``None`` for the parameter dtype."""
  return None if config.compute_dtype is None else jnp.dtype(config.compute_dtype)


def init_state(config: TrainConfig, n_features: int, n_classes: int, *,
               optimizer: optax.GradientTransformation | None = None,
               params=None) -> TrainState:
  """The state before the first epoch (parameters from :func:`softmax_jax.model.init`).

  Built by one compiled call (op by op it took a dozen small XLA compilations).
  """
  dtype = jnp.dtype(config.dtype)
  opt = optimizer if optimizer is not None else make_optimizer(config.optimizer,
                                                               config.learning_rate)

  def build(params):
    key = jax.random.PRNGKey(config.seed)
    init_key, key = jax.random.split(key)
    if params is None:
      params = _model.init(init_key, n_features, n_classes, hidden=config.hidden, dtype=dtype)
    # Strong dtypes throughout: a weakly typed leaf (optax's line-search info starts
    # as Python scalars) would change type after the first epoch and force a retrace.
    opt_state = jax.tree.map(lambda a: jnp.array(a, dtype=jnp.result_type(a)), opt.init(params))
    return TrainState(params=params, opt_state=opt_state, key=key,
                      epoch=jnp.zeros((), jnp.int32), best_params=params,
                      best_val=jnp.asarray(jnp.inf, dtype), bad_epochs=jnp.zeros((), jnp.int32))

  return jax.jit(build)(params)


def _batch_terms(config, params, xb, yb, wb):
  """``(objective, grads, Σ w ξ, number correct, objective as a function)`` for one
  (padded) batch."""
  cd = _compute_dtype(config)
  kw = dict(l2=config.l2, weights=wb, reduction=config.reduction, compute_dtype=cd)

  def objective(p):
    return _model._loss_and_terms(p, xb, yb, config.l2, wb, config.reduction, cd)

  if config.grad == "autodiff":
    (value, (z, per_example)), grads = jax.value_and_grad(objective, has_aux=True)(params)
  else:
    value, (z, per_example) = objective(params)
    grads = _model.analytic_grad(params, xb, yb, **kw)
  xi = jnp.sum(wb * per_example)
  correct = jnp.sum(wb * (jnp.argmax(z, -1) == yb))
  return value, grads, xi, correct, lambda p: _model.loss(p, xb, yb, **kw)


def evaluate(params, x, y, *, compute_dtype=None) -> tuple[jax.Array, jax.Array]:
  """``(mean cross-entropy, accuracy)`` of ``params`` on ``(x, y)``; NaN for an empty set."""
  if x.shape[0] == 0:
    nan = jnp.asarray(jnp.nan, jnp.float32)
    return nan, nan
  z = _model.logits(params, x, compute_dtype=compute_dtype)
  return (cross_entropy_with_integer_labels(z, y),
          jnp.mean((jnp.argmax(z, -1) == y).astype(z.dtype)))


def _batches(n, batch_size, key, shuffle, multiple=1):
  """Index and weight arrays ``[batches, batch_size]``; padding has weight 0.

  A full batch is padded up to a multiple of ``multiple`` (the data-parallel devices).
  """
  if batch_size is None or batch_size >= n:
    batch_size = -(-n // multiple) * multiple
  order = jax.random.permutation(key, n) if shuffle else jnp.arange(n)
  nb = -(-n // batch_size)
  pad = nb * batch_size - n
  idx = jnp.concatenate([order, jnp.zeros((pad,), order.dtype)]).reshape(nb, batch_size)
  w = jnp.concatenate([jnp.ones((n,), bool), jnp.zeros((pad,), bool)]).reshape(nb, batch_size)
  return idx, w


def make_epoch(config: TrainConfig, optimizer: optax.GradientTransformationExtraArgs, *,
               mesh: Mesh | None = None, data_axis: str = "data"):
  """A jitted ``epoch(state, x, y, x_val, y_val) -> (state, metrics)``.

  With a ``mesh``, every mini-batch is split along ``data_axis`` and everything
  else is replicated: each device computes the gradient of its share of the
  batch and XLA sums them with an all-reduce.
  """
  cd = _compute_dtype(config)
  full_batch = config.batch_size is None
  devices = 1 if mesh is None else mesh.shape[data_axis]

  def split_rows(a):
    if mesh is None:
      return a
    return jax.lax.with_sharding_constraint(a, NamedSharding(mesh, P(data_axis)))

  def epoch(state: TrainState, x, y, x_val, y_val):
    n = x.shape[0]
    key, sub = jax.random.split(state.key)
    idx, wmask = _batches(n, config.batch_size, sub, shuffle=not full_batch, multiple=devices)

    def step(carry, batch):
      params, opt_state = carry
      bi, bw = batch
      xb, yb, wb = split_rows(x[bi]), split_rows(y[bi]), split_rows(bw.astype(x.dtype))
      value, grads, xi, correct, value_fn = _batch_terms(config, params, xb, yb, wb)
      updates, opt_state = optimizer.update(grads, opt_state, params, value=value, grad=grads,
                                            value_fn=value_fn)
      return (optax.apply_updates(params, updates), opt_state), (xi, correct)

    (params, opt_state), (xi, correct) = jax.lax.scan(step, (state.params, state.opt_state),
                                                      (idx, wmask))
    val_loss, val_acc = evaluate(params, x_val, y_val, compute_dtype=cd)
    improved = val_loss < state.best_val
    pick = lambda new, old: jax.tree.map(lambda a, b: jnp.where(improved, a, b), new, old)  # noqa: E731
    new_state = TrainState(
        params=params, opt_state=opt_state, key=key, epoch=state.epoch + 1,
        best_params=pick(params, state.best_params),
        best_val=jnp.where(improved, val_loss.astype(state.best_val.dtype), state.best_val),
        bad_epochs=jnp.where(improved, 0, state.bad_epochs + 1))
    metrics = {"train_loss": jnp.sum(xi) / n, "train_accuracy": jnp.sum(correct) / n,
               "val_loss": val_loss, "val_accuracy": val_acc}
    return new_state, metrics

  if mesh is None:
    return jax.jit(epoch)
  return jax.jit(epoch, out_shardings=NamedSharding(mesh, P()))


def check_data_parallel(config: TrainConfig, mesh: Mesh, data_axis: str = "data") -> None:
  """Raise a ``ValueError`` unless ``mesh`` can split ``config``'s batches along ``data_axis``."""
  from softmax_jax import _arguments

  _arguments.mesh(mesh, {"data_axis": data_axis}, "fit")
  devices = mesh.shape[data_axis]
  if config.batch_size is not None and config.batch_size % devices:
    raise ValueError(f"fit: batch_size={config.batch_size} is not a multiple of the {devices} "
                     f"devices of mesh axis {data_axis!r}")


def replicate(tree, mesh: Mesh):
  """Every leaf of ``tree`` as a global array held whole by every device of ``mesh``.

  Built from host values with ``jax.make_array_from_callback``, so it also works
  when the mesh spans several processes (each holds the same values).
  """
  sharding = NamedSharding(mesh, P())

  def one(leaf):
    host = np.asarray(jax.device_get(leaf))
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

  return jax.tree.map(one, tree)


def _check_data(x, y, name, n_features=None):
  x = np.asarray(x) if not isinstance(x, jax.Array) else x
  if x.ndim != 2 or (n_features is not None and x.shape[1] != n_features):
    want = f"[n, {n_features}]" if n_features is not None else "[n, features]"
    raise ValueError(f"fit: {name} x has shape {x.shape}, expected {want}")
  if y.shape != (x.shape[0],):
    raise ValueError(f"fit: {name} labels have shape {y.shape} but x has {x.shape[0]} rows")


def fit(x, y, config: TrainConfig = TrainConfig(), *, val: tuple | None = None,
        n_classes: int | None = None, optimizer: optax.GradientTransformation | None = None,
        params=None, state: TrainState | None = None, history: list[dict] | None = None,
        callback: Callable[[TrainState, dict], None] | None = None,
        mesh: Mesh | None = None, data_axis: str = "data") -> TrainResult:
  """Train the softmax-regression model (or its network) on ``(x, y)``.

  Args:
    x: ``[n, features]`` training inputs (standardise them first).
    y: ``[n]`` integer labels in ``0..C-1``.
    config: the :class:`TrainConfig`.
    val: optional ``(x_val, y_val)`` for the validation metrics and early stopping.
    n_classes: number of classes (default ``max(y) + 1``).
    optimizer: any ``optax.GradientTransformation``; overrides ``config.optimizer``.
    params: initial parameters (default :func:`softmax_jax.model.init`).
    state: a :class:`TrainState` to continue from (a restored checkpoint).
    history: the metrics of the epochs already run (with ``state``).
    callback: called after every epoch with the state and that epoch's metrics
      (numbers); checkpointing and progress bars hook in here.  An exception it
      raises stops training and propagates.
    mesh: optional ``jax.sharding.Mesh`` for data-parallel training: each
      mini-batch is split over the devices of ``data_axis`` (the batch size must
      be a multiple of their number; a full batch is padded to one), the
      parameters, optimizer state and data are replicated, and XLA all-reduces
      the gradients.  The result equals single-device training up to the order
      of floating-point sums.  Works across hosts after ``jax.distributed.initialize``.
    data_axis: the mesh axis that splits the batch.

  Returns:
    A :class:`TrainResult`.

  Examples:
    >>> import numpy as np
    >>> from softmax_jax.train import TrainConfig, fit
    >>> x = np.array([[0.0, 1.0], [1.0, 0.0], [0.1, 0.9], [0.9, 0.2]], np.float32)
    >>> result = fit(x, np.array([0, 1, 0, 1]), TrainConfig(epochs=20, batch_size=None))
    >>> [int(c) for c in result.params["W"].argmax(axis=1)]
    [1, 0]
  """
  dtype = np.dtype(config.dtype)
  if config.dtype == "float64" and not jax.config.jax_enable_x64:
    raise ValueError("fit: dtype='float64' needs jax_enable_x64 "
                     "(jax.config.update('jax_enable_x64', True))")
  y = np.asarray(y) if not isinstance(y, jax.Array) else y
  _check_data(x, y, "training")
  if not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f"fit: labels must be integers, got {y.dtype}")
  n_classes = int(y.max()) + 1 if n_classes is None else n_classes
  if val is None:
    val = (np.zeros((0, x.shape[1]), dtype), np.zeros((0,), np.int32))
  _check_data(val[0], np.asarray(val[1]), "validation", x.shape[1])
  if config.patience is not None and val[0].shape[0] == 0:
    raise ValueError("fit: patience (early stopping) needs a validation set (val=...)")
  opt = optax.with_extra_args_support(
      optimizer if optimizer is not None else make_optimizer(config.optimizer,
                                                             config.learning_rate))
  if state is None:
    state = init_state(config, x.shape[1], n_classes, optimizer=opt, params=params)
  history = list(history or [])
  arrays = (np.asarray(x, dtype), np.asarray(y, np.int32), np.asarray(val[0], dtype),
            np.asarray(val[1], np.int32))
  if mesh is None:
    xs, ys, xv, yv = jax.device_put(arrays)  # a transfer, not a compiled copy
  else:
    check_data_parallel(config, mesh, data_axis)
    xs, ys, xv, yv = replicate(arrays, mesh)
    state = replicate(state, mesh)
  epoch_fn = make_epoch(config, opt, mesh=mesh, data_axis=data_axis)

  def patience_spent():
    return config.patience is not None and int(state.bad_epochs) >= config.patience

  while int(state.epoch) < config.epochs and not patience_spent():
    state, metrics = epoch_fn(state, xs, ys, xv, yv)
    row = {"epoch": int(state.epoch), **{k: float(v) for k, v in metrics.items()}}
    history.append(row)
    if callback is not None:
      callback(state, row)
  stopped = patience_spent()
  params = state.best_params if config.patience is not None else state.params
  return TrainResult(params=params, state=state, history=history, stopped_early=stopped)
