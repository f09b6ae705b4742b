"""The README's example runs and its assertions hold."""

import pathlib
import re

import jax.numpy as jnp


def test_readme_example_runs():
  text = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
  code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
  scope: dict = {}
  exec(compile(code, "README.md", "exec"), scope)  # noqa: S102
  assert scope["hess"].shape == (3, 3)
  assert float(jnp.sum(scope["probs"][0])) == 1.0


def test_readme_training_example_runs():
  text = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
  code = re.findall(r"```python\n(.*?)```", text, re.S)[1]
  scope: dict = {}
  exec(compile(code, "README.md", "exec"), scope)  # noqa: S102
  assert float(scope["accuracy"]) > 0.85
  assert scope["probs"].shape == (30, 3)
