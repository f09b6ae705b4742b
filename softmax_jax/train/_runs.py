"""Training runs on disk: data, training, checkpoints, outputs and predictions.

A run directory holds::

    config.json     the exact configuration (data, training, checkpointing)
    model.json      feature and class names, standardisation, backend
    params.npz      the trained parameters
    metrics.json    train / validation / test accuracy and log-loss, timing
    history.csv     one row per epoch
    curves.png, confusion_matrix.png, decision_regions.png (iris and 2-feature data)
    checkpoints/    orbax checkpoints, every ``checkpoint_every`` epochs and at the end
    manifest.json   written last: SHA-256 of every other output, package version
    .lock           held (``flock``) by the run writing the directory

Every file is written under a temporary name and renamed; ``predict`` and
``--resume`` check the manifest first (see ``_rundir``).  Checkpoints carry
their own digest (``_checkpoint``).

``softmax-jax train`` and ``softmax-jax predict`` are thin wrappers over
:func:`train_run` and :func:`predict_run`.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import os
import pathlib
import time
import zipfile
from collections.abc import Callable

import jax
import numpy as np

from softmax_jax.train import _datasets, _loop, _model, _rundir
from softmax_jax.train._checkpoint import Checkpointer, CheckpointError, digest
from softmax_jax.train._datasets import _csv
from softmax_jax.train._rundir import RunError

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

  dataset: _datasets.Dataset
  split: _datasets.Split
  scaler: _datasets.Standardizer

  def arrays(self, part: str, dtype=np.float32):
    ds = getattr(self.split, part)
    return self.scaler.transform(ds.x).astype(dtype), ds.y.astype(np.int32)


def prepare(data: DataConfig) -> Prepared:
  """Load, split (stratified, from ``data.seed``) and standardise (on the training split)."""
  ds = _datasets.load_dataset(data.dataset, label=data.label, n_samples=data.n_samples,
                          n_features=data.n_features, n_classes=data.n_classes, seed=data.seed)
  parts = _datasets.split(ds, val_fraction=data.val_fraction, test_fraction=data.test_fraction,
                      seed=data.seed)
  for part, fraction in (("val", data.val_fraction), ("test", data.test_fraction)):
    if fraction > 0 and getattr(parts, part).n_samples == 0:
      raise _datasets.DataError(
          f"{data.dataset}: {ds.n_samples} samples in {ds.n_classes} classes are too few for "
          f"the split: the {part} part (--{part}-fraction {fraction}) would be empty; give "
          f"more data or --{part}-fraction 0")
  try:
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused just below
      scaler = _datasets.Standardizer.fit(parts.train.x)
  except ValueError:  # finite values whose mean or variance overflows float64
    with np.errstate(over="ignore", invalid="ignore"):
      x = parts.train.x
      bad = ~(np.isfinite(x.mean(axis=0)) & np.isfinite(x.std(axis=0)))
    j = int(np.flatnonzero(bad)[0]) if bad.any() else 0
    raise _datasets.DataError(
        f"{data.dataset}, column {ds.feature_names[j]!r}: values up to "
        f"{float(np.abs(x[:, j]).max()):.3g} are too large: their mean or variance overflows "
        "float64; rescale the column") from None
  return Prepared(ds, parts, scaler)


def _fingerprint(config: _loop.TrainConfig, arrays) -> dict:
  """What a checkpoint must match to be resumed: the configuration and all the data."""
  fp = {k: v for k, v in config.to_dict().items() if k not in _IGNORED_IN_FINGERPRINT}
  fp["data_sha256"] = digest(arrays)
  return fp


def _device_info() -> dict:
  dev = jax.devices()[0]
  return {"backend": jax.default_backend(), "device": dev.device_kind,
          "device_count": jax.device_count(), "jax": jax.__version__}


def _save_params(params, path) -> None:
  flat = {"/".join(str(getattr(k, "key", k)) for k in keys): np.asarray(v)
          for keys, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  with _rundir.atomic(path) as tmp:
    with open(tmp, "wb") as f:
      np.savez(f, **flat)


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


def _write_history(history, path) -> None:
  if not history:
    return
  buf = io.StringIO()
  w = csv.DictWriter(buf, fieldnames=list(history[0]))
  w.writeheader()
  w.writerows(history)
  _rundir.write_text(path, buf.getvalue())


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
  """Refuse an unusable run directory before any work (checked again under the lock)."""
  flag = "--resume" if resume else "--out"
  if out.exists() and not out.is_dir():
    raise RunError(f"{flag} {out} is a file, not a directory")
  if resume:
    if not (out / "config.json").exists():
      raise CheckpointError(f"--resume {out}: no run there (config.json is missing)")
  elif _rundir.holds_files(out) and not overwrite:
    raise FileExistsError(f"{out} already holds files; choose another --out, continue it with "
                          "--resume, or pass --overwrite")
  probe = out
  while not probe.exists() and probe != probe.parent:
    probe = probe.parent
  if not probe.is_dir():
    raise RunError(f"{flag} {out}: {probe} is a file, so the directory cannot be created")
  if not os.access(probe, os.W_OK | os.X_OK):
    raise RunError(f"{flag} {out}: {probe} is not writable; choose another --out")


def train_run(config: _loop.TrainConfig, data: DataConfig, out, *, checkpoint_every: int = 10,
              resume: bool = False, overwrite: bool = False, plots: bool = True,
              on_epoch: Callable[[dict], None] | None = None,
              stop_after: int | None = None, mesh=None,
              should_stop: Callable[[], bool] | None = None) -> dict:
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

    should_stop: polled after every epoch; when it returns true the run stops
      as on an interruption (the command line sets it from SIGINT and SIGTERM).

  Raises:
    Interrupted: on ``KeyboardInterrupt``, ``stop_after`` or ``should_stop``,
      after checkpointing.
    CheckpointError: when ``resume`` finds no usable checkpoint.
    RunError: ``out`` is in use by another run, cannot be written, or (with
      ``resume``) does not match its manifest.
  """
  out = pathlib.Path(out)
  multi = jax.process_count() > 1
  if checkpoint_every < 1:
    raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
  _check_out(out, resume, overwrite)
  if multi:  # every process has checked the directory before process 0 writes to it
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices("softmax_jax.train_run: output directory checked")
  if multi and resume:
    raise CheckpointError("resuming is supported in single-process runs only")
  if mesh is not None:
    _loop.check_data_parallel(config, mesh)
  prep = prepare(data)  # bad data is refused before anything is written
  writer = jax.process_index() == 0
  with _rundir.RunLock(out) if writer else contextlib.nullcontext():
    return _train_locked(config, data, out, prep, checkpoint_every=checkpoint_every,
                         resume=resume, overwrite=overwrite, plots=plots, on_epoch=on_epoch,
                         stop_after=stop_after, should_stop=should_stop, mesh=mesh,
                         multi=multi, writer=writer)


