"""Tracing: what must not be traced (and so compiled) again when only values change.

Two counters.  ``chex.assert_max_traces`` counts the traces of a Python function the
test jits itself: a user's jitted loss, its gradient, the trainer's epoch.  The library's
own jitted internals cannot be wrapped without patching them, so eager calls are counted
from JAX's compile log instead (as tests/train/test_loop.py counts the traces of the
epoch; here the epoch is counted by chex, across epochs of a hidden layer, mixed
precision, a validation set and a data-parallel mesh, which that test does not cover).
"""

import contextlib
import logging

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import softmax_jax as sj
from softmax_jax import model, sharded
from softmax_jax.train import TrainConfig, init_state, make_epoch, make_optimizer

N, C, H = 8, 5, 3
LABELS = jnp.arange(N, dtype=jnp.int32) % C
MESH = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("model",))


@pytest.fixture(autouse=True)
def _fresh_trace_counter():
  """chex counts by the wrapped function's source and call stack: the same in every param."""
  chex.clear_trace_counter()
  yield
  chex.clear_trace_counter()


def _logits(seed, dtype=jnp.float32, shape=(N, C)):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), dtype)


# Functions of the logits only, as a user would jit them.
USER = {
    "softmax": lambda z: sj.softmax(z),
    "softmax_auto": lambda z: sj.softmax(z, impl="auto"),
    "log_softmax_auto": lambda z: sj.log_softmax(z, impl="auto"),
    "cross_entropy_with_integer_labels_auto":
        lambda z: sj.cross_entropy_with_integer_labels(z, LABELS, impl="auto"),
    "grad_cross_entropy_with_integer_labels":
        lambda z: jax.grad(sj.cross_entropy_with_integer_labels)(z, LABELS),
    "cross_entropy": lambda z: sj.cross_entropy(z, jax.nn.softmax(z[::-1])),
    "softmax_jacobian": lambda z: sj.softmax_jacobian(z),
    "linear_cross_entropy": lambda z: sj.linear_cross_entropy(z, z[:C].T, LABELS[:len(z)]),
    "model_loss": lambda z: model.loss({"W": z[:C], "b": z[0]}, z, LABELS[:len(z)]),
    "sharded_cross_entropy_with_integer_labels":
        lambda z: sharded.cross_entropy_with_integer_labels(z, LABELS, MESH),
}


@pytest.mark.parametrize("name", USER)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["float32", "bfloat16"])
def test_jitted_function_traces_once_for_new_values(name, dtype):
  f = jax.jit(chex.assert_max_traces(USER[name], n=1))
  outs = [f(_logits(seed, dtype)) for seed in range(3)]
  assert not all(np.array_equal(outs[0], o) for o in outs[1:])  # the values did change
  with pytest.raises(AssertionError, match="traced > 1 times"):  # and the counter counts
    f(_logits(0, dtype, (N + 1, C)))


@contextlib.contextmanager
def _traces():
  """The names of the functions JAX traces for compilation inside the block."""
  names = []

  class Handler(logging.Handler):
    def emit(self, record):
      message = record.getMessage()
      if message.startswith("Finished tracing "):
        names.append(message.removeprefix("Finished tracing ").split(" for ")[0])

  handler, logger = Handler(), logging.getLogger("jax")
  logger.addHandler(handler)
  try:
    with jax.log_compiles(True):
      yield names
  finally:
    logger.removeHandler(handler)


EAGER = {
    "softmax": lambda z, impl: sj.softmax(z, impl=impl),
    "log_softmax": lambda z, impl: sj.log_softmax(z, impl=impl),
    "cross_entropy_with_integer_labels":
        lambda z, impl: sj.cross_entropy_with_integer_labels(z, LABELS, impl=impl),
}


@pytest.mark.internals  # counts compilations in JAX's log
@pytest.mark.parametrize("impl", ["auto", "xla"])
@pytest.mark.parametrize("name", EAGER)
def test_eager_call_compiles_only_the_first_time(name, impl):
  """Choosing the implementation (``auto``: XLA here, the kernel on CUDA) is not redone
  by a new trace on every call."""
  fn = EAGER[name]
  inputs = [_logits(seed) for seed in range(4)]
  fn(inputs[0], impl)
  with _traces() as traced:
    for z in inputs[1:]:
      jax.block_until_ready(fn(z, impl))
  assert traced == []


@pytest.mark.internals
def test_eager_linear_cross_entropy_compiles_only_the_first_time():
  h, w = _logits(0, shape=(N, H)), _logits(1, shape=(H, C))
  sj.linear_cross_entropy(h, w, LABELS)
  with _traces() as traced:
    for seed in range(2, 4):
      jax.block_until_ready(sj.linear_cross_entropy(_logits(seed, shape=(N, H)), w, LABELS))
  assert traced == []


def test_the_compile_log_counter_sees_a_compilation():
  with _traces() as traced:
    jax.jit(lambda z: z * 3.0 + 1.0)(_logits(0))
  assert traced == ["<lambda>"]


@pytest.fixture(scope="module")
def data():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(48, 4)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 3, 48), jnp.int32)
  return x[:32], y[:32], x[32:], y[32:]


@pytest.mark.parametrize("config,devices", [
    (TrainConfig(optimizer="momentum", batch_size=8, hidden=5), None),
    (TrainConfig(optimizer="adam", batch_size=16, compute_dtype="bfloat16", patience=2), None),
    (TrainConfig(optimizer="sgd", batch_size=8, grad="analytic"), 2),
], ids=["hidden-layer", "bfloat16-compute", "analytic-data-parallel"])
def test_trainer_epoch_traces_once_across_epochs(data, config, devices):
  """The state an epoch returns has the structure, types and sharding of the one it took.

  ``make_epoch``'s function is jitted again around chex's counter, with the output
  sharding ``make_epoch`` gives it on a mesh, and fed as ``fit`` feeds it (replicated).
  """
  opt = make_optimizer(config.optimizer, 0.05)
  state = init_state(config, 4, 3, optimizer=opt)
  arrays, out_shardings = data, None
  mesh = None
  if devices is not None:
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:devices]), ("data",))
    out_shardings = NamedSharding(mesh, P())
    state, arrays = jax.device_put((state, data), out_shardings)
  epoch = make_epoch(config, opt, mesh=mesh)
  counted = jax.jit(chex.assert_max_traces(epoch.__wrapped__, n=1), out_shardings=out_shardings)
  losses = []
  for _ in range(4):
    state, metrics = counted(state, *arrays)
    losses.append(float(metrics["val_loss"]))
  assert int(state.epoch) == 4
  assert len(set(losses)) > 1  # it trained: the epochs differ in value, not in trace
