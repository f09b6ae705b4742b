"""One conformance matrix for every implementation of the integer-label cross-entropy.

Each case is ``implementation-option-reduction-dtype-input-mode`` and compares one
public implementation with ONE float64 NumPy reference with PyTorch
``F.cross_entropy`` semantics (``reference.integer_label_rows``), computed from the
inputs as rounded to the case's dtype:

* implementations (:data:`IMPLS`): the XLA path, the Pallas kernel (interpret mode on
  the CPU), ``linear_cross_entropy`` with an identity weight (``hidden`` = the logits;
  a masked class is a ``−inf`` bias entry), ``softmax_jax.sharded`` on a 1-D mesh of 8
  simulated devices and on a 2-D ``data × model`` mesh (C not divisible by the class
  split), and ``binary_cross_entropy`` of the logit difference as the 2-class case;
* options (:data:`OPTIONS`) × reductions (``mean``, ``sum``, ``none``) × dtypes (float64,
  float32, bfloat16, float16 with loss scaling) × inputs (:data:`INPUTS`: ordinary
  logits and the extreme ones) × modes (value, ``jax.grad``, ``jax.jvp``,
  ``jax.hessian``).

What an implementation does not support is left out of the grid by the explicit tables
:data:`SUPPORTED_OPTIONS`, :data:`UNSUPPORTED_DTYPES` and :data:`UNSUPPORTED_INPUTS`
(each entry with its reason); ``test_support_tables_match_the_signatures`` fails when a
signature gains or loses an option, so the tables cannot go stale silently.

By default a SAMPLED grid runs: a fixed-seed sample that covers every pair of an
implementation with each option, dtype, input (every extreme input) and mode, and every
reduction, at least once (about a minute on two CPU cores).  The full grid::

    SOFTMAX_JAX_FULL_MATRIX=1 pytest -q tests/test_conformance.py

``SOFTMAX_JAX_MATRIX_SEED=<int>`` draws another sample of the same coverage.

Tolerances (:func:`_bound`, documented in ``docs/numerics.md``, "The conformance
matrix"): ``|got − ref| ≤ k·ε_c·M + ε_out·|ref| + floor`` entrywise, with ``M`` the
``Σ|terms|`` error scale of the stable formulas (from the reference), ``ε_c`` the
epsilon of the compute dtype (float32 for the half dtypes), ``k = 8·(1 + log2 C)``,
``ε_out`` the rounding of the result to its dtype (gradients: bfloat16 ``2^-7``,
float16 ``2^-9``) and ``floor`` what the dtype cannot resolve (float16's subnormal
spacing of the loss-scaled gradient).  NaN must be NaN, ``±inf`` must be equal.
"""

from __future__ import annotations

import inspect
import math
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import softmax_jax as sj
from softmax_jax import sharded

import reference as ref

# ---------------------------------------------------------------------------
# The grid's dimensions and the support tables
# ---------------------------------------------------------------------------

IMPLS = ("xla", "pallas", "linear", "sharded", "sharded2d", "binary")
OPTIONS = ("plain", "class_weights", "ignore_index", "label_smoothing", "z_loss",
           "logit_softcap", "where", "class_mask")
REDUCTIONS = ("mean", "sum", "none")
DTYPES = ("float64", "float32", "bfloat16", "float16")
INPUTS = ("random", "huge", "pos_inf", "neg_inf", "all_neg_inf", "nan", "label_neg1",
          "label_m100", "label_C", "label_2p32", "label_on_masked", "uint8_c256", "int8",
          "multitile")
MODES = ("value", "grad", "jvp", "hessian")

