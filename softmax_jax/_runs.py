"""Training runs on disk: data, training, checkpoints, outputs and predictions.

A run directory holds::

    config.json     the exact configuration (data, training, checkpointing)
    model.json      feature and class names, standardisation, backend
    params.npz      the trained parameters
    metrics.json    train / validation / test accuracy and log-loss, timing
    history.csv     one row per epoch
    curves.png, confusion_matrix.png, decision_regions.png (iris and 2-feature data)
    checkpoints/    orbax checkpoints, every ``checkpoint_every`` epochs and at the end

``softmax-jax train`` and ``softmax-jax predict`` are thin wrappers over
:func:`train_run` and :func:`predict_run`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import pathlib
import time
from collections.abc import Callable

import jax
import numpy as np

from . import _csv, _data, _model, _train
from ._checkpoint import Checkpointer, CheckpointError, digest

_IGNORED_IN_FINGERPRINT = ("epochs",)


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Which data a run trains on and how it is split.

  ``n_samples``, ``n_features`` and ``n_classes`` apply to ``blobs`` only,
  ``label`` to CSV files only.
  """

  dataset: str = "iris"
  label: int | str = -1
  n_samples: int = 1000
  n_features: int = 2
  n_classes: int = 3
  val_fraction: float = 0.15
  test_fraction: float = 0.2
  seed: int = 0


@dataclasses.dataclass
class Prepared:
  """A data set split and standardised with the training split's statistics."""

  dataset: _data.Dataset
  split: _data.Split
  scaler: _data.Standardizer

  def arrays(self, part: str, dtype=np.float32):
    ds = getattr(self.split, part)
    return self.scaler.transform(ds.x).astype(dtype), ds.y.astype(np.int32)


def prepare(data: DataConfig) -> Prepared:
  """Load, split (stratified, from ``data.seed``) and standardise (on the training split)."""
  ds = _data.load_dataset(data.dataset, label=data.label, n_samples=data.n_samples,
                          n_features=data.n_features, n_classes=data.n_classes, seed=data.seed)
  parts = _data.split(ds, val_fraction=data.val_fraction, test_fraction=data.test_fraction,
                      seed=data.seed)
  return Prepared(ds, parts, _data.Standardizer.fit(parts.train.x))


def _fingerprint(config: _train.TrainConfig, x, y) -> dict:
  fp = {k: v for k, v in config.to_dict().items() if k not in _IGNORED_IN_FINGERPRINT}
  fp["training_data_sha256"] = digest((x, y))
  return fp


def _device_info() -> dict:
  dev = jax.devices()[0]
  return {"backend": jax.default_backend(), "device": dev.device_kind,
          "device_count": jax.device_count(), "jax": jax.__version__}


def _save_params(params, path) -> None:
  flat = {"/".join(str(getattr(k, "key", k)) for k in keys): np.asarray(v)
          for keys, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  np.savez(path, **flat)


def load_params(path) -> dict:
  """Parameters written by a run (``params.npz``) as the model's dict pytree."""
  params: dict = {}
  with np.load(path) as f:
    for name in f.files:
      node = params
      *outer, leaf = name.split("/")
      for part in outer:
        node = node.setdefault(part, {})
      node[leaf] = f[name]
  return params


def _write_history(history, path) -> None:
  if not history:
    return
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(history[0]))
    w.writeheader()
    w.writerows(history)


class Interrupted(Exception):
  """Training was interrupted; a checkpoint of the last finished epoch was written."""

  def __init__(self, epoch: int, out: pathlib.Path):
    if epoch:
      text = (f"interrupted after epoch {epoch} (checkpoint written); continue with "
              f"`softmax-jax train --resume {out}`")
    else:
      text = "interrupted before the first epoch finished; nothing to resume"
    super().__init__(text)
    self.epoch = epoch


def _check_out(out: pathlib.Path, resume: bool, overwrite: bool) -> None:
  if resume:
    if not (out / "config.json").exists():
      raise CheckpointError(f"--resume {out}: no run there (config.json is missing)")
    return
  if out.exists() and any(out.iterdir()) and not overwrite:
    raise FileExistsError(f"{out} already holds files; choose another --out, continue it with "
                          "--resume, or pass --overwrite")


