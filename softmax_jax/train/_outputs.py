"""The outputs of a finished training run: metrics, history, parameters, model, figures.

Each file is written atomically (``_rundir.atomic``); the manifest, written last
by :func:`write_outputs`, marks the run complete.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from typing import Any, NamedTuple

import jax
import numpy as np

from softmax_jax.train import _loop, _model, _rundir
from softmax_jax.train._config import TrainConfig, compute_dtype_of
from softmax_jax.train._datasets import _csv

PARTS = ("train", "val", "test")


class Scores(NamedTuple):
  """The trained model on one split."""

  log_loss: jax.Array  # mean cross-entropy
  accuracy: jax.Array
  objective: jax.Array  # the regularised loss J that training minimised


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
                           _model.loss(p, xs, ys, l2=config.l2, compute_dtype=cd))
              for part, (xs, ys) in arrays.items()}
    test = arrays.get("test")
    return scores, None if test is None else _model.predict(p, test[0])

  nonempty = {part: xy for part, xy in arrays.items() if xy[0].shape[0]}
  return jax.device_get(jax.jit(program)(params, nonempty))


def write_outputs(out, config: TrainConfig, data, prep, result: _loop.TrainResult,
                  seconds: float, plots: bool, mesh=None) -> dict:
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
  written = ["config.json", "metrics.json", "history.csv", "params.npz", "model.json"]
  if plots:
    written += _draw(out, config, prep, params, result.history, arrays, test_predictions)
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


def _draw(out, config, prep, params, history, arrays, test_predictions) -> list[str]:
  """Draw the figures (each written atomically); returns their file names."""
  from softmax_jax.train import _plots

  drawn = []

  def figure(name, draw, *args, **kwargs):
    with _rundir.atomic(out / name) as tmp:
      draw(*args, tmp, **kwargs)
    drawn.append(name)

  figure("curves.png", _plots.curves, history)
  _, yt = arrays["test"]
  if test_predictions is not None:
    figure("confusion_matrix.png", _plots.confusion, yt, np.asarray(test_predictions),
           prep.dataset.class_names)
  x2, y2 = arrays["train"]
  names, classes = prep.dataset.feature_names[:2], prep.dataset.class_names
  predict = jax.jit(_model.predict)  # one compilation for the whole grid
  if prep.dataset.n_features == 2:  # the run's own model: no second fit
    figure("decision_regions.png", _plots.decision_regions,
           lambda g: predict(params, g), x2, y2, names, classes,
           title=f"{prep.dataset.name}: the trained model")
  elif prep.dataset.name == "iris":
    # scikit-learn's iris example: a second model on the first two features only.
    cfg2 = dataclasses.replace(config, patience=None)
    two = _loop.fit(x2[:, :2], y2, cfg2, n_classes=prep.dataset.n_classes).params
    figure("decision_regions.png", _plots.decision_regions,
           lambda g: predict(two, g), x2[:, :2], y2, names, classes,
           title=f"{prep.dataset.name}: a separate 2-feature model (not the trained "
                 f"{prep.dataset.n_features}-feature one)")
  return drawn