ALL_OPTIONS = set(OPTIONS)
# "where" is a row-dependent [N, C] mask; "class_mask" masks classes for every row
# (where= for the XLA and sharded paths, a −inf bias entry for linear_cross_entropy).
SUPPORTED_OPTIONS = {
    "xla": ALL_OPTIONS,
    # _pallas.choose: impl="pallas" raises ValueError "does not support where".
    "pallas": ALL_OPTIONS - {"where", "class_mask"},
    # linear_cross_entropy has no class_weights and no where; masking is a −inf bias.
    "linear": {"plain", "ignore_index", "label_smoothing", "z_loss", "logit_softcap",
               "class_mask"},
    "sharded": ALL_OPTIONS,
    "sharded2d": ALL_OPTIONS,
    # binary_cross_entropy takes only a reduction.
    "binary": {"plain"},
}
# The keyword each option is passed as, per implementation (checked against signatures).
OPTION_KWARGS = {
    "class_weights": "class_weights", "ignore_index": "ignore_index",
    "label_smoothing": "label_smoothing", "z_loss": "z_loss",
    "logit_softcap": "logit_softcap", "where": "where",
}

UNSUPPORTED_DTYPES = {
    # _pallas.supported: "float16, bfloat16 or float32 only" (impl="pallas" raises).
    ("pallas", "float64"): "the Pallas kernels take float16, bfloat16 and float32",
}

_MATMUL_INF = ("hidden @ weight turns an infinite hidden entry into NaN in every logit of "
               "its row (0·inf); linear_cross_entropy expresses −inf only per class, by bias")
_BINARY_LABELS = ("binary_cross_entropy reads labels as (soft) targets in [0, 1]: it has no "
                  "out-of-range or ignored label")
_BINARY_INF = ("binary_cross_entropy's docstring: 'a logit of ∓inf with the matching label "
               "gives loss 0', a deliberate difference from the reference's NaN for +inf")
UNSUPPORTED_INPUTS = {  # (impl, input, dtype or None for every dtype): reason
    ("linear", "pos_inf", None): _MATMUL_INF,
    ("linear", "neg_inf", None): _MATMUL_INF + " (these −inf entries are per row)",
    ("linear", "all_neg_inf", None): _MATMUL_INF + " (these −inf entries are per row)",
    ("linear", "huge", "float16"): "float16 rounds ±1e30 to ±inf: " + _MATMUL_INF,
    ("linear", "multitile", None): "an identity weight of 16385² entries (1 GiB); the "
                                   "chunk loop is covered by chunk_size=4 on every input",
    ("binary", "huge", "float16"): "float16 rounds ±1e30 to ±inf: " + _BINARY_INF,
    **{("binary", name, None): _BINARY_INF for name in ("pos_inf", "neg_inf", "all_neg_inf")},
    **{("binary", name, None): _BINARY_LABELS
       for name in ("label_neg1", "label_m100", "label_C", "label_2p32", "label_on_masked",
                    "uint8_c256", "int8")},
    ("binary", "multitile", None): "binary_cross_entropy is the 2-class case",
}


def _mode_reason(mode, dtype, input_name):
  if mode == "hessian" and dtype != "float64":
    return "Hessians are compared in float64 only"
  if mode == "hessian" and input_name == "multitile":
    return "the [N, C, N, C] Hessian of 2 × 16385 logits is 8 GiB"
  return None


def _reason(impl, option, reduction, dtype, input_name, mode):
  """Why a combination is not in the grid (None when it is)."""
  if option not in SUPPORTED_OPTIONS[impl]:
    return f"{impl} does not take {option}"
  if (impl, dtype) in UNSUPPORTED_DTYPES:
    return UNSUPPORTED_DTYPES[impl, dtype]
  for key in ((impl, input_name, None), (impl, input_name, dtype)):
    if key in UNSUPPORTED_INPUTS:
      return UNSUPPORTED_INPUTS[key]
  return _mode_reason(mode, dtype, input_name)


class Case(NamedTuple):
  impl: str
  option: str
  reduction: str
  dtype: str
  input: str
  mode: str

  @property
  def id(self):
    return "-".join(self)


FULL_GRID = [Case(*c) for c in np.ndindex(*(len(d) for d in (IMPLS, OPTIONS, REDUCTIONS,
                                                             DTYPES, INPUTS, MODES)))]
