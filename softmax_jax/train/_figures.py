"""The figures of a run: which ones it draws, and the plane of the decision-region figure.

``curves.png`` (loss and accuracy per epoch), ``confusion_matrix.png`` (the test
split) and ``decision_regions.png``: the regions of the run's own model, over its two
features for 2-feature data, and for iris over the two features the model leans on
most (:func:`plane`), each other feature set to its least-squares fit from those two on
the training split, so that the plane passes through the data.  The drawing
itself is in ``_plots`` (matplotlib, imported only there).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from softmax_jax.train import _model, _rundir


def draws_regions(prep) -> bool:
  """Whether the run draws ``decision_regions.png`` (2-feature data and iris)."""
  return prep.dataset.n_features == 2 or prep.dataset.name == "iris"


def plane(params) -> tuple[int, int]:
  """The two input features the model's first layer weighs most, in input order.

  The weight of feature ``f`` is the norm of its row of the first weight matrix
  (``W [features, ·]``, on standardised inputs), less the row's mean for softmax
  regression, since adding a constant to every class's logit changes no probability.
  """
  w = np.asarray(params["hidden"]["W"] if "hidden" in params else params["W"], np.float64)
  if "hidden" not in params:
    w = w - w.mean(axis=1, keepdims=True)
  weight = np.linalg.norm(w, axis=1)
  i, j = sorted(int(f) for f in np.argsort(-weight, kind="stable")[:2])
  return i, j


def draw(out, prep, params, history, arrays, test_predictions) -> list[str]:
  """Draw the figures of a run into ``out`` (each written atomically); returns their names.

  Args:
    out: the run directory.
    prep: the data, split and standardised (``Prepared``).
    params: the trained parameters.
    history: the metrics rows of every epoch.
    arrays: ``{part: (x, y)}`` of the splits, standardised, in the training dtype.
    test_predictions: the model's classes for the test split (``None`` when it is empty).
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
  if not draws_regions(prep):
    return drawn
  names, n = prep.dataset.feature_names, prep.dataset.n_features
  i, j = (0, 1) if n == 2 else plane(params)

  # The grid's points on the plane of features i and j, the other features set to their
  # least-squares fit from those two over the training split (standardised, so no
  # intercept): the plane runs through the data, where the model was trained.
  shown, rest = [i, j], [k for k in range(n) if k not in (i, j)]
  lift = np.zeros((2, n), np.float64)
  lift[:, shown] = np.eye(2)
  if rest:
    xs = np.asarray(x2, np.float64)
    lift[:, rest] = np.linalg.lstsq(xs[:, shown], xs[:, rest], rcond=None)[0]

  @jax.jit  # one compilation for the whole grid
  def predict(params, g):
    return _model.predict(params, g @ jnp.asarray(lift, g.dtype))

  title = (f"{prep.dataset.name}: the trained model" if n == 2 else
           f"{prep.dataset.name}: the trained {n}-feature model on the plane of its two\n"
           f"weightiest features, the other {n - 2} fitted to them (least squares)")
  figure("decision_regions.png", _plots.decision_regions, lambda g: predict(params, g),
         x2[:, [i, j]], y2, [names[i], names[j]], prep.dataset.class_names, title=title)
  return drawn
