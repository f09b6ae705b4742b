"""The figures of a run: which ones it draws, and the separate model of the iris figure.

``curves.png`` (loss and accuracy per epoch), ``confusion_matrix.png`` (the test
split) and ``decision_regions.png``: for 2-feature data the regions of the run's
own model; for iris, as in scikit-learn's example, those of a separate model of
the first two features only (:class:`SeparateModel`).  The drawing itself is in
``_plots`` (matplotlib, imported only here).
"""

from __future__ import annotations

import dataclasses
import threading

import jax
import numpy as np

from softmax_jax.train import _loop, _model, _rundir
from softmax_jax.train._config import TrainConfig


def needs_separate_model(prep) -> bool:
  """Whether the decision regions are those of a separate 2-feature model (iris)."""
  return prep.dataset.n_features != 2 and prep.dataset.name == "iris"


class SeparateModel:
  """The iris figure's model of the first two features, trained in a thread.

  Started with the run, so that its compilation overlaps the run's own instead of
  following it; :meth:`params` waits for it.  Its training is the one
  ``fit(x[:, :2], y, config without patience)`` does, to the bit, under the
  caller's ``jax_enable_x64`` setting (which is per thread).

  Args:
    x: ``[n, features]`` standardised training inputs (only the first two are used).
    y: ``[n]`` labels.
    config: the run's configuration (early stopping is dropped: no validation set).
    n_classes: the number of classes.
  """

  def __init__(self, x, y, config: TrainConfig, n_classes: int):
    self._stop = threading.Event()
    self._params = None
    self._error: BaseException | None = None
    self._thread = threading.Thread(
        target=self._train, name="softmax_jax: iris figure's 2-feature model", daemon=True,
        args=(np.asarray(x)[:, :2], y, dataclasses.replace(config, patience=None), n_classes,
              jax.config.jax_enable_x64))
    self._thread.start()

  def _train(self, x, y, config, n_classes, x64) -> None:
    try:
      with jax.enable_x64(x64):
        trainer = _loop.Trainer(x, y, config, n_classes=n_classes)
        while not trainer.done and not self._stop.is_set():
          trainer.step()
        self._params = trainer.result().params
    except BaseException as e:  # noqa: BLE001 - handed to the caller by params()
      self._error = e

  def params(self):
    """The trained parameters (waits for the training); raises what the training raised."""
    self._thread.join()
    if self._error is not None:
      raise self._error
    return self._params

  def cancel(self) -> None:
    """Stop the training after its current epoch and wait for it (the run ended early)."""
    self._stop.set()
    self._thread.join()


def draw(out, config: TrainConfig, prep, params, history, arrays, test_predictions,
         separate: SeparateModel | None = None) -> list[str]:
  """Draw the figures of a run into ``out`` (each written atomically); returns their names.

  Args:
    out: the run directory.
    config: the training configuration.
    prep: the data, split and standardised (``Prepared``).
    params: the trained parameters.
    history: the metrics rows of every epoch.
    arrays: ``{part: (x, y)}`` of the splits, standardised, in the training dtype.
    test_predictions: the model's classes for the test split (``None`` when it is empty).
    separate: the started :class:`SeparateModel` where one is needed; trained here
      if it was not started.
  """
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
  elif needs_separate_model(prep):
    if separate is None:
      separate = SeparateModel(x2, y2, config, prep.dataset.n_classes)
    two = separate.params()
    figure("decision_regions.png", _plots.decision_regions,
           lambda g: predict(two, g), x2[:, :2], y2, names, classes,
           title=f"{prep.dataset.name}: a separate 2-feature model (not the trained "
                 f"{prep.dataset.n_features}-feature one)")
  return drawn
