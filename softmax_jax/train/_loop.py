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
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from softmax_jax.losses import cross_entropy_with_integer_labels
from softmax_jax.train import _model
from softmax_jax.train._config import TrainConfig, compute_dtype_of, make_optimizer

DEFAULT_CONFIG = TrainConfig()


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


class BatchTerms(NamedTuple):
  """What one (padded) mini-batch step needs and reports."""

  objective: jax.Array  # the regularised loss J at the current parameters
  grads: Any  # ∇J, a pytree like the parameters
  weighted_loss: jax.Array  # Σ_i w_i ξ_i over the batch (padding has w = 0)
  correct: jax.Array  # Σ_i w_i [argmax z_i = y_i]
  objective_fn: Callable[[Any], jax.Array]  # J as a function of the parameters (line searches)


def batch_terms(config, params, xb, yb, wb) -> BatchTerms:
  """The objective, its gradient and the epoch's running sums for one (padded) batch."""
  cd = compute_dtype_of(config)
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
  return BatchTerms(value, grads, xi, correct, lambda p: _model.loss(p, xb, yb, **kw))


def evaluate(params, x, y, *, compute_dtype=None) -> tuple[jax.Array, jax.Array]:
  """``(mean cross-entropy, accuracy)`` of ``params`` on ``(x, y)``; NaN for an empty set."""
  if x.shape[0] == 0:
    nan = jnp.asarray(jnp.nan, jnp.float32)
    return nan, nan
  z = _model.logits(params, x, compute_dtype=compute_dtype)
  return (cross_entropy_with_integer_labels(z, y, impl=_model.loss_impl()),
          jnp.mean((jnp.argmax(z, -1) == y).astype(z.dtype)))


def batch_indices(n, batch_size, key, shuffle, multiple=1):
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
  cd = compute_dtype_of(config)
  full_batch = config.batch_size is None
  devices = 1 if mesh is None else mesh.shape[data_axis]

  def split_rows(a):
    if mesh is None:
      return a
    return jax.lax.with_sharding_constraint(a, NamedSharding(mesh, P(data_axis)))

  def epoch(state: TrainState, x, y, x_val, y_val):
    n = x.shape[0]
    key, sub = jax.random.split(state.key)
    idx, wmask = batch_indices(n, config.batch_size, sub, shuffle=not full_batch, multiple=devices)

    def step(carry, batch):
      params, opt_state = carry
      bi, bw = batch
      xb, yb, wb = split_rows(x[bi]), split_rows(y[bi]), split_rows(bw.astype(x.dtype))
      terms = batch_terms(config, params, xb, yb, wb)
      updates, opt_state = optimizer.update(terms.grads, opt_state, params,
                                            value=terms.objective, grad=terms.grads,
                                            value_fn=terms.objective_fn)
      return (optax.apply_updates(params, updates), opt_state), (terms.weighted_loss,
                                                                 terms.correct)

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


class Trainer:
  """A training run an epoch at a time; :func:`fit` is a loop over :meth:`step`.

  Takes :func:`fit`'s arguments (but the callback) and checks them.  ``state`` is the
  :class:`TrainState` after the last finished epoch and ``history`` the metrics of
  every epoch so far; a caller that stops between epochs (an interrupted run) has
  a consistent pair to checkpoint.
  """

  def __init__(self, x, y, config: TrainConfig, *, val: tuple | None = None,
               n_classes: int | None = None,
               optimizer: optax.GradientTransformation | None = None, params=None,
               state: TrainState | None = None, history: list[dict] | None = None,
               mesh: Mesh | None = None, data_axis: str = "data"):
    dtype = np.dtype(config.dtype)
    if config.dtype == "float64" and not jax.config.jax_enable_x64:
      raise ValueError("fit: dtype='float64' needs 64-bit JAX; call it inside "
                       "`with jax.enable_x64(True):`")
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
    arrays = (np.asarray(x, dtype), np.asarray(y, np.int32), np.asarray(val[0], dtype),
              np.asarray(val[1], np.int32))
    if mesh is None:
      self._data = jax.device_put(arrays)  # a transfer, not a compiled copy
    else:
      check_data_parallel(config, mesh, data_axis)
      self._data = replicate(arrays, mesh)
      state = replicate(state, mesh)
    self.config = config
    self.state = state
    self.history = list(history or [])
    self._epoch_fn = make_epoch(config, opt, mesh=mesh, data_axis=data_axis)
    # Host copies of the counters, so that deciding whether to go on needs no device read.
    self._epoch = int(state.epoch)
    self._bad_epochs = int(state.bad_epochs)

  @property
  def epoch(self) -> int:
    """The number of epochs finished."""
    return self._epoch

  @property
  def stopped_early(self) -> bool:
    """Whether the validation loss has not improved for ``patience`` epochs."""
    return self.config.patience is not None and self._bad_epochs >= self.config.patience

  @property
  def done(self) -> bool:
    """Whether every epoch is done or early stopping has ended the run."""
    return self._epoch >= self.config.epochs or self.stopped_early

  def step(self) -> dict:
    """Run one epoch; returns its metrics row (also appended to ``history``)."""
    state, metrics = self._epoch_fn(self.state, *self._data)
    metrics, bad_epochs = jax.device_get((metrics, state.bad_epochs))  # one transfer
    row = {"epoch": self._epoch + 1, **{k: float(v) for k, v in metrics.items()}}
    self.history.append(row)
    self.state, self._epoch, self._bad_epochs = state, self._epoch + 1, int(bad_epochs)
    return row

  def result(self) -> TrainResult:
    """The outcome so far: the best parameters with early stopping, else the last ones."""
    params = self.state.best_params if self.config.patience is not None else self.state.params
    return TrainResult(params=params, state=self.state, history=self.history,
                       stopped_early=self.stopped_early)


def fit(x, y, config: TrainConfig = DEFAULT_CONFIG, *, val: tuple | None = None,
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
  trainer = Trainer(x, y, config, val=val, n_classes=n_classes, optimizer=optimizer,
                    params=params, state=state, history=history, mesh=mesh, data_axis=data_axis)
  while not trainer.done:
    row = trainer.step()
    if callback is not None:
      callback(trainer.state, row)
  return trainer.result()