FULL_GRID = [Case(IMPLS[a], OPTIONS[b], REDUCTIONS[r], DTYPES[d], INPUTS[i], MODES[m])
             for a, b, r, d, i, m in FULL_GRID]
FULL_GRID = [c for c in FULL_GRID if _reason(*c) is None]


def _sampled(grid, seed=0, extra=0):
  """A fixed-seed sample covering every (implementation, option), (implementation, dtype),
  (implementation, input) and (implementation, mode) pair and every reduction of the full
  grid at least once (a greedy set cover in a seeded random order), plus ``extra`` cases."""
  rng = np.random.default_rng(seed)
  order = [grid[j] for j in rng.permutation(len(grid))]

  def pairs(c):
    return {(c.impl, "option", c.option), (c.impl, "dtype", c.dtype),
            (c.impl, "input", c.input), (c.impl, "mode", c.mode), ("reduction", c.reduction)}

  uncovered = set().union(*(pairs(c) for c in grid))
  chosen = []
  while uncovered:
    best = max(order, key=lambda c: len(pairs(c) & uncovered))
    chosen.append(best)
    uncovered -= pairs(best)
  rest = [c for c in order if c not in set(chosen)]
  return sorted(chosen + rest[:extra])


FULL = os.environ.get("SOFTMAX_JAX_FULL_MATRIX", "") == "1"
SEED = int(os.environ.get("SOFTMAX_JAX_MATRIX_SEED", "0"))
GRID = FULL_GRID if FULL else _sampled(FULL_GRID, SEED)

# ---------------------------------------------------------------------------
# Inputs (float64 logits before rounding, labels in their own dtype)
# ---------------------------------------------------------------------------

N, C = 6, 10
BIG = 1e30


def _random(rng, n=N, c=C, label_dtype=np.int32):
  z = rng.normal(size=(n, c)) * 3.0
  return z, rng.integers(0, c, n).astype(label_dtype)


def _build_input(name, c=None):
  """``(z [N, C] float64, labels)``; ``c=2`` for the binary case."""
  rng = np.random.default_rng(INPUTS.index(name) + 100)
  if name == "uint8_c256":
    z, _ = _random(rng, 4, 256)
    return z, np.array([255, 0, 128, 7], np.uint8)
  if name == "multitile":  # one class more than the Pallas kernel's widest tile
    return _random(rng, 2, 16385)
  z, t = _random(rng, N, c or C)
  c = z.shape[1]
  nxt = lambda i, k=1: (int(t[i]) + k) % c  # noqa: E731  (a class other than the label)
  if name == "huge":
    z[0, t[0]], z[0, nxt(0)] = BIG, -BIG
    z[1, nxt(1)] = BIG
    z[2, t[2]] = -BIG
    z[3, :] = BIG
  elif name == "pos_inf":
    z[0, nxt(0)] = np.inf
    z[1, t[1]] = np.inf
  elif name == "neg_inf":
    z[0, nxt(0)] = z[0, nxt(0, 2)] = -np.inf
    z[1, :] = np.where(np.arange(c) == t[1], z[1], -np.inf)
    z[2, nxt(2, 3)] = -np.inf
  elif name == "all_neg_inf":
    z[0, :] = -np.inf
    z[1, :] = -np.inf
    t[1] = c  # out of range, but the row has no valid class: not counted
  elif name == "nan":
    z[0, nxt(0)] = np.nan
  elif name == "label_neg1":
    t[0] = -1
  elif name == "label_m100":
    t[0] = -100
  elif name == "label_C":
    t[0] = c
  elif name == "label_2p32":
    t = t.astype(np.int64)
    t[0] = 2**32 + 1  # 1 if it were wrapped to 32 bits
  elif name == "label_on_masked":  # a −inf class column (a bias entry for linear)
    z[:, 3] = -np.inf
    t = np.where(t == 3, 4, t).astype(t.dtype)
    t[0] = 3
  elif name == "int8":
    t = t.astype(np.int8)
  return z, t


# ---------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------


