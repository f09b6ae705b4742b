"""The points of the verification grid: its specs (:data:`FULL`, :data:`QUICK`) and the
inputs of one point (:class:`Case`).

A point is a dtype, a class count and a logit scale.  The scale is a standard
deviation of the logits (``"1"`` … ``"1e4"``), ``"-inf"`` (about 30 % of the logits
set to ``-inf``) or ``"masked"`` (the same entries masked by ``where``); in both
last cases one row has no valid entry.  Inputs are drawn from a seed made of the
point, rounded to the dtype; the references recompute in float64 from those rounded
inputs.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Iterator
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

FULL = {"dtypes": ("float64", "float32", "bfloat16", "float16"),
        "classes": (2, 10, 1000, 32768),
        "scales": ("1", "10", "100", "1e4", "-inf", "masked")}
QUICK = {"dtypes": ("float64", "bfloat16"), "classes": (10,), "scales": ("1", "-inf")}
DENSE_MAX = 1000  # above this class count Jacobians are checked through products
NONFINITE_SCALES = ("-inf", "masked")  # points where some logits are -inf or masked


class Point(NamedTuple):
  """One point of the grid."""

  dtype: str
  classes: int
  scale: str


def points(spec: dict) -> Iterator[Point]:
  """Every point of ``spec`` (dtypes outermost, scales innermost)."""
  for dtype in spec["dtypes"]:
    for classes in spec["classes"]:
      for scale in spec["scales"]:
        yield Point(dtype, classes, scale)


ARRAYS = ("x", "where", "labels", "targets", "v", "weights")  # the array fields of a Case


@dataclasses.dataclass
class Case:
  """One point of the grid: rounded inputs and the float64 copies the references use."""

  dtype: str
  classes: int
  scale: str
  x: jax.Array
  where: jax.Array | None
  labels: jax.Array
  targets: jax.Array
  v: jax.Array
  weights: jax.Array

  @property
  def mask(self):
    return None if self.where is None else np.asarray(self.where)


def make_case(dtype: str, classes: int, scale: str) -> Case:
  """The inputs of one point (float64 ones need ``jax.enable_x64``)."""
  seed = zlib.crc32(f"{dtype}/{classes}/{scale}".encode())
  rng = np.random.default_rng(seed)
  rows = 3 if classes <= DENSE_MAX else 2
  s = 10.0 if scale in NONFINITE_SCALES else float(scale)
  limit = 0.25 * float(jnp.finfo(jnp.dtype(dtype)).max)  # float16 at 1e4 is clipped here
  x = np.clip(rng.normal(size=(rows, classes)) * s, -limit, limit)
  labels = rng.integers(0, classes, rows)
  mask = None
  if scale in NONFINITE_SCALES:
    mask = rng.random((rows, classes)) < 0.7
    mask[np.arange(rows), labels] = True
    mask[-1] = False  # a row with no valid entry
    if scale == "-inf":
      x = np.where(mask, x, -np.inf)
  valid_now = np.ones_like(x, bool) if mask is None else mask
  t = rng.random((rows, classes)) * valid_now
  t = t / np.maximum(t.sum(-1, keepdims=True), 1e-300)
  jd = jnp.dtype(dtype)
  return Case(dtype, classes, scale, jnp.asarray(x).astype(jd),
              None if scale != "masked" else jnp.asarray(mask),
              jnp.asarray(labels), jnp.asarray(t).astype(jd),
              jnp.asarray(rng.normal(size=(rows, classes))).astype(jd),
              jnp.asarray(rng.random(classes) + 0.5).astype(jd))