def _train_locked(config, data, out, prep, *, checkpoint_every, resume, overwrite, plots,
                  on_epoch, stop_after, should_stop, mesh, multi, writer) -> dict:
  """The part of :func:`train_run` that runs while holding the directory's lock."""
  dtype = np.dtype(config.dtype)
  x, y = prep.arrays("train", dtype)
  val = prep.arrays("val", dtype)
  n_classes = prep.dataset.n_classes
  if writer:
    if resume:  # the run being continued must be the one its files say it is
      _rundir.verify_manifest(out, complete=False, need=("config.json",))
    elif _rundir.holds_files(out):
      if not overwrite:  # written by a run that finished while this one loaded its data
        raise FileExistsError(f"{out} already holds files; choose another --out, continue it "
                              "with --resume, or pass --overwrite")
      _rundir.clear(out)  # so that a later --resume cannot find a stale checkpoint
  ckpt = (_NoCheckpoints() if multi else
          Checkpointer(out / "checkpoints",
                       _fingerprint(config, [prep.arrays(p, dtype)
                                             for p in ("train", "val", "test")])))
  state, history = None, []
  if resume:
    try:
      state, history = ckpt.restore(_loop.init_state(config, x.shape[1], n_classes))
    except CheckpointError:
      ckpt.close()
      raise
    if int(state.epoch) > config.epochs:
      ckpt.close()
      raise ValueError(f"the run in {out} has done {int(state.epoch)} epochs already; "
                       f"--epochs {config.epochs} would not continue it")
  # Written only once the checkpoint (if any) is known to belong to this configuration;
  # until the final manifest the directory reads as incomplete.
  if writer:
    _rundir.remove_manifest(out)
    _rundir.write_json(out / "config.json",
                       {"train": config.to_dict(), "data": dataclasses.asdict(data),
                        "checkpoint_every": checkpoint_every})
    _rundir.write_manifest(out, ["config.json"], complete=False)

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
    if epoch < config.epochs and ((stop_after is not None and stop_after <= epoch)
                                  or (should_stop is not None and should_stop())):
      raise KeyboardInterrupt

  start = time.perf_counter()
  try:
    if should_stop is not None and should_stop():
      raise KeyboardInterrupt
    result = _loop.fit(x, y, config, val=val, n_classes=n_classes, state=state,
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
  if not writer:
    return {}
  return _write_outputs(out, config, data, prep, result, seconds, plots,
                        mesh=None if mesh is None else dict(mesh.shape))


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
  cd = _loop._compute_dtype(config)
  params = result.params
  metrics: dict = {"dataset": prep.dataset.name, "n_classes": prep.dataset.n_classes,
                   "n_features": prep.dataset.n_features}
  arrays = {part: prep.arrays(part, dtype) for part in ("train", "val", "test")}
  # One compiled call per split (op by op it took a compilation per operation and shape).
  scores = jax.jit(lambda p, xs, ys: (*_loop.evaluate(p, xs, ys, compute_dtype=cd),
                                      _model.loss(p, xs, ys, l2=config.l2, compute_dtype=cd)))
  for part, (xs, ys) in arrays.items():
    if xs.shape[0]:
      loss, acc, objective = scores(params, xs, ys)
    else:
      loss = acc = objective = float("nan")
    metrics[part] = {"n": int(xs.shape[0]), "accuracy": float(acc), "log_loss": float(loss)}
    if part == "train":
      metrics[part]["objective"] = float(objective)
  metrics.update(epochs=int(result.state.epoch), stopped_early=result.stopped_early,
                 seconds_this_session=seconds, mesh=mesh, **_device_info())
  if result.stopped_early:
    best = min(result.history, key=lambda r: r["val_loss"])
    metrics["best_epoch"] = best["epoch"]
  metrics = _rundir.finite_or_none(metrics)  # an empty split has no accuracy: null, not NaN
  _rundir.write_json(out / "metrics.json", metrics)
  _write_history(result.history, out / "history.csv")
  _save_params(params, out / "params.npz")
  _rundir.write_json(out / "model.json", {
      "dataset": prep.dataset.name, "citation": prep.dataset.citation,
      "feature_names": list(prep.dataset.feature_names),
      "class_names": list(prep.dataset.class_names),
      "label_name": _label_name(prep.dataset, data),
      "standardizer": prep.scaler.to_dict(), "dtype": config.dtype,
      "compute_dtype": config.compute_dtype})
  written = ["config.json", "metrics.json", "history.csv", "params.npz", "model.json"]
  if plots:
    written += _draw(out, config, prep, params, result.history, arrays)
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
  if data.dataset not in ("blobs",):
    header = _csv._read_table(data.dataset).header
    return header[data.label]
  return None


def _draw(out, config, prep, params, history, arrays) -> list[str]:
  """Draw the figures (each written atomically); returns their file names."""
  from softmax_jax.train import _plots

  drawn = []

  def figure(name, draw, *args, **kwargs):
    with _rundir.atomic(out / name) as tmp:
      draw(*args, tmp, **kwargs)
    drawn.append(name)

  figure("curves.png", _plots.curves, history)
  xt, yt = arrays["test"]
  if xt.shape[0]:
    pred = np.asarray(_model.predict(params, xt))
    figure("confusion_matrix.png", _plots.confusion, yt, pred, prep.dataset.class_names)
  x2, y2 = arrays["train"]
  names, classes = prep.dataset.feature_names[:2], prep.dataset.class_names
  if prep.dataset.n_features == 2:  # the run's own model: no second fit
    figure("decision_regions.png", _plots.decision_regions,
           lambda g: _model.predict(params, g), x2, y2, names, classes,
           title=f"{prep.dataset.name}: the trained model")
  elif prep.dataset.name == "iris":
    # scikit-learn's iris example: a second model on the first two features only.
    cfg2 = dataclasses.replace(config, patience=None)
    two = _loop.fit(x2[:, :2], y2, cfg2, n_classes=prep.dataset.n_classes).params
    figure("decision_regions.png", _plots.decision_regions,
           lambda g: _model.predict(two, g), x2[:, :2], y2, names, classes,
           title=f"{prep.dataset.name}: a separate 2-feature model (not the trained "
                 f"{prep.dataset.n_features}-feature one)")
  return drawn


def load_run(run) -> tuple[dict, dict, dict]:
  """``(config, model info, params)`` of a finished run directory, checked.

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
  return config, info, params


def _check_model(info_path, info, params_path, params) -> None:
  """Refuse a ``model.json`` and ``params.npz`` that do not describe one model."""
  for key, kind in (("feature_names", list), ("class_names", list), ("standardizer", dict)):
    if not isinstance(info.get(key), kind) or not info[key]:
      raise RunError(f"{info_path}: {key!r} is missing or not a non-empty {kind.__name__}")
  for key in ("feature_names", "class_names"):
    if not all(isinstance(v, str) for v in info[key]) or len(set(info[key])) != len(info[key]):
      raise RunError(f"{info_path}: {key!r} must be distinct strings")
  if info.get("dtype", "float32") not in _loop.DTYPES:
    raise RunError(f"{info_path}: dtype must be one of {_loop.DTYPES}, got {info['dtype']!r}")
  if info.get("compute_dtype") not in _loop.COMPUTE_DTYPES:
    raise RunError(f"{info_path}: compute_dtype must be one of {_loop.COMPUTE_DTYPES}")
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


def predict_run(run, path, out=None) -> tuple[pathlib.Path, dict]:
  """Predict the rows of the CSV file ``path`` with the model of ``run``.

  The file needs a header naming the model's feature columns (any order; other
  columns are ignored).  If it also has the label column, accuracy is reported.
  Writes ``out`` (default ``<run>/predictions.csv``): one row per input row with
  the predicted class and the probability of every class.

  Returns:
    ``(output path, summary)`` with ``n`` and, when labels were present, ``accuracy``.

  Raises:
    RunError: the run is incomplete, changed or damaged (see :func:`load_run`).
    DataError: a problem with ``path``; a value that overflows the model's dtype
      once standardised is refused with its row and column.
  """
  config, info, params = load_run(run)
  x, y = _datasets.read_features(path, info["feature_names"], label=info.get("label_name"),
                             class_names=info["class_names"])
  scaler = _datasets.Standardizer.from_dict(info["standardizer"])
  dtype = np.dtype(info.get("dtype", "float32"))
  if dtype == np.float64 and not jax.config.jax_enable_x64:
    jax.config.update("jax_enable_x64", True)
  with np.errstate(over="ignore", invalid="ignore"):
    xs = scaler.transform(np.asarray(x, np.float64)).astype(dtype)
  bad = np.argwhere(~np.isfinite(xs))
  if bad.size:
    i, j = bad[0]
    raise _datasets.DataError(f"{path}, data row {i + 1}, column {info['feature_names'][j]!r}: "
                          f"{float(x[i, j])!r} overflows {dtype} once standardised")
  cd = info.get("compute_dtype")
  proba = np.asarray(_model.predict_proba(params, xs,
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
  return out, summary
