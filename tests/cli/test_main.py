"""The softmax-jax command line."""

import subprocess
import sys

import pytest

from softmax_jax import cli

pytestmark = pytest.mark.x64


def test_demo_checks_every_derivative(capsys):
  assert cli.main(["demo", "--classes", "5", "--seed", "3"]) == 0
  out = capsys.readouterr().out
  assert "all derivatives agree" in out
  assert out.count("e-") >= 6  # one error figure per check


def test_no_subcommand_runs_the_demo(capsys):
  assert cli.main([]) == 0
  assert "Hessian of ξ" in capsys.readouterr().out


def test_bad_argument_is_reported(capsys):
  with pytest.raises(SystemExit) as err:
    cli.main(["demo", "--classes", "1"])
  assert err.value.code == 2
  assert "--classes must be at least 2" in capsys.readouterr().err


def test_python_dash_m():
  done = subprocess.run([sys.executable, "-m", "softmax_jax", "demo", "--classes", "3"],
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr
  assert "all derivatives agree" in done.stdout


def test_import_is_light():
  code = ("import sys, softmax_jax; heavy = [m for m in ('matplotlib', 'tqdm', 'orbax', 'torch',"
          " 'pandas', 'sklearn') if m in sys.modules]; print(heavy)")
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
  assert done.stdout.strip() == "[]", done.stdout + done.stderr


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