class Opts(NamedTuple):
  labels: np.ndarray
  weights: np.ndarray | None = None  # float64 values the compute dtype holds exactly
  ignore_index: int | None = None
  eps: float = 0.0
  z_loss: float = 0.0
  cap: float | None = None
  where: np.ndarray | None = None  # [N, C] bool
  class_mask: np.ndarray | None = None  # [C] bool (True: the class is kept)


def _options(option, z, labels, dtype):
  rng = np.random.default_rng(OPTIONS.index(option) + 7)
  n, c = z.shape
  cdt = np.float64 if dtype == "float64" else np.float32
  labels = labels.copy()
  in_range = (labels.astype(np.int64) >= 0) & (labels.astype(np.int64) < c)
  if option == "class_weights":
    return Opts(labels, weights=rng.uniform(0.5, 2.0, c).astype(cdt).astype(np.float64))
  if option == "ignore_index":
    ignore = -100 if np.iinfo(labels.dtype).min < 0 else int(np.iinfo(labels.dtype).max)
    labels[n - 1] = ignore
    return Opts(labels, ignore_index=ignore)
  if option == "label_smoothing":
    return Opts(labels, eps=0.1)
  if option == "z_loss":
    return Opts(labels, z_loss=1e-2)
  if option == "logit_softcap":
    return Opts(labels, cap=5.0)
  if option == "where":
    where = rng.uniform(size=(n, c)) > 0.3
    rows = np.flatnonzero(in_range)
    where[rows, labels[rows].astype(np.int64)] = True
    where[max(n - 2, 0), :] = False  # a fully masked row: not counted
    return Opts(labels, where=where)
  if option == "class_mask":
    used = set(labels[in_range].astype(np.int64).tolist()) | {3}
    free = [k for k in range(c) if k not in used][:2]
    mask = np.ones(c, bool)
    mask[free] = False
    return Opts(labels, class_mask=mask)
  return Opts(labels)


# ---------------------------------------------------------------------------
# Implementations: the primal they are differentiated in, and the loss of it
# ---------------------------------------------------------------------------

_MESHES = {}


def _mesh(impl):
  if impl not in _MESHES:
    devices = np.array(jax.devices()[:8])
    _MESHES[impl] = (jax.sharding.Mesh(devices, ("model",)) if impl == "sharded" else
                     jax.sharding.Mesh(devices.reshape(2, 4), ("data", "model")))
  return _MESHES[impl]


def _round(x, dtype):
  """``x`` rounded to ``dtype`` (in NumPy, so with x64 on or off), back in float64."""
  with np.errstate(all="ignore"):
    return np.asarray(x, np.float64).astype(jnp.dtype(dtype)).astype(np.float64)


class Problem(NamedTuple):
  x: jax.Array  # the primal the implementation is differentiated in ([N, C], dtype)
  ref_z: np.ndarray  # the logits the reference sees (float64, already rounded)
  ref_where: np.ndarray | None
  loss: object  # x -> the loss