def train_run(config: _train.TrainConfig, data: DataConfig, out, *, checkpoint_every: int = 10,
              resume: bool = False, overwrite: bool = False, plots: bool = True,
              on_epoch: Callable[[dict], None] | None = None,
              stop_after: int | None = None, mesh=None) -> dict:
  """Train, checkpoint and write every output of a run into ``out``; returns the metrics.

  Args:
    config: the training configuration.
    data: the data configuration.
    out: the run directory.
    checkpoint_every: write a checkpoint every this many epochs (and at the end).
    resume: continue from the newest checkpoint in ``out`` (which must have
      been written with the same configuration and data).
    overwrite: allow ``out`` to hold files already (without ``resume``).
    plots: draw the figures (needs matplotlib).
    on_epoch: called with each epoch's metrics row (progress bars).
    stop_after: stop (as an interruption) once this many epochs are done; for tests
      and for splitting long runs.
    mesh: optional ``jax.sharding.Mesh`` with a ``data`` axis for data-parallel
      training (see :func:`softmax_jax.train.fit`).  With several processes
      (after ``jax.distributed.initialize``) process 0 writes the outputs and
      no checkpoints are written.

  Raises:
    Interrupted: on ``KeyboardInterrupt`` or ``stop_after``, after checkpointing.
    CheckpointError: when ``resume`` finds no usable checkpoint.
  """
  out = pathlib.Path(out)
  multi = jax.process_count() > 1
  _check_out(out, resume, overwrite)
  if multi:  # every process has checked the directory before process 0 writes to it
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices("softmax_jax.train_run: output directory checked")
  if mesh is not None:
    _train.check_data_parallel(config, mesh)
  if checkpoint_every < 1:
    raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
  prep = prepare(data)
  dtype = np.dtype(config.dtype)
  x, y = prep.arrays("train", dtype)
  val = prep.arrays("val", dtype)
  n_classes = prep.dataset.n_classes
  out.mkdir(parents=True, exist_ok=True)
  if multi and resume:
    raise CheckpointError("resuming is supported in single-process runs only")
  ckpt = (_NoCheckpoints() if multi else
          Checkpointer(out / "checkpoints", _fingerprint(config, x, y)))
  state, history = None, []
  if resume:
    try:
      state, history = ckpt.restore(_train.init_state(config, x.shape[1], n_classes))
    except CheckpointError:
      ckpt.close()
      raise
    if int(state.epoch) > config.epochs:
      ckpt.close()
      raise ValueError(f"the run in {out} has done {int(state.epoch)} epochs already; "
                       f"epochs={config.epochs} would not continue it")
  # Written only once the checkpoint (if any) is known to belong to this configuration.
  if jax.process_index() == 0:
    (out / "config.json").write_text(json.dumps(
        {"train": config.to_dict(), "data": dataclasses.asdict(data),
         "checkpoint_every": checkpoint_every}, indent=2))

  rows: list[dict] = list(history)
  last = {"state": state}

  def callback(st, row):
    rows.append(row)
    last["state"] = st
    epoch = row["epoch"]
    if epoch % checkpoint_every == 0 or epoch == config.epochs:
      ckpt.save(st, rows)
    if on_epoch is not None:
      on_epoch(row)
    if stop_after is not None and stop_after <= epoch < config.epochs:
      raise KeyboardInterrupt

  start = time.perf_counter()
  try:
    result = _train.fit(x, y, config, val=val, n_classes=n_classes, state=state,
                        history=history, callback=callback, mesh=mesh)
  except KeyboardInterrupt:
    st = last["state"]
    if st is not None and (ckpt.latest_epoch() or 0) < int(st.epoch):
      ckpt.save(st, rows)
    ckpt.close()
    raise Interrupted(0 if st is None else int(st.epoch), out) from None
  seconds = time.perf_counter() - start
  if (ckpt.latest_epoch() or 0) < int(result.state.epoch):
    ckpt.save(result.state, result.history)
  ckpt.close()
  if mesh is not None:  # replicated global arrays -> host copies for the outputs
    result.params = jax.device_get(result.params)
  if multi and jax.process_index() != 0:
    return {}
  metrics = _write_outputs(out, config, data, prep, result, seconds, plots,
                           mesh=None if mesh is None else dict(mesh.shape))
  return metrics


class _NoCheckpoints:
  """Stands in for :class:`Checkpointer` where checkpoints are not written."""

  def latest_epoch(self):
    return None

  def save(self, state, history):
    pass

  def close(self):
    pass


