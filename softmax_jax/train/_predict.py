"""Finished runs read back: :func:`load_params`, :func:`load_run` and :func:`predict_run`.

Everything a run wrote is checked before it is used: the manifest (every file
unchanged since the run wrote it), then that ``model.json`` and ``params.npz``
describe one model.
"""

from __future__ import annotations

import contextlib
import csv
import io
import pathlib
import zipfile
from typing import NamedTuple

import jax
import numpy as np

from softmax_jax.train import _datasets, _model, _rundir
from softmax_jax.train._config import COMPUTE_DTYPES, DTYPES
from softmax_jax.train._rundir import RunError


class Run(NamedTuple):
  """A finished run directory, read and checked."""

  config: dict  # config.json
  info: dict  # model.json: feature and class names, standardisation, dtypes
  params: dict  # params.npz as the model's pytree


class Prediction(NamedTuple):
  """What :func:`predict_run` wrote and found."""

  path: pathlib.Path  # the predictions CSV
  summary: dict  # ``n`` and, when the file had labels, ``accuracy``


def load_params(path) -> dict:
  """Parameters written by a run (``params.npz``) as the model's dict pytree.

  Raises:
    RunError: the file is missing, not an ``.npz`` archive, or damaged (naming it).
  """
  params: dict = {}
  try:
    with np.load(path, allow_pickle=False) as f:
      for name in f.files:
        node = params
        *outer, leaf = name.split("/")
        for part in outer:
          node = node.setdefault(part, {})
        node[leaf] = f[name]
  except FileNotFoundError:
    raise RunError(f"{path} is missing") from None
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise RunError(f"{path}: not a readable parameter file ({type(e).__name__}: {e})") from None
  return params


def load_run(run) -> Run:
  """The configuration, model description and parameters of a finished run, checked.

  Raises:
    RunError: the run is incomplete, a file was changed since the run wrote it
      (``manifest.json``), or a file is damaged or inconsistent; the message
      names the file.
  """
  run = pathlib.Path(run)
  if not run.is_dir():
    raise RunError(f"--run {run}: no such run directory")
  _rundir.verify_manifest(run, complete=True, need=("config.json", "model.json", "params.npz"))
  config = _rundir.read_json(run / "config.json")
  info = _rundir.read_json(run / "model.json")
  params = load_params(run / "params.npz")
  _check_model(run / "model.json", info, run / "params.npz", params)
  return Run(config, info, params)


def _check_model(info_path, info, params_path, params) -> None:
  """Refuse a ``model.json`` and ``params.npz`` that do not describe one model."""
  for key, kind in (("feature_names", list), ("class_names", list), ("standardizer", dict)):
    if not isinstance(info.get(key), kind) or not info[key]:
      raise RunError(f"{info_path}: {key!r} is missing or not a non-empty {kind.__name__}")
  for key in ("feature_names", "class_names"):
    if not all(isinstance(v, str) for v in info[key]) or len(set(info[key])) != len(info[key]):
      raise RunError(f"{info_path}: {key!r} must be distinct strings")
  if info.get("dtype", "float32") not in DTYPES:
    raise RunError(f"{info_path}: dtype must be one of {DTYPES}, got {info['dtype']!r}")
  if info.get("compute_dtype") not in COMPUTE_DTYPES:
    raise RunError(f"{info_path}: compute_dtype must be one of {COMPUTE_DTYPES}")
  try:
    scaler = _datasets.Standardizer.from_dict(info["standardizer"])
  except ValueError as e:
    raise RunError(f"{info_path}: 'standardizer': {e}") from None
  n_features, n_classes = len(info["feature_names"]), len(info["class_names"])
  if scaler.mean.shape != (n_features,):
    raise RunError(f"{info_path}: the standardizer has {scaler.mean.shape[0]} features, "
                   f"feature_names {n_features}")
  layers = [params.get("hidden"), params] if "hidden" in params else [params]
  width = n_features
  for i, layer in enumerate(layers):
    if not isinstance(layer, dict) or set(layer) - {"hidden"} != {"W", "b"}:
      raise RunError(f"{params_path}: expected arrays W and b (and hidden/W, hidden/b), "
                     f"found {sorted(layer) if isinstance(layer, dict) else layer!r}")
    w, b = layer["W"], layer["b"]
    out = n_classes if i == len(layers) - 1 else w.shape[-1]
    if w.shape != (width, out) or b.shape != (out,):
      raise RunError(f"{params_path}: W has shape {w.shape} and b {b.shape}; model.json "
                     f"describes {width} inputs and {out} outputs")
    if not (np.issubdtype(w.dtype, np.floating) and np.isfinite(w).all()
            and np.isfinite(b).all()):
      raise RunError(f"{params_path}: the parameters are not all finite floating-point numbers")
    width = out


def _float64_if(needed: bool):
  """A context in which JAX has float64 when ``needed`` (the process's setting is left alone)."""
  if not needed or jax.config.jax_enable_x64:
    return contextlib.nullcontext()
  return jax.enable_x64(True)


def predict_run(run, path, out=None) -> Prediction:
  """Predict the rows of the CSV file ``path`` with the model of ``run``.

  The file needs a header naming the model's feature columns (any order; other
  columns are ignored).  If it also has the label column, accuracy is reported.
  Writes ``out`` (default ``<run>/predictions.csv``): one row per input row with
  the predicted class and the probability of every class.

  Returns:
    A :class:`Prediction`: the output path and a summary with ``n`` and, when
    labels were present, ``accuracy``.

  Raises:
    RunError: the run is incomplete, changed or damaged (see :func:`load_run`).
    DataError: a problem with ``path``; a value that overflows the model's dtype
      once standardised is refused with its row and column.
  """
  loaded = load_run(run)
  info, params = loaded.info, loaded.params
  x, y = _datasets.read_features(path, info["feature_names"], label=info.get("label_name"),
                                 class_names=info["class_names"])
  scaler = _datasets.Standardizer.from_dict(info["standardizer"])
  dtype = np.dtype(info.get("dtype", "float32"))
  with np.errstate(over="ignore", invalid="ignore"):
    xs = scaler.transform(np.asarray(x, np.float64)).astype(dtype)
  bad = np.argwhere(~np.isfinite(xs))
  if bad.size:
    i, j = bad[0]
    raise _datasets.DataError(f"{path}, data row {i + 1}, column {info['feature_names'][j]!r}: "
                              f"{float(x[i, j])!r} overflows {dtype} once standardised")
  cd = info.get("compute_dtype")
  with _float64_if(dtype == np.float64):
    predict_proba = jax.jit(_model.predict_proba, static_argnames="compute_dtype")
    proba = np.asarray(predict_proba(params, xs,
                                     compute_dtype=None if cd is None else np.dtype(cd)))
  pred = proba.argmax(axis=1)
  out = pathlib.Path(out) if out is not None else pathlib.Path(run) / "predictions.csv"
  classes = info["class_names"]
  buf = io.StringIO()
  w = csv.writer(buf)
  w.writerow(["row", "predicted"] + [f"p_{c}" for c in classes])
  for i, (k, p) in enumerate(zip(pred, proba, strict=True)):
    w.writerow([i + 1, classes[k]] + [f"{v:.6g}" for v in p])
  _rundir.write_text(out, buf.getvalue())
  summary: dict = {"n": int(len(pred))}
  if y is not None:
    summary["accuracy"] = float(np.mean(pred == np.asarray(y)))
  return Prediction(out, summary)