def _problem(case: Case, z, o: Opts) -> Problem:
  dtype = jnp.dtype(case.dtype)
  zr = _round(z, dtype)
  labels = o.labels
  weights = None if o.weights is None else jnp.asarray(
      o.weights, jnp.float64 if case.dtype == "float64" else jnp.float32)
  where = o.where
  if o.class_mask is not None:
    where = np.broadcast_to(o.class_mask, zr.shape).copy()
  common = dict(ignore_index=o.ignore_index, label_smoothing=o.eps, z_loss=o.z_loss,
                logit_softcap=o.cap, reduction=case.reduction)
  if case.impl in ("xla", "pallas"):
    kw = dict(common, class_weights=weights, where=where,
              impl="xla" if case.impl == "xla" else "pallas")
    if case.impl == "pallas":
      del kw["where"]
    return Problem(jnp.asarray(zr, dtype), zr, where,
                   lambda x: sj.cross_entropy_with_integer_labels(x, labels, **kw))
  if case.impl in ("sharded", "sharded2d"):
    kw = dict(common, class_weights=weights, where=where)
    if case.impl == "sharded2d":
      kw["batch_axis"] = "data"
    mesh = _mesh(case.impl)
    return Problem(jnp.asarray(zr, dtype), zr, where,
                   lambda x: sharded.cross_entropy_with_integer_labels(x, labels, mesh, **kw))
  if case.impl == "linear":
    # −inf columns (and masked classes) become −inf bias entries over a zero hidden column.
    dead = np.all(zr == -np.inf, axis=0)
    if o.class_mask is not None:
      dead |= ~o.class_mask
    h = np.where(dead[None, :], 0.0, zr)
    assert np.isfinite(h[~np.isnan(h)]).all(), "inexpressible input: see UNSUPPORTED_INPUTS"
    bias = jnp.asarray(np.where(dead, -np.inf, 0.0), dtype)
    eye = jnp.eye(zr.shape[1], dtype=dtype)
    ref_z = np.where(dead[None, :], -np.inf, zr)
    return Problem(jnp.asarray(h, dtype), ref_z, None,
                   lambda x: sj.linear_cross_entropy(x, eye, labels, bias=bias, chunk_size=4,
                                                     **common))
  if case.impl == "binary":
    # The 2-class case: ξ([z0, z1], t) = binary_cross_entropy(z1 − z0, t).  Column 0 is 0,
    # so the difference is exact in every dtype and the reference sees the same logits.
    d = _round(z[:, 1] - z[:, 0], dtype)
    ref_z = np.stack([np.zeros_like(d), d], axis=1)
    return Problem(jnp.asarray(ref_z, dtype), ref_z, None,
                   lambda x: sj.binary_cross_entropy(x[:, 1] - x[:, 0], labels,
                                                     reduction=case.reduction))
  raise AssertionError(case.impl)


# ---------------------------------------------------------------------------
# Comparison
# ---------------------------------------------------------------------------

LOSS_SCALE = 1024.0  # float16 gradients: grad(loss · 1024) / 1024


def _bound(ref_value, mag, *, compute, out, c, kind):
  """The allowed ``|got − ref|`` per entry (see the module docstring)."""
  eps_c = float(jnp.finfo(jnp.float64 if compute == "float64" else jnp.float32).eps)
  k = 8.0 * (1 + math.log2(c))
  eps_out, floor = 0.0, float(jnp.finfo(jnp.float64 if compute == "float64"
                                        else jnp.float32).tiny) * k
  if kind == "grad":
    eps_out = _grad_rounding(out)  # bfloat16 2^-7, float16 2^-9: the result's rounding
  if kind == "grad" and out == "float16":
    floor += 2.0**-24 / LOSS_SCALE * 2  # the subnormal spacing of the scaled gradient
  return k * eps_c * np.abs(mag) + eps_out * np.abs(ref_value) + floor


def _grad_rounding(dtype):
  """``ε_out`` of a gradient stored in ``dtype`` (0 for float32 / float64)."""
  return {"bfloat16": float(jnp.finfo(jnp.bfloat16).eps),
          "float16": 2 * float(jnp.finfo(jnp.float16).eps)}.get(dtype, 0.0)


def _expected_in(dtype, value, scale=1.0):
  """The reference as the result dtype can hold it: ``±inf`` beyond its range."""
  big = float(jnp.finfo(dtype).max)
  with np.errstate(all="ignore"):
    over = np.isfinite(value) & (np.abs(value * scale) > big)
    return np.where(over, np.sign(value) * np.inf, value)


def _compare(what, got, want, bound, care=None):
  got = np.asarray(got, np.float64)
  want = np.broadcast_to(np.asarray(want, np.float64), got.shape)
  bound = np.broadcast_to(bound, got.shape)
  care = np.ones(got.shape, bool) if care is None else np.broadcast_to(care, got.shape)
  with np.errstate(all="ignore"):
    err = np.abs(got - want)
    ok = np.where(np.isnan(want), np.isnan(got),
                  np.where(np.isinf(want), got == want, np.isfinite(got) & (err <= bound)))
  bad = ~ok & care
  if bad.any():
    idx = np.argwhere(bad) if got.ndim else [()]
    lines = [f"  at {tuple(int(v) for v in i)}: got {got[tuple(i)]!r}, expected "
             f"{want[tuple(i)]!r} (bound {bound[tuple(i)]:.3g})" for i in idx[:6]]
    raise AssertionError(f"{what}: {int(bad.sum())} of {bad.size} entries differ\n"
                         + "\n".join(lines))


