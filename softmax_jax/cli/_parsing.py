"""What the subcommands share: the parser class and the argument types.

Standard library only, so that ``--help`` and argument errors need nothing else.
"""

from __future__ import annotations

import argparse
import math
import os
import pathlib


class Parser(argparse.ArgumentParser):
  """An ``ArgumentParser`` whose errors are one line (``--help`` shows the usage)."""

  def error(self, message):
    self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def csv(kind):
  """A comma-separated list of ``kind`` values; a bad item is an argparse error naming it."""
  name = getattr(kind, "__name__", "value")

  def parse(text):
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
      raise argparse.ArgumentTypeError(f"empty list {text!r}")
    values = []
    for item in items:
      try:
        values.append(kind(item))
      except ValueError:
        raise argparse.ArgumentTypeError(f"{item!r} is not a valid {name}") from None
    return tuple(values)

  parse.__name__ = f"list of {name}"
  return parse


def finite(text):
  """A finite number."""
  try:
    value = float(text)
  except ValueError:
    value = math.nan
  if not math.isfinite(value):
    raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
  return value


def dtype(choices):
  """A dtype name among ``choices``."""
  def parse(text):
    if text not in choices:
      raise argparse.ArgumentTypeError(f"unknown dtype {text!r}; choose from {', '.join(choices)}")
    return text

  return parse


def output_path(text):
  """A file to write: its folder must exist and it must not be a folder itself."""
  path = pathlib.Path(text)
  parent = path.parent
  if path.is_dir():
    raise argparse.ArgumentTypeError(f"{text} is a directory, not a file")
  if not parent.is_dir():
    raise argparse.ArgumentTypeError(f"the folder {parent} of {text} does not exist")
  if not os.access(parent, os.W_OK):
    raise argparse.ArgumentTypeError(f"the folder {parent} of {text} is not writable")
  return text


def shape(*names):
  """A shape written ``AxB`` (one positive integer per name in ``names``)."""
  form = "x".join(names)
  example = {2: "4096x1024", 3: "1024x128x16384"}[len(names)]

  def parse(text):
    parts = text.lower().split("x")
    try:
      value = tuple(int(v) for v in parts)
    except ValueError:
      value = ()
    if len(value) != len(names) or min(value) < 1:
      raise argparse.ArgumentTypeError(
          f"bad shape {text!r}; write it as {form} with positive integers, e.g. {example}")
    return value

  parse.__name__ = "shape"
  return parse
