"""The decision-region figure: the run's own model, on the plane of the two features it
weighs most, the others fitted to them by least squares (no second model is fitted)."""

import jax
import numpy as np

from softmax_jax.model import init, predict
from softmax_jax.train import DataConfig, TrainConfig, fit, train_run
from softmax_jax.train._figures import plane
from softmax_jax.train._runs import prepare


def test_the_plane_is_the_two_weightiest_features_in_input_order():
  w = np.array([[0.1, -0.1, 0.0], [3.0, 0.0, -3.0], [0.2, 0.1, 0.0], [0.0, 2.0, -2.0]])
  assert plane({"W": w, "b": np.zeros(3)}) == (1, 3)


def test_a_weight_the_same_for_every_class_counts_for_nothing():
  # Adding c to every logit changes no probability: feature 0 moves no decision.
  w = np.array([[5.0, 5.0, 5.0], [1.0, 0.0, -1.0], [0.0, 0.5, 0.0]])
  assert plane({"W": w, "b": np.zeros(3)}) == (1, 2)


def test_a_network_is_judged_by_its_first_layer():
  params = init(jax.random.key(0), 5, 3, hidden=4)
  params["hidden"]["W"] = params["hidden"]["W"].at[2].multiply(100.0).at[4].multiply(50.0)
  assert plane(params) == (2, 4)


def test_iris_regions_come_from_the_trained_model_on_its_petal_plane(tmp_path, monkeypatch):
  from softmax_jax.train import _plots

  seen = {}

  def record(predict_fn, x, y, feature_names, class_names, path, *, title):
    grid = np.array([[0.0, 0.0], [1.5, 1.5], [-1.5, -1.5]], np.float32)
    seen.update(names=feature_names, title=title, classes=np.asarray(predict_fn(grid)),
                x=np.asarray(x))
    open(path, "wb").close()

  monkeypatch.setattr(_plots, "decision_regions", record)
  train_run(TrainConfig(epochs=60), DataConfig(), tmp_path / "run")
  prep = prepare(DataConfig())
  params = fit(*prep.arrays("train"), TrainConfig(epochs=60), val=prep.arrays("val")).params
  i, j = plane(params)
  # Iris is told apart by its petals: the model leans on them, and the figure shows them.
  assert [prep.dataset.feature_names[k] for k in (i, j)] == seen["names"]
  assert all("petal" in name for name in seen["names"])
  assert "4-feature model" in seen["title"] and "other 2 fitted to them" in seen["title"]
  x, y = prep.arrays("train")
  np.testing.assert_array_equal(seen["x"], x[:, [i, j]])
  # The regions are the trained model's classes where the other two features take their
  # least-squares values from the two shown.
  rest = [k for k in range(4) if k not in (i, j)]
  coef = np.linalg.lstsq(x[:, [i, j]].astype(np.float64), x[:, rest], rcond=None)[0]
  grid = np.array([[0.0, 0.0], [1.5, 1.5], [-1.5, -1.5]])
  full = np.zeros((3, 4))
  full[:, [i, j]], full[:, rest] = grid, grid @ coef
  np.testing.assert_array_equal(seen["classes"],
                                np.asarray(predict(params, full.astype(np.float32))))
  # So the plane runs through the data: on it the model still tells the classes apart.
  lifted = np.zeros_like(x, np.float64)
  lifted[:, [i, j]], lifted[:, rest] = x[:, [i, j]], x[:, [i, j]] @ coef
  assert np.mean(np.asarray(predict(params, lifted.astype(np.float32))) == y) > 0.9


def test_two_feature_data_show_the_model_itself(tmp_path, monkeypatch):
  from softmax_jax.train import _plots

  seen = {}

  def record(predict_fn, x, y, feature_names, class_names, path, *, title):
    seen.update(names=feature_names, title=title)
    open(path, "wb").close()

  monkeypatch.setattr(_plots, "decision_regions", record)
  out = tmp_path / "run"
  train_run(TrainConfig(epochs=5), DataConfig(dataset="blobs", n_samples=60), out)
  assert (out / "decision_regions.png").exists()
  assert seen == {"names": ["x0", "x1"], "title": "blobs: the trained model"}