def _run_case(case: Case):
  z, labels = _build_input(case.input, 2 if case.impl == "binary" else None)
  o = _options(case.option, z, labels, case.dtype)
  p = _problem(case, z, o)
  rows = ref.integer_label_rows(p.ref_z, o.labels, weights=o.weights,
                                ignore_index=o.ignore_index, eps=o.eps, z_loss=o.z_loss,
                                cap=o.cap, where=p.ref_where, hessian=case.mode == "hessian")
  n, c = p.ref_z.shape
  rng = np.random.default_rng(1)
  u = rng.normal(size=n).astype(np.float32).astype(np.float64)  # cotangent for "none"
  r = ref.reduce_integer_label_rows(rows, case.reduction, u)
  out_dtype = "float32" if case.dtype in ("bfloat16", "float16") else case.dtype
  compute = "float64" if case.dtype == "float64" else "float32"

  def scalar(x):
    loss = p.loss(x)
    return jnp.sum(loss * jnp.asarray(u, loss.dtype)) if case.reduction == "none" else loss

  if case.mode == "value":
    got = p.loss(p.x)
    assert got.dtype == jnp.dtype(out_dtype), (got.dtype, out_dtype)
    want = _expected_in(out_dtype, r["value"])
    _compare("value", got, want, _bound(want, r["value_mag"], compute=compute, out=out_dtype,
                                         c=c, kind="value"))
  elif case.mode == "grad":
    if case.dtype == "float16":  # loss scaling, unscaled in float64
      got = jax.grad(lambda x: scalar(x) * LOSS_SCALE)(p.x)
      assert got.dtype == jnp.float16
      got = np.asarray(got, np.float64) / LOSS_SCALE
      want = _expected_in(case.dtype, r["grad"], LOSS_SCALE)
    else:
      got = jax.grad(scalar)(p.x)
      assert got.dtype == p.x.dtype
      want = _expected_in(case.dtype, r["grad"])
    _compare("grad", got, want, _bound(want, r["grad_mag"], compute=compute, out=case.dtype,
                                        c=c, kind="grad"), r["care"])
  elif case.mode == "jvp":
    dz = jnp.asarray(rng.normal(size=(n, c)), case.dtype)
    if case.impl == "binary":
      dz = dz.at[:, 0].set(0)
    _, got = jax.jvp(p.loss, (p.x,), (dz,))
    dz64 = np.asarray(dz, np.float64)
    per_row = ref.reduce_integer_label_rows(rows, "none")
    with np.errstate(all="ignore"):
      if case.reduction == "none":
        want = np.sum(per_row["grad"] * dz64, -1)
        mag = np.sum(per_row["grad_mag"] * np.abs(dz64), -1)
        stored = np.sum(np.abs(per_row["grad"] * dz64), -1)
      else:
        want = np.sum(r["grad"] * dz64)
        mag = np.sum(r["grad_mag"] * np.abs(dz64))
        stored = np.sum(np.abs(r["grad"] * dz64))
    care = r["care"].all() if case.reduction != "none" else None
    # The tangent may be ⟨G, ż⟩ with G the gradient as stored in the input dtype (the
    # Pallas kernel's output; linear's half-precision chunk Jacobian): G's rounding.
    bound = (_bound(want, mag, compute=compute, out=out_dtype, c=c, kind="value")
             + _bound(0.0, 0.0, compute=compute, out=case.dtype, c=c, kind="grad")
             + _grad_rounding(case.dtype) * stored)
    _compare("jvp", got, want, bound, care)
  elif case.mode == "hessian":
    got = np.asarray(jax.hessian(scalar)(p.x), np.float64)
    want = r["hess"]
    care = r["care"][:, :, None, None] & r["care"][None, None, :, :]
    # A NaN gradient row's own block must be NaN; its derivatives along other rows'
    # logits (hess[i, :, j, :], j ≠ i) are left unspecified; the other rows' derivatives
    # along its logits (hess[j, :, i, :]) must be 0.
    bad = np.isnan(rows["grad"]).any(-1)
    other = ~np.eye(n, dtype=bool)
    care = care & ~(bad[:, None, None, None] & other[:, None, :, None])
    scale = np.nanmax(np.abs(want)) if np.isfinite(want).any() else 1.0
    _compare("hessian", got, want, 1e-12 * max(scale, 1e-300) + 1e-10 * np.abs(want), care)


