r"""Fused Pallas kernels for softmax, log-softmax and integer-label cross-entropy.

One program handles a block of rows (all of their classes):

- rows that fit in one tile (``C ≤ max_tile``) are read once, reduced and written
  once: ``y = e^{z − m} / s``;
- longer rows are walked tile by tile twice: the first pass merges each tile's
  :class:`~softmax_jax._numerics.RowStats` (max, sum and tail) into the running
  ones with the core's online :func:`~softmax_jax._numerics.merge`, the second
  writes the outputs;
- the cross-entropy kernel writes the loss ``ξ = m + log s − z_t`` and the
  gradient ``∂ξ/∂z = y − t`` (lecture) in the same pass, with the label entry
  ``−(1 − y_t)`` taken from the tail (:func:`~softmax_jax._numerics.complement`).

Every rule (label codes, row statistics, log-sum-exp, soft-cap, smoothing,
reductions) comes from :mod:`softmax_jax._numerics`; this module holds only
the kernels, their layout and their derivatives.  The kernels follow the
Triton backend's rules (tiles of a power-of-two width, row blocks from the
grid) and run anywhere in Pallas interpret mode, which is how the CPU tests
cover them.  Which one runs is decided by the platform the program is lowered
for (``lax.platform_dependent``), not by the host that traces it.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from softmax_jax import _numerics as nx

MAX_TILE = 16384  # default classes per tile (float32: 64 kB per row)
ROW_ELEMS = 16384  # default rows per block × tile width, at most
TRITON_MAX_ELEMS = 2**20  # the most elements a Triton block may hold
F16_RANGE = 2.0**14  # the float16 gradient is stored scaled so that |entry| ≤ this

apply_softcap = nx.softcap  # the name _losses.py imports; the rule lives in _numerics


class KernelUnsupported(ValueError):
  """The Pallas Triton backend cannot take this kernel (raised at trace time)."""


def supported(x: jax.Array) -> bool:
  """Whether the kernels take ``x`` (2-D after flattening, classes last, a float dtype)."""
  return x.ndim >= 1 and x.shape[-1] >= 1 and jnp.issubdtype(x.dtype, jnp.floating) and (
      x.dtype != jnp.float64)


def _layout(c: int, max_tile: int) -> tuple[int, int]:
  """``(tile width, number of tiles)`` for ``c`` classes; tiles have a power-of-two width
  (the Triton backend's rule) and the last one may reach past ``c`` (masked)."""
  if c <= max_tile:
    return pl.next_power_of_2(c), 1
  return max_tile, pl.cdiv(c, max_tile)


def _rows_per_block(n: int, tile: int, row_elems: int) -> int:
  """A power of two; a last block reaching past ``n`` is masked by Pallas."""
  return max(1, min(pl.next_power_of_2(n), row_elems // tile))


def _tiles_arg(max_tile, row_elems):
  """Checks the (static) tile sizes: positive powers of two."""
  for name, v in (("max_tile", max_tile), ("row_elems", row_elems)):
    if not isinstance(v, int) or v < 1 or v & (v - 1):
      raise ValueError(f"{name} must be a power of two, got {v!r}")


@functools.cache
def _triton_problem() -> str | None:
  """Why the Pallas Triton backend cannot be used here (``None`` when it can)."""
  try:
    from jax.experimental.pallas import triton as pltriton

    pltriton.CompilerParams(num_warps=4, num_stages=1)
  except Exception as err:  # noqa: BLE001 - any failure means: no Triton backend
    return f"the Pallas Triton backend is not available ({type(err).__name__}: {err})"
  return None


def _triton_params(elements: int):
  problem = _triton_problem()
  if problem is None and elements > TRITON_MAX_ELEMS:
    problem = (f"a block of {elements} elements exceeds the Triton backend's "
               f"{TRITON_MAX_ELEMS}")
  if problem is not None:
    raise KernelUnsupported(problem)
  from jax.experimental.pallas import triton as pltriton

  return pltriton.CompilerParams(num_warps=_warps(elements), num_stages=1)


def _warps(elements: int) -> int:
  """Warps per program: more for wider blocks (4 up to 2048 elements, at most 16)."""
  return int(min(16, max(4, pl.next_power_of_2(elements) // 1024)))


def _load(x_ref, cols, offset, c):
  """A tile in float32 with the columns past ``c`` set to −inf, and its column indices."""
  z = x_ref[:, cols].astype(jnp.float32)
  idx = lax.broadcasted_iota(jnp.int32, z.shape, 1) + offset
  return jnp.where(idx < c, z, -jnp.inf), idx


def _tile_cols(j, tile):
  return pl.ds(pl.multiple_of(j * tile, tile), tile)


def _for_tiles(tile, tiles, fn, init):
  """``acc = fn(columns, offset, acc)`` over every tile (``columns``: a slice or ``pl.ds``)."""
  if tiles == 1:
    return fn(slice(None), 0, init)
  return lax.fori_loop(0, tiles, lambda j, acc: fn(_tile_cols(j, tile), j * tile, acc), init)


def _stats(x_ref, tile, tiles, c) -> nx.RowStats:
  """The rows' :class:`RowStats` (``[rows, 1]``), merged tile by tile."""
  st = _for_tiles(tile, tiles, lambda cols, offset, acc: nx.merge(
      acc, nx.part_stats(_load(x_ref, cols, offset, c)[0])), nx.empty_stats((x_ref.shape[0], 1)))
  return nx.finalize(st)


def _softmax_kernel(x_ref, o_ref, *, tile, tiles, c, log):
  st = _stats(x_ref, tile, tiles, c)
  empty = ~nx.nonempty(st)  # every class masked with −inf
  log_s = nx.log_normaliser(st)

  def write(cols, offset, acc):
    z, _ = _load(x_ref, cols, offset, c)
    z = z - st.m
    if log:
      out = jnp.where(empty, -jnp.inf, z - log_s)
    else:
      out = jnp.exp(z) / jnp.where(empty, 1.0, st.s)
    o_ref[:, cols] = out.astype(o_ref.dtype)
    return acc

  _for_tiles(tile, tiles, write, 0)


def _call(kernel, x, outs, *, interpret, max_tile, row_elems, extra_in=(), extra_specs=(),
          aliases=None):
  """``pallas_call`` of ``kernel`` over row blocks of ``x``.  ``interpret=None`` lowers the
  Triton kernel for CUDA and interpret mode for any other platform."""
  _tiles_arg(max_tile, row_elems)
  n, c = x.shape
  tile, tiles = _layout(c, max_tile)
  br = _rows_per_block(n, tile, row_elems)
  row_block = pl.BlockSpec((br, tile * tiles), lambda i: (i, 0))

  def spec(o):
    if o.shape[1] == c:
      return row_block
    return pl.BlockSpec((br, o.shape[1]), lambda i: (i, 0))

  specs = [spec(o) for o in outs]

  def build(interp, *operands):
    return pl.pallas_call(
        functools.partial(kernel, tile=tile, tiles=tiles, c=c),
        out_shape=outs if len(outs) > 1 else outs[0],
        grid=(pl.cdiv(n, br),),
        in_specs=[row_block, *extra_specs],
        out_specs=specs if len(outs) > 1 else specs[0],
        interpret=interp,
        compiler_params=None if interp else _triton_params(br * tile),
        input_output_aliases=aliases or {},
    )(*operands)

  if interpret is None:
    return lax.platform_dependent(x, *extra_in, cuda=functools.partial(build, False),
                                  default=functools.partial(build, True))
  return build(interpret, x, *extra_in)


@functools.partial(jax.jit, static_argnames=("log", "interpret", "max_tile", "row_elems"))
def softmax_2d(x: jax.Array, *, log: bool = False, interpret: bool | None = None,
               max_tile: int = MAX_TILE, row_elems: int = ROW_ELEMS) -> jax.Array:
  """``softmax`` (or ``log_softmax``) of ``[N, C]`` over the last axis with one kernel."""
  kernel = functools.partial(_softmax_kernel, log=log)
  return _call(kernel, x, (jax.ShapeDtypeStruct(x.shape, x.dtype),), interpret=interpret,
               max_tile=max_tile, row_elems=row_elems)


# ---------------------------------------------------------------------------
# The cross-entropy kernel
# ---------------------------------------------------------------------------


class _Pass1(NamedTuple):
  """What the first pass over a row's tiles gathers (each ``[rows, 1]``)."""

  st: nx.RowStats
  z_t: jax.Array  # the label's (soft-capped) logit; 0 when the code is not a class
  w_t: jax.Array  # the label's weight; 0 when the code is not a class
  k: jax.Array  # smoothing: the number of valid classes K
  wsum: jax.Array  # smoothing: W = Σ_c w_c over the valid classes
  wz: jax.Array  # smoothing: Σ_c w_c z_c over the valid classes


def _xent_kernel(x_ref, t_ref, w_ref, g_ref, wmax_ref, loss_ref, grad_ref, aux_ref, *, tile,
                 tiles, c, eps, z_loss, softcap):
  """Per row (``t`` holds int32 label codes, :func:`~softmax_jax._numerics.canonical_labels`):
  ``ξ`` (PyTorch semantics with class weights and smoothing, plus ``λ_z lse²``), its
  gradient times ``g · r`` and ``aux = [−log y_t, counted, lse, r]``.  ``g`` is one number
  for every row (the cotangent the reduction is expected to hand each row); ``r`` is 1,
  or for a float16 gradient the power of two that puts the row's largest possible entry
  near :data:`F16_RANGE`, so that nothing a loss scale would later need underflows."""
  t = t_ref[...]  # [rows, 1] int32 codes
  g = g_ref[...]  # [1, 1]
  rows = t.shape[0]
  zero = jnp.zeros((rows, 1), jnp.float32)

  def tile_terms(cols, offset):
    raw, idx = _load(x_ref, cols, offset, c)
    z, th = nx.softcap(raw, softcap)
    w = w_ref[:, cols]  # [1, tile] float32
    return z, th, idx, w, jnp.where(z > -jnp.inf, w, 0.0)

  def gather(cols, offset, acc):
    z, _, idx, w, wv = tile_terms(cols, offset)
    hit = idx == t
    acc = acc._replace(st=nx.merge(acc.st, nx.part_stats(z)),
                       z_t=acc.z_t + jnp.sum(jnp.where(hit, z, 0.0), -1, keepdims=True),
                       w_t=acc.w_t + jnp.sum(jnp.where(hit, w, 0.0), -1, keepdims=True))
    if eps:
      acc = acc._replace(k=acc.k + nx.count_valid(z),
                         wsum=acc.wsum + jnp.sum(wv, -1, keepdims=True),
                         wz=acc.wz + jnp.sum(jnp.where(wv != 0, wv * z, 0.0), -1,
                                             keepdims=True))
    return acc

  init = _Pass1(nx.empty_stats((rows, 1)), zero, zero, zero, zero, zero)
  p = _for_tiles(tile, tiles, gather, init)
  st = nx.finalize(p.st)
  info = nx.label_info(t)
  counted = nx.nonempty(st) & ~info.ignored
  sh_t = p.z_t - st.m  # z_t − m
  bad = counted & (~info.is_class | (sh_t == -jnp.inf))
  log_s = nx.log_normaliser(st)
  lse = st.m + log_s
  nll = log_s - sh_t  # −log y_t, accurate when t dominates
  coef_k = nx.smoothing_coef(eps, p.k) if eps else zero
  loss = (1 - eps) * p.w_t * nll + coef_k * (p.wsum * lse - p.wz)
  if z_loss:  # (lse² of a 1e30 row overflows float32: leave it out when λ_z = 0)
    loss = loss + z_loss * jnp.square(lse)
  loss_ref[...] = nx.finish(loss, counted, bad)

  # Pass 2: ∂ℓ/∂z_c = ((1−ε) w_t + (ε/K) W + 2 λ_z lse) y_c − (1−ε) w_t [c = t] − (ε/K) w_c.
  hit_coef = (1 - eps) * p.w_t
  scale = hit_coef + coef_k * p.wsum + (2 * z_loss * lse if z_loss else 0.0)
  # the label entry: scale·y_t − hit = (scale − hit)·y_t − hit·(1 − y_t), with 1 − y_t
  # from the tail (logits [20, 0, −1] in float32: −2.8194e-9, not 0)
  label_entry = (scale - hit_coef) * jnp.exp(sh_t - log_s) - hit_coef * nx.complement(st, sh_t)
  if grad_ref.dtype == jnp.float16:
    bound = jnp.abs(scale) + jnp.abs(hit_coef) + coef_k * wmax_ref[...]
    r = jnp.exp2(jnp.floor(jnp.log2(F16_RANGE / jnp.maximum(bound, 2.0**-60))))
    r = jnp.where(counted & ~bad, jnp.clip(r, 2.0**-24, 2.0**60), 1.0)
  else:
    r = jnp.ones((rows, 1), jnp.float32)
  mult = g * r
  aux_ref[:, 0:1] = jnp.where(counted, nll, 0.0)
  aux_ref[:, 1:2] = counted.astype(jnp.float32)
  aux_ref[:, 2:3] = lse
  aux_ref[:, 3:4] = r

  def write(cols, offset, acc):
    z, th, idx, _, wv = tile_terms(cols, offset)
    # y = e^{(z − m) − log s}: m and log s apart, so a 1e30 row keeps log s
    grad = jnp.where(idx == t, label_entry, scale * jnp.exp((z - st.m) - log_s))
    if eps:
      grad = grad - coef_k * wv
    if th is not None:
      grad = grad * (1 - jnp.square(th))
    grad = jnp.where(counted, mult * grad, 0.0)
    grad_ref[:, cols] = jnp.where(bad, jnp.nan, grad).astype(grad_ref.dtype)
    return acc

  _for_tiles(tile, tiles, write, 0)


@functools.partial(jax.jit, static_argnames=("interpret", "max_tile", "row_elems", "eps",
                                             "z_loss", "softcap", "donate"))
def xent_2d(x: jax.Array, codes: jax.Array, weights: jax.Array | None = None, *,
            eps: float = 0.0, z_loss: float = 0.0, softcap: float | None = None,
            donate: bool = False, grad_scale: jax.Array | float = 1.0,
            interpret: bool | None = None, max_tile: int = MAX_TILE,
            row_elems: int = ROW_ELEMS):
  """``(loss [N], grad [N, C], aux [N, 4])`` in one kernel.

  ``codes`` are int32 label codes (:func:`~softmax_jax._numerics.canonical_labels`: the
  class, IGNORED or INVALID), so the kernel knows nothing of ``ignore_index`` or the
  labels' dtype.  ``grad`` is the per-row loss's gradient times ``grad_scale`` (a scalar:
  the cotangent every row is expected to get) times ``aux[:, 3]`` (1, except for float16,
  see :func:`_xent_kernel`); ``aux`` is ``[−log y_t, counted, lse, row scale]``.

  ``donate=True`` aliases the gradient output to the logits input
  (``input_output_aliases``): each program reads a tile of its rows before it
  writes the same tile, so the gradient may overwrite the logits in place.  XLA
  honours the alias when nothing reads the logits afterwards and inserts a copy
  otherwise, so the result is the same either way."""
  n, c = x.shape
  tile, tiles = _layout(c, max_tile)
  w = jnp.ones((c,), jnp.float32) if weights is None else weights.astype(jnp.float32)
  wmax = jnp.max(jnp.abs(w)).reshape(1, 1)
  outs = (jax.ShapeDtypeStruct((n, 1), jnp.float32), jax.ShapeDtypeStruct((n, c), x.dtype),
          jax.ShapeDtypeStruct((n, 4), jnp.float32))
  kernel = functools.partial(_xent_kernel, eps=eps, z_loss=z_loss, softcap=softcap)
  br = _rows_per_block(n, tile, row_elems)
  scalar = pl.BlockSpec((1, 1), lambda i: (0, 0))
  loss, grad, aux = _call(
      kernel, x, outs, interpret=interpret, max_tile=max_tile, row_elems=row_elems,
      extra_in=(codes.astype(jnp.int32).reshape(n, 1), w[None],
                jnp.asarray(grad_scale, jnp.float32).reshape(1, 1), wmax),
      extra_specs=(pl.BlockSpec((br, 1), lambda i: (i, 0)),
                   pl.BlockSpec((1, tile * tiles), lambda i: (0, 0)), scalar, scalar),
      aliases={0: 1} if donate else None)
  return loss[:, 0], grad, aux


def xent_formula(x, codes, weights, *, eps=0.0, z_loss=0.0, softcap=None):
  """The kernel's ``(loss [N], ∂ℓ/∂z [N, C], −log y_t [N], lse [N])`` written with XLA ops
  and the same core rules: the derivative of the kernel (second order, forward mode)
  and a reference for the tests."""
  z, th = nx.softcap(nx.upcast(x), softcap)
  st = nx.row_stats(z)
  log_s = nx.log_normaliser(st)
  lse = st.m + log_s
  info = nx.label_info(codes[:, None])
  valid = z != -jnp.inf
  zs = jnp.where(valid, z, 0.0)
  sh_t = jnp.take_along_axis(z, info.index, -1) - st.m
  w = jnp.ones(z.shape[-1:], z.dtype) if weights is None else nx.upcast(weights)
  w_t = w[info.index]
  wv = jnp.where(valid, w, 0.0)
  counted = nx.nonempty(st) & ~info.ignored
  bad = counted & (~info.is_class | (sh_t == -jnp.inf))
  nll = log_s - sh_t
  hit = (1 - eps) * w_t
  scale = hit + 2 * z_loss * lse
  loss = hit * nll + z_loss * jnp.square(lse)
  if eps:
    coef = nx.smoothing_coef(eps, nx.count_valid(z))
    loss = loss + coef * jnp.sum(wv * (log_s - (zs - st.m)), -1, keepdims=True)
    scale = scale + coef * jnp.sum(wv, -1, keepdims=True)
  is_t = lax.broadcasted_iota(jnp.int32, z.shape, 1) == info.index
  label_entry = (scale - hit) * jnp.exp(sh_t - log_s) - hit * nx.complement(st, sh_t)
  grad = jnp.where(is_t, label_entry, scale * jnp.exp(jnp.where(valid, z, -jnp.inf) - lse))
  if eps:
    grad = grad - coef * wv
  if th is not None:
    grad = grad * (1 - jnp.square(th))
  grad = nx.finish(grad, counted, bad)
  return (nx.finish(loss, counted, bad)[:, 0], grad, jnp.where(counted, nll, 0.0)[:, 0],
          lse[:, 0])


# ---------------------------------------------------------------------------
# Derivatives of the fused loss (custom JVPs: forward mode, grad, second order)
# ---------------------------------------------------------------------------


class KernelOpts(NamedTuple):
  """The kernel's static options (hashable: a ``nondiff`` argument)."""

  eps: float = 0.0
  z_loss: float = 0.0
  softcap: float | None = None
  donate: bool = False
  max_tile: int = MAX_TILE
  row_elems: int = ROW_ELEMS
  interpret: bool | None = None

  def formula(self) -> dict:
    return dict(eps=self.eps, z_loss=self.z_loss, softcap=self.softcap)


class Fused(NamedTuple):
  """What the kernel returns for ``N`` rows."""

  loss: jax.Array  # [N]: NaN for a bad row, 0 for a row that does not count
  grad: jax.Array  # [N, C], the logits' dtype: row_scale · g · ∂ℓ/∂z
  nll: jax.Array  # [N]: −log y_t on counted rows, else 0
  counted: jax.Array  # [N]: 1.0 where the row counts
  lse: jax.Array  # [N]
  row_scale: jax.Array  # [N]: 1, or float16's storage scale (a power of two)


@functools.partial(jax.custom_jvp, nondiff_argnums=(4,))
def _fused(x, codes, weights, g, opts: KernelOpts) -> Fused:
  loss, grad, aux = xent_2d(x, codes, weights, grad_scale=g, donate=opts.donate,
                            interpret=opts.interpret, max_tile=opts.max_tile,
                            row_elems=opts.row_elems, **opts.formula())
  return Fused(loss, grad, aux[:, 0], aux[:, 1], aux[:, 2], aux[:, 3])


@_fused.defjvp
def _fused_jvp(opts, primals, tangents):
  """The kernel's outputs differentiated through :func:`xent_formula` (the same values
  in XLA ops): what second derivatives and forward mode over the gradient see."""
  x, codes, weights, g = primals
  dx, _, dw, dg = tangents
  out = _fused(x, codes, weights, g, opts)
  (_, grad, _, _), (dloss, dgrad, dnll, dlse) = jax.jvp(
      lambda x, w: xent_formula(x, codes, w, **opts.formula()), (x, weights), (dx, dw))
  # the stored r·g·∂ℓ/∂z moves with ∂ℓ/∂z and with g (1/Σ w_t moves with the weights)
  dgrad = (out.row_scale[:, None] * (g * dgrad + dg * grad)).astype(out.grad.dtype)
  zero = jnp.zeros_like(out.counted)
  return out, Fused(dloss, dgrad, dnll, zero, dlse, zero)


class Config(NamedTuple):
  reduction: str
  opts: KernelOpts


def _label_weight(codes, weights):
  """``w_t`` per row (``w[0]`` for a label that is not a class, as the XLA path has it)."""
  if weights is None:
    return jnp.ones(codes.shape, jnp.float32)
  return weights.astype(jnp.float32)[nx.label_info(codes).index]


def _mean_denominator(codes, weights):
  """``Σ w_t`` over the rows the mean will count, predicted from the label codes alone (a
  row whose logits are all ``−inf`` does not count either; then the prediction is off and
  the gradient is rescaled)."""
  return jnp.sum(jnp.where(codes != nx.IGNORED, _label_weight(codes, weights), 0.0))


def _safe(d):
  return jnp.where(d > 0, d, jnp.ones_like(d))


def _folded(x, codes, weights, reduction):
  """The factor the kernel folds into the gradient: ``1 / Σ w_t`` predicted for the mean
  (not for float16, whose range could not hold ``(y − t)/N`` without underflow), else 1.
  It is differentiable in the weights: the gradient's own derivative (second order)
  includes ``d(1/Σ w_t)``."""
  if reduction != "mean" or x.dtype == jnp.float16:
    return jnp.ones((), jnp.float32)
  return 1 / _safe(_mean_denominator(codes, weights))


def _value(out, codes, weights, reduction):
  return nx.reduce(out.loss, out.counted * _label_weight(codes, weights), reduction)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3,))
def _xent(x, codes, weights, cfg: Config):
  """The loss of ``[N, C]`` logits, reduced (a scalar for mean and sum, ``[N]`` for none)."""
  out = _fused(x, codes, weights, _folded(x, codes, weights, cfg.reduction), cfg.opts)
  return _value(out, codes, weights, cfg.reduction)


def _is_zero(t) -> bool:
  return t is None or isinstance(t, jax.custom_derivatives.SymbolicZero)


def _logits_tangent(out, g, d, reduction, dtype, dx):
  """``⟨∂ℓ/∂z, ż⟩`` per row from the stored gradient.  For the mean and the sum the
  stored gradient (already divided by the mean's denominator) is used as is, so that in
  ``jax.grad`` the transposed cotangent is the constant 1 and no pass over ``[N, C]``
  follows the kernel; a wrong prediction (a row of ``−inf`` logits) is rescaled by a
  ``lax.cond`` whose other branch forwards the kernel's output."""
  dx = dx.astype(jnp.float32)
  if dtype == jnp.float16:  # not folded: scale by the row factor here
    factor = (1 / d if reduction == "mean" else 1.0) / out.row_scale
    return jnp.sum(out.grad.astype(jnp.float32) * dx * factor[:, None], -1)
  grad = out.grad
  if reduction == "mean":
    grad = lax.cond(g == 1 / d, lambda: grad,
                    lambda: (grad.astype(jnp.float32) * (1 / d / g)).astype(grad.dtype))
  return jnp.sum(grad.astype(jnp.float32) * dx, -1)


def _weights_tangent(out, x, codes, dw, opts):
  """``Σ_c ∂ℓ/∂w_c ẇ_c`` per row: ``(1−ε) (−log y_t) ẇ_t + (ε/K) Σ_c (−log y_c) ẇ_c``."""
  dw = dw.astype(jnp.float32)
  per = (1 - opts.eps) * out.nll * dw[nx.label_info(codes).index]
  if opts.eps:  # reads the logits again (XLA ops, only when the weights are differentiated)
    z, _ = nx.softcap(nx.upcast(x), opts.softcap)
    valid = z != -jnp.inf
    coef = nx.smoothing_coef(opts.eps, nx.count_valid(z))[:, 0]
    neg_log_y = jnp.where(valid, out.lse[:, None] - jnp.where(valid, z, 0.0), 0.0)
    per = per + coef * (neg_log_y @ dw)
  return jnp.where(jnp.isnan(out.loss), jnp.nan, out.counted * per)


@functools.partial(_xent.defjvp, symbolic_zeros=True)
def _xent_jvp(cfg, primals, tangents):
  x, codes, weights = primals
  dx, _, dw = tangents
  g = _folded(x, codes, weights, cfg.reduction)
  out = _fused(x, codes, weights, g, cfg.opts)
  value = _value(out, codes, weights, cfg.reduction)
  d = _safe(jnp.sum(out.counted * _label_weight(codes, weights)))
  rows = jnp.zeros_like(out.loss)  # ⟨∂ℓ/∂z, ż⟩ (divided by the mean's denominator)
  w_rows = jnp.zeros_like(out.loss)  # ⟨∂ℓ/∂w, ẇ⟩
  if not _is_zero(dx):
    rows = _logits_tangent(out, g, d, cfg.reduction, x.dtype, dx)
  if weights is not None and not _is_zero(dw):
    w_rows = _weights_tangent(out, x, codes, dw, cfg.opts)
  if cfg.reduction == "none":
    return value, rows + w_rows
  if cfg.reduction == "sum":
    return value, jnp.sum(rows) + jnp.sum(w_rows)
  tangent = jnp.sum(rows)
  if weights is not None and not _is_zero(dw):
    # the denominator Σ_counted w_t moves with the weights: d(S/D) = (dS − (S/D) dD) / D
    dd = jnp.sum(out.counted * dw.astype(jnp.float32)[nx.label_info(codes).index])
    tangent = tangent + (jnp.sum(w_rows) - value * dd) / d
  return value, tangent


def cross_entropy(x, labels, reduction, *, weights=None, eps=0.0, z_loss=0.0, softcap=None,
                  ignore_index=None, donate=False, max_tile: int = MAX_TILE,
                  row_elems: int = ROW_ELEMS, interpret: bool | None = None):
  """Integer-label cross-entropy with the fused kernel, reduced as the XLA path does
  (``mean`` divides by ``Σ w_t`` over the counted rows).

  Labels of any integer dtype become the core's int32 codes here, outside the kernel.
  The loss is a ``jax.custom_jvp`` (forward mode, ``jax.hessian`` and grad of grad work);
  for the mean and the sum its tangent is ``⟨G, ż⟩`` with ``G`` the kernel's gradient
  already divided by the mean's denominator, so ``jax.grad`` reads the logits once and
  writes the gradient once.  ``max_tile`` and ``row_elems`` are the (static, power of two)
  tile width and the most elements of a row block; ``interpret=None`` runs the Triton
  kernel when the program is lowered for CUDA and interpret mode elsewhere."""
  c = x.shape[-1]
  labels = nx.host_labels(labels, ignore_index)
  codes = nx.canonical_labels(labels, c, ignore_index).reshape(-1)
  opts = KernelOpts(float(eps), float(z_loss), None if softcap is None else float(softcap),
                    bool(donate), max_tile, row_elems, interpret)
  out = _xent(x.reshape(-1, c), codes, weights, Config(reduction, opts))
  return out.reshape(labels.shape) if reduction == "none" else out


# ---------------------------------------------------------------------------
# Dispatch from the public functions (impl="auto" | "xla" | "pallas")
# ---------------------------------------------------------------------------

IMPLS = ("auto", "xla", "pallas")


def _impl_arg(impl, fn):
  if impl not in IMPLS:
    raise ValueError(f"{fn}: impl must be one of {IMPLS}, got {impl!r}")


def _reasons(x, axes, unsupported) -> list[str]:
  """What keeps the kernels from running (empty when nothing does)."""
  reasons = [f"{k}" for k, v in unsupported.items() if v]
  if axes != (x.ndim - 1,):
    reasons.append(f"axis={axes} (the kernels take the last axis only)")
  if not supported(x):
    reasons.append(f"dtype {x.dtype} (float16, bfloat16 or float32 only)")
  if (problem := _triton_problem()) is not None:
    reasons.append(problem)
  return reasons


def choose(impl: str, x: jax.Array, axes: tuple[int, ...], fn: str, *, kernel, xla,
           **unsupported):
  """Runs ``kernel()`` (the Pallas path) or ``xla()`` as ``impl`` and the platform decide.

  ``impl="auto"`` builds both into the program with ``lax.platform_dependent``: the
  kernel where the program is lowered for CUDA, XLA anywhere else, so a CUDA export
  traced on a CPU host holds the Triton kernel and none of the XLA path.  It uses XLA
  alone when an option is unsupported or the Triton backend refuses the kernel at
  trace time; ``impl="pallas"`` raises a ``ValueError`` naming the reason instead.
  ``unsupported`` maps option names to whether they are set to something the kernels
  do not handle.
  """
  _impl_arg(impl, fn)
  if impl == "xla":
    return xla()
  reasons = _reasons(x, axes, unsupported)
  if impl == "pallas":
    if reasons:
      raise ValueError(f"{fn}: impl='pallas' does not support " + ", ".join(reasons))
    try:
      return kernel()
    except KernelUnsupported as err:
      raise KernelUnsupported(f"{fn}: impl='pallas' cannot run: {err}") from err
  if reasons:
    return xla()
  try:
    return lax.platform_dependent(cuda=kernel, default=xla)
  except KernelUnsupported:  # the Triton backend refused the kernel while tracing it
    return xla()


def _flat(x):
  return x.reshape(-1, x.shape[-1])


def softmax(x, log, *, max_tile: int = MAX_TILE, row_elems: int = ROW_ELEMS,
            interpret: bool | None = None):
  """``softmax`` / ``log_softmax`` over the last axis with the kernel."""
  return _softmax(x, log, max_tile, row_elems, interpret)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3, 4))
def _softmax(x, log, max_tile, row_elems, interpret):
  """JVP ``ẏ = y(ż − ⟨y, ż⟩)``."""
  return softmax_2d(_flat(x), log=log, max_tile=max_tile, row_elems=row_elems,
                    interpret=interpret).reshape(x.shape)


@_softmax.defjvp
def _softmax_jvp(log, max_tile, row_elems, interpret, primals, tangents):
  (x,), (dx,) = primals, tangents
  out = _softmax(x, log, max_tile, row_elems, interpret)
  y = (jnp.exp(out) if log else out).astype(jnp.float32)
  inner = jnp.sum(y * dx.astype(jnp.float32), axis=-1, keepdims=True)
  if log:  # d log y = ż − ⟨y, ż⟩
    return out, (dx.astype(jnp.float32) - inner).astype(out.dtype)
  return out, (y * (dx.astype(jnp.float32) - inner)).astype(out.dtype)
