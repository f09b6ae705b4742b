"""The package's layers: each is a folder, no module imports from a layer above it (nor
loads one when imported), and no module is longer than a reader can hold."""

import ast
import pathlib
import subprocess
import sys

import pytest

import softmax_jax

ROOT = pathlib.Path(softmax_jax.__file__).parent

# Lowest first.  A module may import modules of its own layer or of a lower one.
LAYERS = (
    ("foundation", ("softmax_jax._arguments", "softmax_jax._numerics",
                    "softmax_jax._xla_workarounds")),
    ("kernels", ("softmax_jax._kernels",)),
    ("library", ("softmax_jax", "softmax_jax._softmax", "softmax_jax._jacobian",
                 "softmax_jax.losses", "softmax_jax.sharded")),
    ("tools", ("softmax_jax.verify", "softmax_jax.bench")),
    ("trainer", ("softmax_jax.train", "softmax_jax.model", "softmax_jax.datasets")),
    ("cli", ("softmax_jax.cli", "softmax_jax.__main__")),
)


def _module_name(path: pathlib.Path) -> str:
  parts = ("softmax_jax",) + path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
  """The layer of ``module``: that of the longest prefix named in LAYERS."""
  best, rank = -1, None
  for i, (_, prefixes) in enumerate(LAYERS):
    for p in prefixes:
      if (module == p or module.startswith(p + ".")) and len(p) > best:
        best, rank = len(p), i
  assert rank is not None, f"{module} is in no layer"
  return rank


def _imports(path: pathlib.Path, module: str):
  """Every softmax_jax module ``path`` imports, at the top or inside a function."""
  package = module if path.name == "__init__.py" else module.rpartition(".")[0]
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
      names = [f"{base}.{a.name}" for a in node.names]
    else:
      continue
    for name in names:
      if name == "softmax_jax" or name.startswith("softmax_jax."):
        yield node.lineno, name


MODULES = sorted(ROOT.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_from_a_layer_above_it(path):
  module = _module_name(path)
  own = _layer(module)
  above = []
  for line, name in _imports(path, module):
    # ``from softmax_jax.x import name`` may name a function, not a module: judge the
    # deepest prefix that is a module or package of the tree.
    while name.count(".") and not ((ROOT.parent / (name.replace(".", "/") + ".py")).exists()
                                   or (ROOT.parent / name.replace(".", "/")).is_dir()):
      name = name.rpartition(".")[0]
    if _layer(name) > own:
      above.append(f"line {line}: {name} ({LAYERS[_layer(name)][0]})")
  assert not above, f"{module} ({LAYERS[own][0]}) imports from a layer above it: {above}"


def test_every_module_is_in_a_layer():
  for path in MODULES:
    _layer(_module_name(path))  # raises for a module outside every layer


def test_the_layer_check_catches_an_upward_import(tmp_path):
  bad = tmp_path / "bad.py"
  bad.write_text("def f():\n  from softmax_jax.train import fit\n")
  found = [name for _, name in _imports(bad, "softmax_jax._numerics")]
  assert found and _layer(found[0]) > _layer("softmax_jax._numerics")


# ---------------------------------------------------------------------------
# Length: a module over MAX_LINES does two things (house style: split it).
# ---------------------------------------------------------------------------

MAX_LINES = 400

# Modules allowed over MAX_LINES (paths under softmax_jax/).  It should stay EMPTY: it
# held the nine modules being split while the layout was reorganised; a module that is
# one concept best read whole would be named here, with the reason in a comment.
LONG_MODULES: set[str] = set()


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_is_over_400_lines(path):
  name = path.relative_to(ROOT).as_posix()
  lines = len(path.read_text().splitlines())
  if name in LONG_MODULES:
    pytest.skip(f"{name} ({lines} lines) is on the allow-list LONG_MODULES")
  assert lines <= MAX_LINES, f"{name} has {lines} lines (more than {MAX_LINES}): split it"


# ---------------------------------------------------------------------------
# Importing a layer loads nothing above it, nor the heavy optional dependencies
# (the trainer's extras are imported by the functions that use them).
# ---------------------------------------------------------------------------

_OPTIONAL = ("orbax", "matplotlib", "tqdm", "sklearn", "pandas", "torch")
_TOOLS = ("softmax_jax.verify", "softmax_jax.bench")
_TRAINER = ("softmax_jax.train", "softmax_jax.model", "softmax_jax.datasets")
_CLI = ("softmax_jax.cli",)


@pytest.mark.parametrize("module,absent", [
    ("softmax_jax", _OPTIONAL + _TOOLS + _TRAINER + _CLI),
    ("softmax_jax.sharded", _OPTIONAL + _TOOLS + _TRAINER + _CLI),
    ("softmax_jax.verify", _OPTIONAL + _TRAINER + _CLI),
    ("softmax_jax.bench", _OPTIONAL + _TRAINER + _CLI),
    ("softmax_jax.train", _OPTIONAL + _CLI),
    ("softmax_jax.model", _OPTIONAL + _CLI),
])
def test_import_loads_no_layer_above_and_no_optional_dependency(module, absent):
  code = (f"import sys, {module}\n"
          f"print([m for m in {absent!r} if m in sys.modules])")
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr
  assert done.stdout.strip() == "[]", f"import {module} loaded {done.stdout.strip()}"
