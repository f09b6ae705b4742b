"""``softmax-jax train`` stopped by a signal: SIGINT and SIGTERM checkpoint and say how to
resume; a second signal, or a kill, stops it at once and leaves only whole checkpoints."""

import json
import os
import subprocess
import sys

import pytest

from softmax_jax.cli import main


def _code(argv) -> int:
  """``main``'s exit status, also when argparse exits."""
  try:
    return main(argv)
  except SystemExit as e:
    return e.code


def _start(tmp_path, *extra, every="100000"):
  """A long training run in a subprocess; returns it once its first epoch is under way."""
  import time

  out = tmp_path / "sig"
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.Popen([sys.executable, "-m", "softmax_jax", "train", "--out", str(out),
                           "--epochs", "1000000", "--checkpoint-every", every, "--quiet",
                           "--no-plots", *extra], env=env, cwd=tmp_path, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  deadline = time.monotonic() + 120
  while not (out / "manifest.json").exists():  # written just before training starts
    assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
    time.sleep(0.05)
  time.sleep(0.5)
  return proc, out


@pytest.mark.parametrize("sig, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_checkpoints_and_prints_the_resume_hint(tmp_path, capsys, sig, code):
  import re
  import signal

  proc, out = _start(tmp_path)
  proc.send_signal(getattr(signal, sig))
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == code, err
  assert "Traceback" not in err and err.count("\n") == 1, err
  done = re.search(rf"{sig}: interrupted after epoch (\d+) \(checkpoint written\); continue "
                   rf"with `softmax-jax train --resume {re.escape(str(out))}`", err)
  assert done, err
  epochs = int(done.group(1)) + 1
  assert main(["train", "--resume", str(out), "--epochs", str(epochs), "--quiet",
               "--no-plots"]) == 0
  assert json.loads((out / "metrics.json").read_text())["epochs"] == epochs


def test_a_second_signal_stops_at_once(tmp_path):
  import signal

  proc, out = _start(tmp_path)
  proc.send_signal(signal.SIGINT)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == -signal.SIGTERM, err  # killed by it, as the default action does
  assert "Traceback" not in err


@pytest.mark.internals
def test_a_signal_while_the_outputs_are_written_lets_them_finish(tmp_path, monkeypatch, capsys):
  import signal

  from softmax_jax.train import _outputs

  write = _outputs.write_outputs

  def signalled(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)  # handled by the command line: noted, not raised
    return write(*args, **kwargs)

  monkeypatch.setattr(_outputs, "write_outputs", signalled)
  out = tmp_path / "o"
  before = signal.getsignal(signal.SIGTERM)
  assert _code(["train", "--out", str(out), "--quiet", "--no-plots", "--epochs", "2"]) == 143
  err = capsys.readouterr().err
  assert f"SIGTERM after the last epoch: the run in {out} is complete" in err
  assert json.loads((out / "manifest.json").read_text())["complete"]
  assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back


def test_a_kill_during_checkpoint_writes_leaves_a_run_that_resumes_to_the_bit(tmp_path):
  """SIGKILL while checkpoints are written back to back (one due every epoch): what is
  left restores, and the resumed run equals an uninterrupted one."""
  import signal
  import time

  import numpy as np

  from softmax_jax.train import DataConfig, TrainConfig, train_run

  proc, out = _start(tmp_path, "--batch-size", "full", every="1")
  deadline = time.monotonic() + 60
  while time.monotonic() < deadline:  # kill it while a write is under way, if one is seen
    names = [p.name for p in (out / "checkpoints").iterdir()]
    if any(n.isdigit() for n in names) and any(not n.isdigit() for n in names):
      break
    assert proc.poll() is None, proc.communicate()
    time.sleep(0.005)
  proc.send_signal(signal.SIGKILL)
  proc.communicate(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  config = json.loads((out / "config.json").read_text())
  assert not json.loads((out / "manifest.json").read_text())["complete"]
  epochs = max(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit()) + 3
  assert _code(["train", "--resume", str(out), "--epochs", str(epochs), "--quiet",
                "--no-plots"]) == 0
  reference = tmp_path / "ref"
  train = TrainConfig.from_dict({**config["train"], "epochs": epochs})
  train_run(train, DataConfig(**config["data"]), reference, plots=False)
  a, b = np.load(out / "params.npz"), np.load(reference / "params.npz")
  assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)
