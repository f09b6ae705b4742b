"""Finished runs read back: predict_run, load_params, and the runs they refuse."""

import json
import shutil

import jax
import numpy as np
import pytest

from softmax_jax.train import Interrupted, _rundir, load_params, predict_run, train_run
from softmax_jax.train._datasets import DataError
from softmax_jax.train._outputs import save_params
from softmax_jax.train._rundir import RunError

IRIS_ROW = ("sepal_length,sepal_width,petal_length,petal_width,species\n"
            "5.1,3.5,1.4,0.2,setosa\n")


def test_predict_run(full_run, tmp_path):
  out, _ = full_run
  src = tmp_path / "new.csv"
  rows = ["petal_width,extra,sepal_length,petal_length,sepal_width,species",
          "0.2,x,5.1,1.4,3.5,setosa", "1.8,y,6.3,5.6,2.9,virginica"]
  src.write_text("\n".join(rows) + "\n")
  path, summary = predict_run(out, src, tmp_path / "pred.csv")
  lines = path.read_text().splitlines()
  assert lines[0] == "row,predicted,p_setosa,p_versicolor,p_virginica"
  assert lines[1].startswith("1,setosa,") and lines[2].startswith("2,virginica,")
  assert summary == {"n": 2, "accuracy": 1.0}
  probs = [float(v) for v in lines[1].split(",")[2:]]
  assert abs(sum(probs) - 1) < 1e-5


def test_a_float64_run_predicts_without_turning_x64_on(float64_run, tmp_path):
  out, _ = float64_run
  src = tmp_path / "new.csv"
  src.write_text("x0,x1,x2\n0.5,1.5,-2\n3,-1,0.25\n")
  path, summary = predict_run(out, src)
  assert summary == {"n": 2}
  probs = np.array([[float(v) for v in line.split(",")[2:]]
                    for line in path.read_text().splitlines()[1:]])
  np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
  assert probs.shape == (2, 4)
  assert not jax.config.jax_enable_x64  # float64 inside predict_run only


def _edit_json(path, change):
  obj = json.loads(path.read_text())
  change(obj)
  path.write_text(json.dumps(obj))


@pytest.mark.parametrize("tamper", ["class_names", "standardizer", "dtype", "nan_params",
                                    "no_manifest", "bad_json", "not_npz"])
def test_predict_refuses_a_tampered_run(full_run, tmp_path, tamper):
  out = tmp_path / "run"
  shutil.copytree(full_run[0], out)
  src = tmp_path / "new.csv"
  src.write_text(IRIS_ROW)
  if tamper == "class_names":
    _edit_json(out / "model.json", lambda m: m["class_names"].reverse())
  elif tamper == "standardizer":
    _edit_json(out / "model.json", lambda m: m["standardizer"]["mean"].__setitem__(0, 9.0))
  elif tamper == "dtype":
    _edit_json(out / "model.json", lambda m: m.__setitem__("dtype", "float64"))
  elif tamper == "nan_params":
    params = load_params(out / "params.npz")
    params["W"][0, 0] = np.nan
    save_params(params, out / "params.npz")
  elif tamper == "no_manifest":
    (out / "manifest.json").unlink()
  elif tamper == "bad_json":
    (out / "config.json").write_text("{not json")
  else:
    (out / "params.npz").write_bytes(b"junk")
  name = {"no_manifest": "manifest.json", "bad_json": "config.json", "nan_params": "params.npz",
          "not_npz": "params.npz"}.get(tamper, "model.json")
  with pytest.raises(RunError, match=rf"{out / name} (was changed|is missing)"):
    predict_run(out, src)
  if tamper in ("nan_params", "bad_json", "not_npz"):  # refused without the manifest too
    _rundir.write_manifest(out, ["config.json", "model.json", "params.npz"], complete=True)
    what = {"nan_params": "not all finite", "bad_json": "line 1, column 2: not valid JSON",
            "not_npz": "not a readable parameter file"}[tamper]
    with pytest.raises(RunError, match=rf"{out / name}.*{what}"):
      predict_run(out, src)


def test_predict_refuses_an_interrupted_run_and_an_overflowing_input(full_run, run_config,
                                                                     tmp_path):
  out = tmp_path / "run"
  with pytest.raises(Interrupted):
    train_run(*run_config, out, checkpoint_every=5, plots=False, stop_after=3)
  src = tmp_path / "new.csv"
  src.write_text(IRIS_ROW)
  with pytest.raises(RunError, match="did not finish.*--resume"):
    predict_run(out, src)
  src.write_text(IRIS_ROW + "1e300,3.5,1.4,0.2,setosa\n")
  with pytest.raises(DataError, match=r"data row 2, column 'sepal_length': 1e\+300 overflows "
                                      "float32"):
    predict_run(full_run[0], src)
