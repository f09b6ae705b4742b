"""The optax training loop: the lecture's update, equal trajectories, determinism, options."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from softmax_jax import model
from softmax_jax.train import TrainConfig, evaluate, fit, init_state, make_epoch, make_optimizer
from softmax_jax.train._datasets import load_iris
from softmax_jax.train._loop import Trainer


@pytest.fixture(scope="module")
def iris():
  ds = load_iris()
  x = (ds.x - ds.x.mean(0)) / ds.x.std(0)
  return x, ds.y


@pytest.mark.x64
def test_full_batch_sgd_is_the_lecture_update(iris):
  """θ_j := θ_j − α Σ_i (h_θ(x⁽ⁱ⁾) − y⁽ⁱ⁾) x_j⁽ⁱ⁾, step for step (sum reduction, no penalty)."""
  x, y = iris
  alpha, steps = 0.002, 7
  cfg = TrainConfig(optimizer="sgd", learning_rate=alpha, batch_size=None, l2=0.0,
                    reduction="sum", dtype="float64", epochs=1)
  state = init_state(cfg, 4, 3)
  epoch = make_epoch(cfg, make_optimizer("sgd", alpha))
  none = (np.zeros((0, 4)), np.zeros((0,), np.int32))
  w, b = np.zeros((4, 3)), np.zeros(3)
  t = np.eye(3)[y]
  for _ in range(steps):
    state, _ = epoch(state, jnp.asarray(x), jnp.asarray(y), *map(jnp.asarray, none))
    z = x @ w + b
    h = np.exp(z - z.max(1, keepdims=True))
    h /= h.sum(1, keepdims=True)
    w, b = w - alpha * x.T @ (h - t), b - alpha * (h - t).sum(0)
    np.testing.assert_allclose(state.params["W"], w, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(state.params["b"], b, rtol=1e-13, atol=1e-15)
  assert not np.allclose(w, 0)


@pytest.mark.x64
@pytest.mark.parametrize("optimizer,batch,hidden", [("adam", 16, 5), ("momentum", 32, 0),
                                                    ("lbfgs", None, 0)])
def test_analytic_and_autodiff_give_the_same_trajectory(iris, optimizer, batch, hidden):
  x, y = iris
  cfg = TrainConfig(optimizer=optimizer, batch_size=batch, epochs=6, dtype="float64",
                    hidden=hidden, learning_rate=0.05)
  a = fit(x, y, cfg)
  b = fit(x, y, TrainConfig(**{**cfg.to_dict(), "grad": "analytic"}))
  for p, q in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
    np.testing.assert_allclose(p, q, rtol=1e-9, atol=1e-11)
  np.testing.assert_allclose([r["train_loss"] for r in a.history],
                             [r["train_loss"] for r in b.history], rtol=1e-10)


def test_seeds_differ_and_a_seed_fixes_the_run(iris):
  """Two runs of one seed are bit-identical (test_runs resumes a run to the bit, which
  needs exactly that); another seed gives another initialisation and shuffle."""
  x, y = iris
  a = fit(x, y, TrainConfig(epochs=3, batch_size=16, hidden=4))
  c = fit(x, y, TrainConfig(epochs=3, batch_size=16, hidden=4, seed=1))
  assert not np.array_equal(a.params["W"], c.params["W"])
  assert not np.array_equal(a.params["hidden"]["W"], c.params["hidden"]["W"])
  b = Trainer(x, y, TrainConfig(epochs=3, batch_size=16, hidden=4))
  while not b.done:
    b.step()
  for p, q in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.result().params), strict=True):
    assert np.array_equal(p, q)
  np.testing.assert_equal(a.history, b.history)  # NaN (no validation set) equals NaN here


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam", "adamw", "lbfgs"])
def test_every_optimizer_learns_iris(iris, optimizer):
  x, y = iris
  cfg = TrainConfig(optimizer=optimizer, learning_rate=0.05, epochs=40,
                    batch_size=None if optimizer == "lbfgs" else 32)
  result = fit(x, y, cfg)
  loss, acc = evaluate(result.params, jnp.asarray(x, jnp.float32), y)
  assert float(loss) < 0.4 < np.log(3)
  assert float(acc) > 0.9
  assert result.params["W"].dtype == jnp.float32


def test_any_optax_transformation(iris):
  x, y = iris
  opt = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.1))
  result = fit(x, y, TrainConfig(epochs=20), optimizer=opt)
  assert result.history[-1]["train_loss"] < result.history[0]["train_loss"] / 2


@pytest.mark.x64
def test_padded_last_batch_counts_every_example_once(iris):
  """With lr = 0 the epoch's train loss is exactly the mean loss over the data set."""
  x, y = iris
  params = model.init(None, 4, 3, dtype=jnp.float64)
  params = {"W": params["W"] + np.linspace(-1, 1, 12).reshape(4, 3), "b": params["b"]}
  cfg = TrainConfig(optimizer="sgd", learning_rate=0.0, batch_size=32, epochs=1, l2=0.0,
                    dtype="float64")  # 150 = 4 × 32 + 22: the last batch is padded
  row = fit(x, y, cfg, params=params).history[0]
  np.testing.assert_allclose(row["train_loss"], model.loss(params, x, y), rtol=1e-13)
  want_acc = np.mean(np.argmax(x @ np.asarray(params["W"]), 1) == y)
  np.testing.assert_allclose(row["train_accuracy"], want_acc, rtol=1e-13)


