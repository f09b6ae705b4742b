"""The softmax-jax command line: the dispatcher, ``demo``, and what a command costs to start.

These run with x64 off, as a user's process does: ``demo`` turns float64 on for itself.
``verify`` and ``bench`` are tested in tests/verify and tests/bench, ``train`` and
``predict`` in tests/cli/test_train.py.
"""

import ast
import pathlib
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from softmax_jax import cli

CLI = pathlib.Path(cli.__file__).parent


def test_demo_checks_every_derivative(capsys):
  assert cli.main(["demo", "--classes", "5", "--seed", "3"]) == 0
  out = capsys.readouterr().out
  assert "all derivatives agree" in out
  assert out.count("e-") >= 6  # one error figure per check


def test_demo_computes_in_float64_and_leaves_the_process_in_float32(capsys):
  assert not jax.config.jax_enable_x64
  assert cli.main(["demo", "--classes", "3"]) == 0
  assert "float64" in capsys.readouterr().out.splitlines()[0]
  assert not jax.config.jax_enable_x64
  assert jnp.zeros(2).dtype == jnp.float32


def test_no_subcommand_runs_the_demo(capsys):
  assert cli.main([]) == 0
  assert "Hessian of ξ" in capsys.readouterr().out


@pytest.mark.parametrize("classes,message", [
    ("1", "--classes must be at least 2"),
    # Full C×C Jacobians of a million classes would be terabytes: refused, not an OOM.
    ("1000000", "--classes must be at most 4096: the demo builds full C×C Jacobians"),
])
def test_bad_argument_is_reported(capsys, classes, message):
  with pytest.raises(SystemExit) as err:
    cli.main(["demo", "--classes", classes])
  assert err.value.code == 2
  err_text = capsys.readouterr().err
  assert message in err_text and "Traceback" not in err_text


@pytest.mark.parametrize("args,message", [
    (["--seed", "-1"], "--seed: must be an integer >= 0, got '-1'"),
    (["--scale", "nan"], "--scale: must be a finite number, got 'nan'"),
    (["--scale", "inf"], "--scale: must be a finite number, got 'inf'"),
    (["--classes", "abc"], "--classes: invalid int value: 'abc'"),
])
def test_demo_refuses_bad_arguments_in_one_line(capsys, args, message):
  with pytest.raises(SystemExit) as err:
    cli.main(["demo", *args])
  assert err.value.code == 2
  out = capsys.readouterr().err
  assert message in out and len(out.strip().splitlines()) == 1, out


@pytest.mark.internals  # patches a function the demo looks up in the package
def test_demo_reports_a_nan_derivative_as_a_mismatch(monkeypatch, capsys):
  import softmax_jax as sj

  monkeypatch.setattr(sj, "softmax_jacobian", lambda z: jnp.full((z.size, z.size), jnp.nan))
  assert cli.main(["demo"]) == 1
  assert "MISMATCH (worst nan" in capsys.readouterr().out


def test_python_dash_m():
  done = subprocess.run([sys.executable, "-m", "softmax_jax", "demo", "--classes", "3"],
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr
  assert "all derivatives agree" in done.stdout


def _top_level_imports(path):
  for node in ast.parse(path.read_text()).body:
    if isinstance(node, ast.Import):
      yield from (a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
      yield node.module


@pytest.mark.parametrize("path", sorted(CLI.glob("*.py")), ids=lambda p: p.name)
def test_cli_modules_import_only_the_standard_library_at_the_top(path):
  """JAX, NumPy and the numerical modules are imported by the functions that run a command."""
  allowed = set(sys.stdlib_module_names)
  found = [m for m in _top_level_imports(path)
           if m.partition(".")[0] not in allowed and not m.startswith("softmax_jax.cli")]
  assert not found, f"{path.name} imports {found} at the top"


# What --help and an argument error must not have imported: the tools, the trainer and
# their heavy dependencies (``softmax_jax`` itself, and so JAX, come with the package).
_LATE = ("softmax_jax.verify", "softmax_jax.bench", "softmax_jax.train", "optax", "matplotlib",
         "tqdm", "orbax")


@pytest.mark.parametrize("argv", [
    ["--help"], ["bench", "--help"], ["train", "--help"],
    ["bench", "--shapes", "3x"], ["verify", "--dtypes", "float8"], ["demo", "--classes", "1"],
    ["train", "--epochs", "0"],
])
def test_help_and_argument_errors_import_no_tool_and_no_trainer(argv):
  code = (f"import sys\nfrom softmax_jax import cli\ntry:\n  cli.main({argv!r})\n"
          f"except SystemExit as e:\n  code = e.code\n"
          f"print(code, [m for m in {_LATE!r} if m in sys.modules])")
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
  expect = "0" if "--help" in argv else "2"
  assert done.stdout.strip().splitlines()[-1] == f"{expect} []", done.stdout + done.stderr
  if expect == "2":
    assert len(done.stderr.strip().splitlines()) == 1 and "error:" in done.stderr, done.stderr


@pytest.mark.parametrize("args,names", [
    (["--dtypes", "float16x"], "--dtypes: unknown dtype 'float16x'"),
    (["--scales", "abc"], "--scales: 'abc' is not a valid scale"),
    (["--scales", "0"], "--scales: '0' is not a valid scale"),
    (["--classes", "1"], "--classes: '1' is not a valid class count"),
    (["--json", "/nonexistent-folder/rows.json"], "--json: the folder /nonexistent-folder"),
])
def test_verify_refuses_bad_arguments_before_any_work(capsys, args, names):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(["verify", "--quick", *args])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert names in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def _wait_until_handled(proc, sig, timeout=60.0):
  """Waits until ``proc`` has a handler for ``sig`` (Linux: the SigCgt mask in /proc)."""
  import time
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    try:
      status = pathlib.Path(f"/proc/{proc.pid}/status").read_text()
    except FileNotFoundError:
      return
    caught = int(next(line.split()[1] for line in status.splitlines()
                      if line.startswith("SigCgt:")), 16)
    if caught >> (sig - 1) & 1 and proc.poll() is None:
      return
    time.sleep(0.005)
  pytest.fail(f"the process never handled signal {sig}")


@pytest.mark.skipif(not pathlib.Path("/proc/self/status").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("argv,sig,code", [
    (["verify", "--quick"], signal.SIGINT, 130),
    (["bench", "--shapes", "64x16", "--repeats", "2"], signal.SIGTERM, 143),
    (["demo"], signal.SIGINT, 130),
])
def test_a_signal_while_a_command_starts_is_one_line_and_128_plus_its_number(argv, sig, code):
  if signal.getsignal(sig) is signal.SIG_IGN:  # inherited by the child, which keeps it
    pytest.skip(f"{sig.name} is ignored by this test process")
  # Sent as soon as the command line has its handlers, i.e. while JAX is being imported.
  proc = subprocess.Popen([sys.executable, "-m", "softmax_jax", *argv], text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  _wait_until_handled(proc, signal.SIGTERM)
  proc.send_signal(sig)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == code, err
  assert "Traceback" not in err + out
  assert err.strip().splitlines()[-1] == f"softmax-jax {argv[0]}: stopped by {sig.name}"


def test_the_start_up_handlers_leave_an_ignored_signal_ignored_and_are_removed_after():
  from softmax_jax.cli import _main
  before = signal.signal(signal.SIGTERM, signal.SIG_IGN)
  try:
    with pytest.raises(SystemExit):
      _main.main(["verify", "--scales", "abc"])  # a bad argument: argparse exits with 2
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
  finally:
    signal.signal(signal.SIGTERM, before)
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