def _param(case):
  """A float64 case runs under x64; the others in the default configuration (x64 off)."""
  return pytest.param(case, id=case.id,
                      marks=[pytest.mark.x64] if case.dtype == "float64" else [])


@pytest.mark.parametrize("case", [_param(c) for c in GRID])
def test_conformance(case):
  _run_case(case)


# ---------------------------------------------------------------------------
# The grid and its tables
# ---------------------------------------------------------------------------


def test_grid_sizes():
  """The sampled grid covers each implementation with every option, reduction, dtype,
  input and mode it supports, and is a subset of the full grid."""
  assert set(GRID) <= set(FULL_GRID)
  for impl in IMPLS:
    for field in ("option", "dtype", "input", "mode"):
      full = {getattr(c, field) for c in FULL_GRID if c.impl == impl}
      assert {getattr(c, field) for c in GRID if c.impl == impl} == full, (impl, field)
  assert {c.reduction for c in GRID} == set(REDUCTIONS)
  assert len(FULL_GRID) > 5000 and (FULL or len(GRID) < 100), (len(FULL_GRID), len(GRID))


_FUNCTIONS = {
    "xla": sj.cross_entropy_with_integer_labels, "pallas": sj.cross_entropy_with_integer_labels,
    "linear": sj.linear_cross_entropy, "sharded": sharded.cross_entropy_with_integer_labels,
    "sharded2d": sharded.cross_entropy_with_integer_labels, "binary": sj.binary_cross_entropy,
}


@pytest.mark.parametrize("impl", IMPLS)
def test_support_tables_match_the_signatures(impl):
  """An option is in SUPPORTED_OPTIONS exactly when the function takes it (Pallas: the
  keyword exists but impl='pallas' refuses where, documented in _pallas.choose); a new
  keyword makes this fail until the table (and so the grid) includes it."""
  params = set(inspect.signature(_FUNCTIONS[impl]).parameters)
  for option, kwarg in OPTION_KWARGS.items():
    if impl == "pallas" and option == "where":
      continue
    assert (kwarg in params) == (option in SUPPORTED_OPTIONS[impl]), (impl, option)
  if impl == "linear":
    assert "bias" in params and "class_mask" in SUPPORTED_OPTIONS[impl]


@pytest.mark.x64
def test_pallas_refuses_where_and_float64():
  """The two Pallas entries of the tables are refusals, not silent fallbacks."""
  z = jnp.zeros((2, 3), jnp.float32)
  with pytest.raises(ValueError, match="where"):
    sj.cross_entropy_with_integer_labels(z, jnp.array([0, 1]), where=z > -1, impl="pallas")
  with pytest.raises(ValueError, match="float64"):
    sj.cross_entropy_with_integer_labels(z.astype(jnp.float64), jnp.array([0, 1]),
                                         impl="pallas")


# ---------------------------------------------------------------------------
# The reference itself
# ---------------------------------------------------------------------------