@pytest.mark.internals
@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_one_compilation_for_every_epoch(iris, optimizer):
  x, y = iris
  cfg = TrainConfig(epochs=3, optimizer=optimizer,
                    batch_size=None if optimizer == "lbfgs" else 32)
  opt = make_optimizer(optimizer, 0.01)
  epoch = make_epoch(cfg, opt)
  state = init_state(cfg, 4, 3, optimizer=opt)
  xs, ys = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32)
  empty = (jnp.zeros((0, 4), jnp.float32), jnp.zeros((0,), jnp.int32))
  traced = []

  class Traces(logging.Handler):
    def emit(self, record):
      if record.getMessage().startswith("Finished tracing epoch "):
        traced.append(record)

  handler, logger = Traces(), logging.getLogger("jax")
  logger.addHandler(handler)
  try:
    with jax.log_compiles(True):
      for _ in range(3):
        state, _ = epoch(state, xs, ys, *empty)
  finally:
    logger.removeHandler(handler)
  assert len(traced) == 1  # traced (and so compiled) once for three epochs
  assert int(state.epoch) == 3


def test_early_stopping_keeps_the_best_parameters(iris):
  x, y = iris
  rng = np.random.default_rng(0)
  noisy = np.where(rng.random(len(y)) < 0.4, rng.integers(0, 3, len(y)), y)  # overfit bait
  cfg = TrainConfig(optimizer="adam", learning_rate=0.3, epochs=300, patience=5, hidden=16)
  result = fit(x[::2], noisy[::2], cfg, val=(x[1::2], y[1::2]))
  assert result.stopped_early and len(result.history) < 300
  best = min(result.history, key=lambda r: r["val_loss"])
  assert result.history[-1]["epoch"] == best["epoch"] + 5
  loss, _ = evaluate(result.params, jnp.asarray(x[1::2], jnp.float32), y[1::2])
  np.testing.assert_allclose(float(loss), best["val_loss"], rtol=1e-6)


def test_bfloat16_compute_trains(iris):
  x, y = iris
  result = fit(x, y, TrainConfig(epochs=30, compute_dtype="bfloat16", learning_rate=0.05))
  _, acc = evaluate(result.params, jnp.asarray(x, jnp.float32), y)
  assert float(acc) > 0.9


def test_fit_errors(iris):
  x, y = iris
  with pytest.raises(ValueError, match="patience .* needs a validation set"):
    fit(x, y, TrainConfig(patience=3))
  with pytest.raises(ValueError, match=r"labels have shape \(149,\) but x has 150 rows"):
    fit(x, y[:-1])
  with pytest.raises(ValueError, match="labels must be integers"):
    fit(x, y.astype(float))
  with pytest.raises(ValueError, match=r"validation x has shape \(5, 3\), expected \[n, 4\]"):
    fit(x, y, val=(x[:5, :3], y[:5]))
  with pytest.raises(ValueError, match=r"needs 64-bit JAX; call it inside `with jax.enable_x64"):
    fit(x, y, TrainConfig(dtype="float64"))


def test_trainer_steps_are_fit_and_keep_state_and_history_together(iris):
  x, y = iris
  cfg = TrainConfig(epochs=4, batch_size=50, patience=2, learning_rate=0.05)
  val = (x[::5], y[::5])
  trainer = Trainer(x, y, cfg, val=val)
  rows = []
  while not trainer.done:
    rows.append(trainer.step())
    assert trainer.epoch == int(trainer.state.epoch) == len(trainer.history) == rows[-1]["epoch"]
  result, want = trainer.result(), fit(x, y, cfg, val=val)
  assert rows == trainer.history == want.history
  assert result.stopped_early == want.stopped_early
  for a, b in zip(jax.tree.leaves(result.params), jax.tree.leaves(want.params), strict=True):
    assert np.array_equal(a, b)
  resumed = Trainer(x, y, cfg, val=val, state=result.state, history=result.history)
  assert resumed.done and resumed.epoch == trainer.epoch  # nothing left to do
