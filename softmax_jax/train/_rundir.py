"""A run directory as one consistent thing: a lock, atomic files and a manifest.

* ``RunLock``: an exclusive ``fcntl.flock`` on ``<run>/.lock`` for the life of a
  run; a second writer is refused with the holder's process id.  The kernel
  drops the lock when its process dies, so a lock left by a crash is simply
  taken over.
* ``atomic``: every output is written under a temporary name in the same
  folder and renamed with ``os.replace``, so a file is either the old one or
  the whole new one.
* ``manifest.json``, written last: the SHA-256 of every file the run wrote and
  the package version.  ``complete: false`` while a run is going (it then
  lists ``config.json`` only), ``true`` once every output is in place.
  ``verify_manifest`` refuses a missing, changed or incomplete file, naming it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import pathlib
import shutil

MANIFEST = "manifest.json"
LOCK = ".lock"
_TMP = ".tmp-"
# Every name a run writes (removed by --overwrite, besides those in the old manifest).
OUTPUTS = ("config.json", "model.json", "params.npz", "metrics.json", "history.csv",
           "curves.png", "confusion_matrix.png", "decision_regions.png", "predictions.csv",
           "checkpoints", MANIFEST)


class RunError(ValueError):
  """A run directory that cannot be used: busy, incomplete, changed or damaged."""


def _version() -> str:
  from softmax_jax import __version__

  return __version__


@contextlib.contextmanager
def atomic(path):
  """Yield a temporary path next to ``path``; rename it to ``path`` if the block succeeds.

  The temporary name keeps ``path``'s suffix (matplotlib picks the format from it).
  """
  path = pathlib.Path(path)
  tmp = path.with_name(_TMP + path.name)
  try:
    yield tmp
    os.replace(tmp, path)
  finally:
    with contextlib.suppress(FileNotFoundError):
      tmp.unlink()


def write_text(path, text: str) -> None:
  with atomic(path) as tmp:
    with open(tmp, "w", newline="") as f:
      f.write(text)


def finite_or_none(obj):
  """``obj`` with every NaN or infinite float replaced by ``None`` (strict JSON)."""
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  if isinstance(obj, dict):
    return {k: finite_or_none(v) for k, v in obj.items()}
  if isinstance(obj, list | tuple):
    return [finite_or_none(v) for v in obj]
  return obj


def write_json(path, obj) -> None:
  """Strict JSON (no NaN or Infinity), written atomically."""
  write_text(path, json.dumps(finite_or_none(obj), indent=2, allow_nan=False) + "\n")


def read_json(path) -> dict:
  """A JSON object from ``path``; any problem is a ``RunError`` naming the file."""
  path = pathlib.Path(path)
  try:
    text = path.read_text()
  except FileNotFoundError:
    raise RunError(f"{path} is missing") from None
  except (OSError, UnicodeDecodeError) as e:
    raise RunError(f"{path}: cannot read it ({e})") from None
  try:
    obj = json.loads(text)
  except json.JSONDecodeError as e:
    raise RunError(f"{path}, line {e.lineno}, column {e.colno}: not valid JSON ({e.msg})") from None
  if not isinstance(obj, dict):
    raise RunError(f"{path}: expected a JSON object, found {type(obj).__name__}")
  return obj


def sha256(path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


class RunLock:
  """An exclusive lock on the run directory ``out`` (created if needed)."""

  def __init__(self, out):
    self.out = pathlib.Path(out)
    self._fd = None

  def __enter__(self) -> RunLock:
    import fcntl

    self.out.mkdir(parents=True, exist_ok=True)
    path = self.out / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
      os.close(fd)
      raise RunError(f"{self.out} is in use by another run (pid {holder}, lock file {path}); "
                     "wait for it to finish or choose another --out") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    self._fd = fd
    return self

  def __exit__(self, *exc) -> None:
    if self._fd is not None:
      os.close(self._fd)  # releases the flock; the file stays (harmless, ignored)
      self._fd = None


def holds_files(out) -> bool:
  """Whether ``out`` holds anything besides the lock file."""
  out = pathlib.Path(out)
  return out.is_dir() and any(p.name != LOCK for p in out.iterdir())


def clear(out) -> None:
  """Remove what an earlier run wrote into ``out`` (for ``--overwrite``); keeps the lock."""
  out = pathlib.Path(out)
  names = set(OUTPUTS)
  with contextlib.suppress(RunError):
    names |= {n.split("/")[0] for n in read_json(out / MANIFEST).get("files", {})}
  for p in out.iterdir():
    if p.name in names or p.name.startswith(_TMP):
      if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
      else:
        p.unlink()


def _listed(out: pathlib.Path, names) -> list[str]:
  files = []
  for name in names:
    p = out / name
    if p.is_dir():
      files += sorted(str(f.relative_to(out)) for f in p.rglob("*") if f.is_file())
    elif p.exists():
      files.append(name)
  return files


def write_manifest(out, names, *, complete: bool) -> None:
  """Write ``manifest.json`` with the digest of each file (or folder's files) in ``names``."""
  out = pathlib.Path(out)
  files = {name: sha256(out / name) for name in _listed(out, names)}
  write_json(out / MANIFEST, {"package": "softmax_jax", "version": _version(),
                              "complete": complete, "files": files})


def remove_manifest(out) -> None:
  with contextlib.suppress(FileNotFoundError):
    (pathlib.Path(out) / MANIFEST).unlink()


def verify_manifest(out, *, complete: bool, need=()) -> dict:
  """Check every file listed in ``out``'s manifest; returns the manifest.

  Args:
    out: the run directory.
    complete: require a finished run (``predict``); ``False`` also accepts an
      interrupted one (``--resume``).
    need: files that must be listed (those the caller is about to read).

  Raises:
    RunError: naming the manifest or the first missing or changed file.
  """
  out = pathlib.Path(out)
  path = out / MANIFEST
  if not path.exists():
    raise RunError(f"{path} is missing: {out} is not a complete run (it was interrupted while "
                   "its outputs were written, is still being written, or was written by an "
                   "older softmax_jax); train it again")
  manifest = read_json(path)
  files = manifest.get("files")
  if not isinstance(files, dict) or not isinstance(manifest.get("complete"), bool):
    raise RunError(f"{path}: not a manifest written by softmax_jax (no 'files' or 'complete')")
  if complete and not manifest["complete"]:
    raise RunError(f"{path}: the run in {out} did not finish (interrupted or still running); "
                   f"continue it with `softmax-jax train --resume {out}`")
  for name in need:
    if name not in files:
      raise RunError(f"{out / name} is not listed in {path}; the run is incomplete")
  for name, want in files.items():
    p = out / name
    if not p.is_file():
      raise RunError(f"{p} is missing (listed in {path})")
    if sha256(p) != want:
      raise RunError(f"{p} was changed after the run wrote it (its SHA-256 does not match "
                     f"{path})")
  return manifest