def _ref_loss(z, labels, reduction="sum", **kw):
  rows = ref.integer_label_rows(z, labels, **kw)
  return ref.reduce_integer_label_rows(rows, reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_reference_matches_the_pytorch_loop(reduction):
  """Against reference.torch_cross_entropy, PyTorch's documented formula as a loop."""
  rng = np.random.default_rng(3)
  z = rng.normal(size=(7, 5)) * 2
  t = rng.integers(0, 5, 7)
  t[2] = -100
  w = rng.uniform(0.5, 2, 5)
  got = _ref_loss(z, t, reduction, weights=w, ignore_index=-100, eps=0.2)["value"]
  want = ref.torch_cross_entropy(z, t, w, -100, 0.2, reduction)
  np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-14)


def test_reference_derivatives_match_finite_differences():
  """The analytic gradient and Hessian of the reference against central differences of its
  own loss, with every option at once (weights, smoothing over K, z-loss, soft-cap, a
  mask, a −inf logit, an ignored row)."""
  rng = np.random.default_rng(4)
  z = rng.normal(size=(4, 5)) * 3
  z[1, 2] = -np.inf
  t = np.array([0, 3, -100, 4])
  where = np.ones((4, 5), bool)
  where[3, 1] = False
  kw = dict(weights=rng.uniform(0.5, 2, 5), ignore_index=-100, eps=0.1, z_loss=0.05,
            cap=4.0, where=where)
  r = _ref_loss(z, t, "mean", **kw)
  h = 1e-5
  fd_grad = np.zeros_like(z)
  fd_hess = np.zeros((4, 5, 4, 5))
  for i, j in np.ndindex(4, 5):
    if not np.isfinite(z[i, j]):
      continue
    zp, zm = z.copy(), z.copy()
    zp[i, j] += h
    zm[i, j] -= h
    plus, minus = _ref_loss(zp, t, "mean", **kw), _ref_loss(zm, t, "mean", **kw)
    fd_grad[i, j] = (plus["value"] - minus["value"]) / (2 * h)
    fd_hess[i, j] = (plus["grad"] - minus["grad"]) / (2 * h)
  np.testing.assert_allclose(r["grad"], fd_grad, atol=1e-8)
  np.testing.assert_allclose(r["hess"], fd_hess, atol=1e-7)
  assert np.all(r["grad"][2] == 0) and r["grad"][1, 2] == 0 and r["grad"][3, 1] == 0


def test_reference_special_rows():
  """The reference's rules: NaN for a bad label or a +inf/NaN logit, 0 and not counted
  for an empty or ignored row, a mean of 0 when nothing counts."""
  z = np.array([[0.0, 1.0, 2.0], [np.inf, 0, 0], [np.nan, 0, 0], [-np.inf] * 3,
                [0, -np.inf, 0], [0.0, 0, 0]])
  rows = ref.integer_label_rows(z, np.array([3, 1, 1, 0, 1, -100]), ignore_index=-100)
  assert np.isnan(rows["loss"][[0, 1, 2, 4]]).all()
  assert np.isnan(rows["grad"][[0, 1, 2, 4]]).all()
  assert rows["loss"][3] == 0 and not rows["counted"][3] and np.all(rows["grad"][3] == 0)
  assert rows["loss"][5] == 0 and not rows["counted"][5]
  empty = _ref_loss(z[3:4], np.array([0]), "mean")
  assert empty["value"] == 0 and np.all(empty["grad"] == 0)


def test_reference_against_torch():
  """One parity check with torch.nn.functional.cross_entropy (when torch is installed)."""
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(5)
  z = rng.normal(size=(8, 6)) * 3
  t = rng.integers(0, 6, 8)
  t[1] = -100
  w = rng.uniform(0.5, 2, 6)
  zt = torch.tensor(z, dtype=torch.float64, requires_grad=True)
  loss = torch.nn.functional.cross_entropy(zt, torch.tensor(t), weight=torch.tensor(w),
                                           ignore_index=-100, label_smoothing=0.1)
  loss.backward()
  r = _ref_loss(z, t, "mean", weights=w, ignore_index=-100, eps=0.1)
  np.testing.assert_allclose(r["value"], loss.item(), rtol=1e-12)
  np.testing.assert_allclose(r["grad"], zt.grad.numpy(), rtol=1e-10, atol=1e-14)
