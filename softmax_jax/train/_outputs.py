"""The outputs of a finished training run: metrics, history, parameters, model, figures.

Each file is written atomically (``_rundir.atomic``); the manifest, written last
by :func:`write_outputs`, marks the run complete.
"""

from __future__ import annotations

import contextlib
import csv
import io
import threading
from typing import Any, NamedTuple

import jax
import numpy as np

from softmax_jax.train import _figures, _loop, _model, _rundir
from softmax_jax.train._config import TrainConfig, compute_dtype_of
from softmax_jax.train._datasets import _csv

PARTS = ("train", "val", "test")


class Compilations:
  """The XLA compilations made while it is entered (JAX's ``backend_compile`` events, in
  every thread), for ``metrics.json``: ``count`` and ``seconds``.  Programs compiled
  earlier in the process, or found in the persistent cache, are not compiled again and
  do not count."""

  EVENT = "/jax/core/compile/backend_compile_duration"

  def __init__(self):
    self.count, self.seconds = 0, 0.0
    self._lock = threading.Lock()

  def _listen(self, event, duration, **kwargs) -> None:
    if event == self.EVENT:
      with self._lock:
        self.count, self.seconds = self.count + 1, self.seconds + duration

  def __enter__(self) -> Compilations:
    jax.monitoring.register_event_duration_secs_listener(self._listen)
    return self

  def __exit__(self, *exc) -> None:
    with contextlib.suppress(ValueError):  # already removed
      jax.monitoring.unregister_event_duration_listener(self._listen)

  def to_dict(self) -> dict:
    return {"count": self.count, "seconds": round(self.seconds, 3)}


class Scores(NamedTuple):
  """The trained model on one split."""

  log_loss: jax.Array  # mean cross-entropy
  accuracy: jax.Array
  objective: jax.Array | None  # the regularised loss J that training minimised (train only)


def device_info() -> dict:
  """The backend, device kind and count and the JAX version, for ``metrics.json``."""
  dev = jax.devices()[0]
  return {"backend": jax.default_backend(), "device": dev.device_kind,
          "device_count": jax.device_count(), "jax": jax.__version__}


def save_params(params, path) -> None:
  """Write a parameter pytree as ``.npz`` (``hidden/W``, ``W``...), atomically."""
  flat = {"/".join(str(getattr(k, "key", k)) for k in keys): np.asarray(v)
          for keys, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  with _rundir.atomic(path) as tmp:
    with open(tmp, "wb") as f:
      np.savez(f, **flat)


def _write_history(history, path) -> None:
  if not history:
    return
  buf = io.StringIO()
  w = csv.DictWriter(buf, fieldnames=list(history[0]))
  w.writeheader()
  w.writerows(history)
  _rundir.write_text(path, buf.getvalue())


def _score(config: TrainConfig, params, arrays: dict) -> tuple[dict[str, Scores], Any]:
  """:class:`Scores` of every non-empty split and the test predictions, in one compiled
  call (one per split, or op by op, took a compilation each)."""
  cd = compute_dtype_of(config)

  def program(p, arrays):
    scores = {part: Scores(*_loop.evaluate(p, xs, ys, compute_dtype=cd),
                           _model.loss(p, xs, ys, l2=config.l2, compute_dtype=cd)
                           if part == "train" else None)
              for part, (xs, ys) in arrays.items()}
    test = arrays.get("test")
    return scores, None if test is None else _model.predict(p, test[0])

  nonempty = {part: xy for part, xy in arrays.items() if xy[0].shape[0]}
  return jax.device_get(jax.jit(program)(params, nonempty))


def write_outputs(out, config: TrainConfig, data, prep, result: _loop.TrainResult,
                  seconds: float, plots: bool, mesh=None,
                  compilations: Compilations | None = None) -> dict:
  """Write every output of the run in ``out`` (the manifest last); returns the metrics.

  Args:
    out: the run directory.
    config: the training configuration.
    data: the data configuration (``DataConfig``).
    prep: the data, split and standardised (``Prepared``).
    result: the outcome of training.
    seconds: the training time of this session.
    plots: draw the figures.
    mesh: the data-parallel mesh's shape, for ``metrics.json``.
    compilations: the run's :class:`Compilations`, for ``metrics.json`` (read once the
      figures, the last to compile, are drawn).
  """
  dtype = np.dtype(config.dtype)
  params = result.params
  metrics: dict = {"dataset": prep.dataset.name, "n_classes": prep.dataset.n_classes,
                   "n_features": prep.dataset.n_features}
  arrays = {part: prep.arrays(part, dtype) for part in PARTS}
  scores, test_predictions = _score(config, params, arrays)
  nan = Scores(float("nan"), float("nan"), float("nan"))
  for part, (xs, _) in arrays.items():
    s = scores.get(part, nan)
    metrics[part] = {"n": int(xs.shape[0]), "accuracy": float(s.accuracy),
                     "log_loss": float(s.log_loss)}
    if part == "train":
      metrics[part]["objective"] = float(s.objective)
  metrics.update(epochs=int(result.state.epoch), stopped_early=result.stopped_early,
                 seconds_this_session=seconds, mesh=mesh, **device_info())
  if result.stopped_early:
    best = min(result.history, key=lambda r: r["val_loss"])
    metrics["best_epoch"] = best["epoch"]
  written = ["config.json", "metrics.json", "history.csv", "params.npz", "model.json"]
  if plots:
    written += _figures.draw(out, prep, params, result.history, arrays, test_predictions)
  if compilations is not None:
    metrics["compilations"] = compilations.to_dict()
  metrics = _rundir.finite_or_none(metrics)  # an empty split has no accuracy: null, not NaN
  _rundir.write_json(out / "metrics.json", metrics)
  _write_history(result.history, out / "history.csv")
  save_params(params, out / "params.npz")
  _rundir.write_json(out / "model.json", {
      "dataset": prep.dataset.name, "citation": prep.dataset.citation,
      "feature_names": list(prep.dataset.feature_names),
      "class_names": list(prep.dataset.class_names),
      "label_name": _label_name(prep.dataset, data),
      "standardizer": prep.scaler.to_dict(), "dtype": config.dtype,
      "compute_dtype": config.compute_dtype})
  _rundir.write_manifest(out, written, complete=True)  # last: the run is complete
  return metrics


def _label_name(ds, data) -> str | None:
  """The header name of the label column (so that ``predict`` can find labels in new data)."""
  if ds.name == "iris":
    return "species"
  if ds.name == "digits":
    return "digit"
  if isinstance(data.label, str):
    return data.label
  if data.dataset != "blobs":
    return _csv.label_name(data.dataset, data.label)
  return None
