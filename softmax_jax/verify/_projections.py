"""First-order checks at any size: ``jax.jvp`` (fwd), ``jax.vjp`` (rev) and float64 central
differences (fd) compared by random projections ``uᵀ J v`` (fast mode), or entry by entry
on the full Jacobian of a small function.

Fast mode draws ``K`` pairs ``(u, v)`` (``u = 1`` for a scalar output; leaf ``ℓ`` of
``v`` scaled by ``1/‖g_ℓ‖`` so every leaf weighs alike) and compares ``⟨vjp(u), v⟩``,
``⟨u, jvp(v)⟩`` (and ``jvp(v)`` entry by entry) and ``⟨u, D(v)⟩``: each mode against
fd, and rev against fwd (the dot-product test).  Each comparison has two stages:
(1) the mode evaluated in float64 against its reference, within ``SAFETY·rtol₆₄·√Σ(M v)²``
plus the differences' error (a wrong rule is caught down to ~1e-7 relative); (2) the
mode in the input dtype against its float64 evaluation, within ``SAFETY·rtol·√Σ(M v)²``
(``M`` the ``Σ|terms|`` of each entry of ``Jᵀu`` in JAX's program, ``rtol`` the rule of
:func:`softmax_jax.verify._tolerances.bound` with ``n`` the longest axis of a leaf).  A
projection that fails is repeated one input leaf at a time to name the leaf.  Cost: two
VJPs, two JVPs and ``2K`` float64 evaluations of ``f`` (``4K``, with the differences'
truncation estimate at ``x ± 2hv``, when a check would fail without it), whatever the size.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from softmax_jax.verify import _complex, _pytrees
from softmax_jax.verify import _finite_differences as fd
from softmax_jax.verify._compare import compare, max_per_segment
from softmax_jax.verify._derivatives import Magnitude, _jacobian_terms_magnitude
from softmax_jax.verify._fast_programs import POOL, autodiff_program, float64_program, run_program
from softmax_jax.verify._report import Check
from softmax_jax.verify._tolerances import bound, fd_tolerance

FULL_MAX = 10**6  # Jacobian entries above which fast=None picks fast mode
SAFETY = 3.0      # the factor on the rounding estimate of a projection
MODES = ("fwd", "rev")


class FirstOrder(NamedTuple):
  """The first-order checks of one function: one :class:`Check` per mode and reference,
  and, in full mode, ``|got − ref|`` per Jacobian entry for each ``"mode vs reference"``
  ([outputs, inputs], pytrees flattened; ``None`` in fast mode)."""

  checks: list[Check]
  jacobian_errors: dict[str, np.ndarray] | None


def first_order_checks(fn, args: tuple, *, modes=("fwd", "rev"), fast: bool | None = None,
                       key=None, projections: int = 3, holomorphic: bool = False) -> FirstOrder:
  """Checks ``jax.jvp`` (``"fwd"``) and ``jax.vjp`` (``"rev"``) of ``fn`` at ``args`` against
  float64 central differences, and against each other.

  Args:
    fn: ``fn(*args)`` returns a pytree of floating or complex arrays.
    args: a tuple of pytrees; floating and complex leaves are differentiated (a
      complex one in both real directions), integer leaves held constant.
    modes: a subset of ``("fwd", "rev")``.
    fast: compare random projections ``uᵀ J v`` (``True``), the full Jacobian
      (``False``), or decide by size (``None``: fast above :data:`FULL_MAX` entries).
    key: the ``jax.random`` key of the projections (default ``jax.random.key(0)``).
    projections: ``K``, the number of independent ``(u, v)`` pairs.
    holomorphic: ``fn`` is holomorphic (complex inputs and outputs): also checks
      by central differences that its derivative is complex-linear.

  Returns:
    A :class:`FirstOrder`: checks ``fwd``/``rev`` vs ``fd`` and ``rev`` vs ``fwd``
    (``passed=None`` with a note for a mode JAX refuses for ``fn``).

  Raises:
    ValueError: on unknown modes, ``projections < 1``, arguments with nothing to
      differentiate, or ``fast=False`` with a Jacobian over :data:`FULL_MAX` entries.

  Examples:
    >>> import jax.numpy as jnp
    >>> result = first_order_checks(jnp.sin, (jnp.array([0.5, -1.0]),))
    >>> [(c.mode, c.reference, c.passed) for c in result.checks]
    [('fwd', 'fd', True), ('rev', 'fd', True), ('rev', 'fwd', True)]
  """
  modes = tuple(modes)
  if not modes or set(modes) - set(MODES):
    raise ValueError(f"first_order_checks: modes must be a non-empty subset of {MODES}, got "
                     f"{modes}.")
  if int(projections) < 1:
    raise ValueError(f"first_order_checks: projections must be >= 1, got {projections}.")
  prob = _complex.problem(fn, args)
  if holomorphic:
    _complex.require_holomorphic_layout(prob)
  out = prob.out
  n_in, n_out = sum(_complex.sizes(prob.xs)), sum(_complex.sizes(out))
  entries = n_in * n_out
  fast = entries > FULL_MAX if fast is None else fast
  if not fast and entries > FULL_MAX:
    raise ValueError(f"first_order_checks: the full Jacobian has {n_out} × {n_in} = {entries} "
                     f"entries (over {FULL_MAX}); pass fast=True to check it by random "
                     "projections uᵀJv.")
  key = jax.random.key(0) if key is None else key
  reasons = prob.reasons
  if fast:
    args = (prob, out, modes, reasons, key, int(projections), holomorphic)
    checks = _fast_checks(*args, richardson=False)
    if any(c.passed is False for c in checks):  # x ± 2hv only widens a bound: only if needed
      checks = _fast_checks(*args, richardson=True)
    return FirstOrder(checks, None)
  return _full_checks(prob, out, modes, reasons, holomorphic)


class _Context(NamedTuple):
  """What the fast checks compare; ``differences(leaf)`` and ``forward(leaf)`` evaluate the
  directions restricted to one input leaf (``None``: all), cached."""

  prob: object
  out: list
  dtype: str
  b: object          # the Bound of the input dtype (stage 2)
  b64: object        # the Bound of float64 against differences (stage 1)
  rule_m: str        # what M is
  us: np.ndarray     # [K, outputs]
  rev: tuple | None  # (dots [K, leaves], dots64, noise [K, leaves], ‖g_ℓ‖, weights)
  differences: object
  forward: object


def _fast_checks(prob, out, modes, reasons, key, k, holomorphic, *,
                 richardson: bool) -> list[Check]:
  view, xs, consts = prob.view, prob.xs, prob.consts
  dtype, n_out = _complex.dtype_of(prob, out), sum(_complex.sizes(out))
  n = _complex.longest_axis(prob, out)
  key_u, key_v = jax.random.split(key)
  scalar = n_out == 1
  us = [jnp.ones((k, *o.shape), o.dtype) if scalar else
        jax.random.normal(jax.random.fold_in(key_u, i), (k, *o.shape), jnp.float32).astype(o.dtype)
        for i, o in enumerate(out)]
  rev_ok, fwd_ok = reasons["rev"] is None, reasons["fwd"] is None and "fwd" in modes
  n_leaves = len(xs)
  key_v, key_pool = jax.random.split(key_v)
  seed = np.uint32(jax.random.bits(key_v, (), jnp.uint32))
  pool = np.asarray(jax.random.normal(key_pool, (POOL,), jnp.float32))
  u_rev = [u[:1] for u in us] if scalar else us  # one VJP for a scalar output

  mask = lambda leaf: np.ones(n_leaves) if leaf is None else np.eye(n_leaves)[leaf]  # noqa: E731

  @functools.cache
  def evaluate(leaf, times_i=False):
    """The input-dtype and float64 programs for the directions on ``leaf`` (None: all)."""
    if times_i:  # the directions i·v of the same v: differences only
      gs = terms = jvs = fterms = reason = norms = None
      weights = evaluate(leaf, False)[3][0]
    else:
      (gs, terms, (weights, norms), jvs, fterms), reason = run_program(
          autodiff_program, view, xs, consts, u_rev, pool, seed, mask(leaf),
          static=(k, rev_ok, fwd_ok))
    (diffs, projections, jvs64), _ = run_program(
        float64_program, view, xs, consts, us, pool, seed, weights, mask(leaf), gs, terms,
        static=(k, rev_ok and not times_i, fwd_ok and not times_i, times_i, richardson),
        x64=True)
    forward = None if jvs is None else (_complex.flat(jvs, k), _complex.flat(jvs64, k),
                                        None if fterms is None else _complex.flat(fterms, k))
    return (tuple(np.asarray(a) for a in diffs), projections, forward,
            (weights, None if norms is None else np.asarray(norms)), terms is None and rev_ok,
            reason)

  differences = lambda leaf, times_i=False: evaluate(leaf, times_i)[0]  # noqa: E731
  forward = lambda leaf: evaluate(leaf, False)[2]  # noqa: E731

  _, projections, _, (weights, norms), term_failed, term_reason = evaluate(None, False)
  rev = None
  if rev_ok:
    rev = (*(np.asarray(a) for a in projections), norms, np.asarray(weights))
  rule_m = ("M = max|g| over every leaf (Σ|terms| not propagated: " + str(term_reason) + ")"
            if term_failed else "M = Σ|terms| of JAX's VJP per entry" if rev_ok
            else "Σ_i |u_i|·max(Σ|terms|_i, |D_i|) of the JVP (no VJP)")
  ctx = _Context(prob, out, dtype, bound(dtype, n), bound("float64", n), rule_m,
                 _complex.flat(us, k), rev, differences, forward)
  checks = []
  for mode in modes:
    if reasons[mode] is not None:
      checks.append(_complex.unavailable_check(mode, "fd", reasons[mode]))
    else:
      checks.append(_rev_vs_fd(ctx, k) if mode == "rev" else _fwd_vs_fd(ctx))
  if set(modes) == set(MODES):
    bad = reasons["fwd"] or reasons["rev"]
    checks.append(_complex.unavailable_check("rev", "fwd", bad) if bad else _rev_vs_fwd(ctx))
  if holomorphic:
    checks.append(_linearity(prob, *differences(None)[:2], *differences(None, True)[:2],
                             "projections"))
  return checks


def _noise(ctx, leaf) -> np.ndarray:
  """√Σ (M v)² per projection over ``leaf`` (None: all leaves), from the VJP's ``Σ|terms|``;
  without a VJP, ``Σ_i |u_i| max(M_i, |D_i|)`` of the JVP's (an upper bound, not a random
  walk)."""
  if ctx.rev is not None:
    noise = ctx.rev[2]
    return np.sqrt(np.sum(noise ** 2, 1)) if leaf is None else noise[:, leaf]
  d, terms = ctx.differences(leaf)[0], ctx.forward(leaf)[2]
  scale = np.abs(d) if terms is None else np.maximum(np.abs(terms), np.abs(d))
  return np.sum(np.abs(ctx.us) * scale, 1)


def _stages(ctx, leaf, mode, reference, got, got64, want64, want=None, factor=1.0):
  """Stage 1: the mode evaluated in float64 against ``want64`` (within ``SAFETY·rtol₆₄`` of
  ``√Σ(M v)²`` and the differences' error); stage 2: the mode in the input dtype against
  its float64 evaluation (or ``want``), within ``SAFETY·rtol`` of the same."""
  noise = _noise(ctx, leaf)
  afd = 0.0
  if reference == "fd":  # the differences' error estimate, at least 1000·ε₆₄^(2/3) of them
    afd = ctx.differences(leaf)[3] + fd_tolerance(jnp.float64) * ctx.differences(leaf)[4]
  first = _complex.Stage(got64, want64, factor * SAFETY * ctx.b64.rtol * noise + afd + ctx.b64.atol,
                 f"float64 evaluation of {mode} against {reference}: {factor * SAFETY:g} × "
                 "rtol₆₄ × √Σ(M·v)²"
                 + (" + 2 × fd error estimate + 1000·ε₆₄^(2/3)·Σ|u·D|" if reference == "fd"
                    else "")
                 + f", rtol₆₄ = {ctx.b64.rule}; {ctx.rule_m}")
  second = _complex.Stage(got, got64 if want is None else want,
                  factor * SAFETY * ctx.b.rtol * noise + ctx.b.atol,
                  f"{ctx.dtype} against " + ("float64" if want is None else reference)
                  + f": {factor * SAFETY:g} × rtol × √Σ(M·v)², rtol = {ctx.b.rule}; {ctx.rule_m}")
  return first, second


def _projection_check(mode, reference, stages, want, got, where_of, note="") -> Check:
  ratios = np.stack([_complex.ratio(s) for s in stages])  # [stages, K]
  s, j = np.unravel_index(int(np.argmax(ratios)), ratios.shape)
  err = np.abs(got - want)
  with np.errstate(divide="ignore", invalid="ignore"):
    rel = np.where(np.abs(want) > 0, err / np.abs(want), 0.0)
  passed = bool(np.all(ratios <= 1))
  return Check(mode, reference, passed, float(err.max()), float(rel.max()),
               float(stages[s].allowed[j]), stages[s].rule, where_of(int(j), passed), note,
               float(np.abs(stages[s].got[j] - stages[s].want[j])))


def _worst_leaf(ctx, stages_of) -> int:
  """The input leaf whose projections are furthest beyond their bound."""
  return int(np.argmax([max(float(np.max(_complex.ratio(s))) for s in stages_of(leaf))
                        for leaf in range(len(ctx.prob.xs))]))


def _where(ctx, stages_of, extra=None):
  def where_of(j, passed):
    if passed:
      return f"projection {j} (all leaves)"
    leaf = _worst_leaf(ctx, stages_of)
    return f"projection {j} on {ctx.prob.names[leaf]}" + (extra(leaf) if extra else "")
  return where_of


def _rev_vs_fd(ctx, k) -> Check:
  dots, dots64, _, g_norm, weights = ctx.rev

  def stages_of(leaf):
    pfd = ctx.differences(leaf)[2]
    if leaf is None:
      return _stages(ctx, None, "rev", "fd", dots.sum(1), dots64.sum(1), pfd)
    return _stages(ctx, leaf, "rev", "fd", dots[:, leaf], dots64[:, leaf], pfd)

  stages = stages_of(None)
  t = _complex.t_for_miss(0.01, k)
  with np.errstate(divide="ignore"):
    sens = [np.mean(s.allowed) / (t * weights * g_norm) for s in stages]
  least = int(np.argmax(np.where(np.isfinite(sens[0]), sens[0], -1)))
  note = (f"{k} projections catch a relative error >= {sens[0][least]:.1e} of any one leaf's "
          f"gradient (>= {sens[1][least]:.1e} if only in {ctx.dtype}) with probability >= 99 % "
          f"(least sensitive: {ctx.prob.names[least]})")
  return _projection_check("rev", "fd", stages, stages[0].want, dots.sum(1),
                           _where(ctx, stages_of), note)


def _fwd_vs_fd(ctx) -> Check:
  """``⟨u, jvp(v)⟩`` against ``⟨u, D(v)⟩``, and ``jvp(v)`` against ``D(v)`` entry by entry."""
  prob, out = ctx.prob, ctx.out
  shapes, sizes = [o.shape for o in out], _complex.sizes(out)
  n = max(sum(_complex.sizes(prob.xs)), sum(sizes))

  def entries(leaf):
    """Per projection: float64 J v against D(v), and J v against its float64 evaluation."""
    jv, jv64, terms = ctx.forward(leaf)
    d, e = ctx.differences(leaf)[:2]
    mag = (lambda j: None) if terms is None else (lambda j: terms[j])  # noqa: E731
    return [(compare(jv64[j], d[j], "fd", bound=bound("float64", n, fd=True), magnitude=mag(j),
                     scale=max_per_segment(d[j], sizes), extra_atol=2 * e[j]),
             compare(jv[j], jv64[j], "float64", bound=bound(ctx.dtype, n), magnitude=mag(j),
                     scale=max_per_segment(d[j], sizes)))
            for j in range(jv.shape[0])]

  def stages_of(leaf):
    jv, jv64, _ = ctx.forward(leaf)
    pfd = ctx.differences(leaf)[2]
    stages = _stages(ctx, leaf, "fwd", "fd", np.sum(ctx.us * jv, 1), np.sum(ctx.us * jv64, 1),
                     pfd)
    worst = max(x.error / x.allowed if x.allowed > 0 else 0.0 for pair in entries(leaf)
                for x in pair)
    ones = np.ones(pfd.shape)
    return (*stages, _complex.Stage(worst * ones, 0 * ones, ones, "J v entry by entry"))

  def output(leaf):
    pairs = entries(leaf)
    x = max((x for pair in pairs for x in pair),
            key=lambda x: x.error / x.allowed if x.allowed > 0 else 0.0)
    return f", output {_complex.entry_name(prob.out_names, shapes, sizes, x.worst_index[0])}"

  stages = list(stages_of(None))
  worst_entry = max((x for pair in entries(None) for x in pair),
                    key=lambda x: x.error / x.allowed if x.allowed > 0 else 0.0)
  stages[2] = stages[2]._replace(
      rule=f"J v entry by entry ({worst_entry.method}): {worst_entry.rule}; scale = "
           f"{worst_entry.scale_rule}", allowed=np.full(stages[2].got.shape, worst_entry.allowed),
      got=np.full(stages[2].got.shape, worst_entry.error))
  jv = ctx.forward(None)[0]
  return _projection_check("fwd", "fd", stages, stages[0].want, np.sum(ctx.us * jv, 1),
                           _where(ctx, stages_of, output))


def _rev_vs_fwd(ctx) -> Check:
  """The dot-product test ``⟨Jᵀu, v⟩ = ⟨u, J v⟩``, in float64 and in the input dtype."""
  dots, dots64 = ctx.rev[0], ctx.rev[1]

  def stages_of(leaf):
    jv, jv64, _ = ctx.forward(leaf)
    fwd, fwd64 = np.sum(ctx.us * jv, 1), np.sum(ctx.us * jv64, 1)
    if leaf is None:
      return _stages(ctx, None, "rev", "fwd", dots.sum(1), dots64.sum(1), fwd64, fwd, 2.0)
    return _stages(ctx, leaf, "rev", "fwd", dots[:, leaf], dots64[:, leaf], fwd64, fwd, 2.0)

  stages = stages_of(None)
  return _projection_check("rev", "fwd", stages, stages[1].want, dots.sum(1),
                           _where(ctx, stages_of))


def _linearity(prob, d, e, di, ei, where: str) -> Check:
  """A holomorphic ``f`` has ``D(i v) = i D(v)`` (central differences only, no autodiff)."""
  b = bound("float64", 1, fd=True)
  err = compare(di, _complex.times_i(prob, d), "fd", bound=b, extra_atol=2 * (e + ei))
  return Check("holomorphic", "fd", err.passed, err.max_abs_err, err.max_rel_err, err.allowed,
               f"D(i·v) = i·D(v) within {b.rule} + 2 × both fd error estimates", where,
               "" if err.passed else "fn is not holomorphic at args (its derivative is not "
               "complex-linear)", err.error)


# --- Full mode -------------------------------------------------------------


def _full_checks(prob, out, modes, reasons, holomorphic) -> FirstOrder:
  f = lambda z: prob.view(z, prob.consts)  # noqa: E731
  dtype = _complex.dtype_of(prob, out)
  in_shapes, in_sizes = [np.shape(x) for x in prob.xs], _complex.sizes(prob.xs)
  shapes, sizes = [o.shape for o in out], _complex.sizes(out)
  n_in, n_out = sum(in_sizes), sum(sizes)
  want, err = fd.jacobian_by_differences(f, prob.xs)
  jac = {m: _pytrees.dense_jacobian((jax.jacfwd if m == "fwd" else jax.jacrev)(f)(prob.xs),
                                    out, prob.xs)[0]
         for m in MODES if reasons[m] is None and (m in modes or set(modes) == set(MODES))}
  magnitude = (_jacobian_terms_magnitude(f, prob.xs, 0, n_in, 1) if reasons["fwd"] is None
               else Magnitude(None, "max|ref| per block (no forward mode for Σ|terms|)"))
  terms = None if magnitude.terms is None else magnitude.terms[0]
  scale = max_per_segment(max_per_segment(want, in_sizes).T, sizes).T

  def index_of(pos):
    i, j = divmod(pos, n_in)
    return (f"{_complex.entry_name(prob.out_names, shapes, sizes, i)} wrt "
            f"{_complex.entry_name(prob.names, in_shapes, in_sizes, j)}",)

  def check(mode, reference, got, ref, b, extra=None):
    e = compare(got, ref, reference, bound=b, magnitude=terms, scale=scale, extra_atol=extra,
                index_of=index_of, scale_rule=magnitude.rule)
    return Check(mode, reference, e.passed, e.max_abs_err, e.max_rel_err, e.allowed,
                 f"{e.rule}; scale = {e.scale_rule}", e.worst_index[0], error=e.error)

  b = bound(dtype, max(n_in, n_out), fd=True)
  checks, errors = [], {}
  for mode in modes:
    if reasons[mode] is not None:
      checks.append(_complex.unavailable_check(mode, "fd", reasons[mode]))
      continue
    checks.append(check(mode, "fd", jac[mode], want, b, 2 * err))
    errors[f"{mode} vs fd"] = np.abs(jac[mode] - want)
  if set(modes) == set(MODES):
    if reasons["fwd"] or reasons["rev"]:
      checks.append(_complex.unavailable_check("rev", "fwd", reasons["fwd"] or reasons["rev"]))
    else:
      b2 = bound(dtype, max(n_in, n_out))
      b2 = b2._replace(rtol=2 * b2.rtol, rule=f"2 × ({b2.rule})")
      checks.append(check("rev", "fwd", jac["rev"], jac["fwd"], b2))
      errors["rev vs fwd"] = np.abs(jac["rev"] - jac["fwd"])
  if holomorphic:
    checks.append(_full_linearity(prob, want, err, in_sizes))
  return FirstOrder(checks, errors)


def _full_linearity(prob, want, err, in_sizes) -> Check:
  """``J e_im = i J e_re`` column by column for each complex input entry."""
  starts = np.cumsum([0, *in_sizes])
  parts = [np.concatenate([np.arange(starts[i], starts[i + 1])
                           for i in range(first, len(in_sizes), 2)]) for first in (0, 1)]
  return _linearity(prob, want[:, parts[0]].T, err[:, parts[0]].T, want[:, parts[1]].T,
                    err[:, parts[1]].T, "full Jacobian")