def _write_outputs(out, config, data, prep, result, seconds, plots, mesh=None) -> dict:
  dtype = np.dtype(config.dtype)
  cd = _train._compute_dtype(config)
  params = result.params
  metrics: dict = {"dataset": prep.dataset.name, "n_classes": prep.dataset.n_classes,
                   "n_features": prep.dataset.n_features}
  arrays = {part: prep.arrays(part, dtype) for part in ("train", "val", "test")}
  for part, (xs, ys) in arrays.items():
    loss, acc = _train.evaluate(params, xs, ys, compute_dtype=cd)
    metrics[part] = {"n": int(xs.shape[0]), "accuracy": float(acc), "log_loss": float(loss)}
  metrics["train"]["objective"] = float(_model.loss(params, *arrays["train"], l2=config.l2,
                                                    compute_dtype=cd))
  metrics.update(epochs=int(result.state.epoch), stopped_early=result.stopped_early,
                 seconds_this_session=seconds, mesh=mesh, **_device_info())
  if result.stopped_early:
    best = min(result.history, key=lambda r: r["val_loss"])
    metrics["best_epoch"] = best["epoch"]
  (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
  _write_history(result.history, out / "history.csv")
  _save_params(params, out / "params.npz")
  (out / "model.json").write_text(json.dumps({
      "dataset": prep.dataset.name, "citation": prep.dataset.citation,
      "feature_names": list(prep.dataset.feature_names),
      "class_names": list(prep.dataset.class_names),
      "label_name": _label_name(prep.dataset, data),
      "standardizer": prep.scaler.to_dict(), "dtype": config.dtype,
      "compute_dtype": config.compute_dtype}, indent=2))
  if plots:
    _draw(out, config, prep, params, result.history, arrays)
  return metrics


def _label_name(ds, data) -> str | None:
  """The header name of the label column (so that ``predict`` can find labels in new data)."""
  if ds.name == "iris":
    return "species"
  if ds.name == "digits":
    return "digit"
  if isinstance(data.label, str):
    return data.label
  if data.dataset not in ("blobs",):
    header = _csv._read_table(data.dataset).header
    return header[data.label]
  return None


def _draw(out, config, prep, params, history, arrays) -> None:
  from . import _plots

  _plots.curves(history, out / "curves.png")
  xt, yt = arrays["test"]
  if xt.shape[0]:
    pred = np.asarray(_model.predict(params, xt))
    _plots.confusion(yt, pred, prep.dataset.class_names, out / "confusion_matrix.png")
  if prep.dataset.name == "iris" or prep.dataset.n_features == 2:
    # scikit-learn's iris example: the first two features (sepal length and width).
    x2, y2 = arrays["train"]
    x2 = x2[:, :2]
    cfg2 = dataclasses.replace(config, patience=None)
    two = _train.fit(x2, y2, cfg2, n_classes=prep.dataset.n_classes).params
    _plots.decision_regions(lambda g: _model.predict(two, g), x2, y2,
                            prep.dataset.feature_names[:2], prep.dataset.class_names,
                            out / "decision_regions.png",
                            title=f"{prep.dataset.name}: model on the first two features")


def load_run(run) -> tuple[dict, dict, dict]:
  """``(config, model info, params)`` of a finished run directory."""
  run = pathlib.Path(run)
  for name in ("config.json", "model.json", "params.npz"):
    if not (run / name).exists():
      raise FileNotFoundError(f"{run} is not a finished run: {name} is missing")
  return (json.loads((run / "config.json").read_text()),
          json.loads((run / "model.json").read_text()), load_params(run / "params.npz"))


def predict_run(run, path, out=None) -> tuple[pathlib.Path, dict]:
  """Predict the rows of the CSV file ``path`` with the model of ``run``.

  The file needs a header naming the model's feature columns (any order; other
  columns are ignored).  If it also has the label column, accuracy is reported.
  Writes ``out`` (default ``<run>/predictions.csv``): one row per input row with
  the predicted class and the probability of every class.

  Returns:
    ``(output path, summary)`` with ``n`` and, when labels were present, ``accuracy``.
  """
  config, info, params = load_run(run)
  x, y = _data.read_features(path, info["feature_names"], label=info.get("label_name"),
                             class_names=info["class_names"])
  scaler = _data.Standardizer.from_dict(info["standardizer"])
  dtype = np.dtype(info.get("dtype", "float32"))
  if dtype == np.float64 and not jax.config.jax_enable_x64:
    jax.config.update("jax_enable_x64", True)
  xs = scaler.transform(np.asarray(x, np.float64)).astype(dtype)
  cd = info.get("compute_dtype")
  proba = np.asarray(_model.predict_proba(params, xs,
                                          compute_dtype=None if cd is None else np.dtype(cd)))
  pred = proba.argmax(axis=1)
  out = pathlib.Path(out) if out is not None else pathlib.Path(run) / "predictions.csv"
  classes = info["class_names"]
  with open(out, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["row", "predicted"] + [f"p_{c}" for c in classes])
    for i, (k, p) in enumerate(zip(pred, proba, strict=True)):
      w.writerow([i + 1, classes[k]] + [f"{v:.6g}" for v in p])
  summary: dict = {"n": int(len(pred))}
  if y is not None:
    summary["accuracy"] = float(np.mean(pred == np.asarray(y)))
  return out, summary
