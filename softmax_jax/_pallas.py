r"""Fused Pallas kernels for softmax, log-softmax and integer-label cross-entropy.

One program handles a block of rows (all of their classes):

- rows that fit in one tile (``C ≤ MAX_TILE``) are read once, reduced and written
  once: ``y = e^{z − m} / s``;
- longer rows (131072 classes and more) are walked tile by tile twice: the first
  pass keeps the running max and sum (online softmax:
  ``s ← s·e^{m − m'} + Σ e^{z − m'}``), the second writes the outputs;
- the cross-entropy kernel writes the loss ``ξ = m + log s − z_t`` and the
  gradient ``∂ξ/∂z = y − t`` (lecture) in the same pass, so the backward pass
  only scales the stored gradient by the incoming cotangent.

The kernels follow the Triton backend's rules (tiles of a power-of-two width,
row blocks from the grid) and run anywhere in Pallas interpret mode, which is
how the CPU tests cover them.  ``impl="auto"`` in the public functions uses them
on GPU only.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

MAX_TILE = 16384  # classes per tile (float32: 64 kB per row)
ROW_ELEMS = 16384  # rows per block × tile width, at most


def supported(x: jax.Array) -> bool:
  """Whether the kernels take ``x`` (2-D after flattening, classes last, a float dtype)."""
  return x.ndim >= 1 and x.shape[-1] >= 1 and jnp.issubdtype(x.dtype, jnp.floating) and (
      x.dtype != jnp.float64)


def _layout(c: int, max_tile: int = MAX_TILE) -> tuple[int, int]:
  """``(tile width, number of tiles)`` for ``c`` classes; tiles have a power-of-two width
  (the Triton backend's rule) and the last one may reach past ``c`` (masked)."""
  if c <= max_tile:
    return pl.next_power_of_2(c), 1
  return max_tile, pl.cdiv(c, max_tile)


def _rows_per_block(n: int, tile: int) -> int:
  """A power of two; a last block reaching past ``n`` is masked by Pallas."""
  return max(1, min(pl.next_power_of_2(n), ROW_ELEMS // tile))


def _interpret(interpret):
  return jax.default_backend() == "cpu" if interpret is None else interpret


def _load(x_ref, cols, offset, c):
  """A tile in float32 with the columns past ``c`` set to −inf, and its column indices."""
  z = x_ref[:, cols].astype(jnp.float32)
  idx = jax.lax.broadcasted_iota(jnp.int32, z.shape, 1) + offset
  return jnp.where(idx < c, z, -jnp.inf), idx


def _tile_cols(j, tile):
  return pl.ds(pl.multiple_of(j * tile, tile), tile)


def _for_tiles(tile, tiles, fn, init):
  """``acc = fn(columns, offset, acc)`` over every tile (``columns``: a slice or ``pl.ds``)."""
  if tiles == 1:
    return fn(slice(None), 0, init)
  return jax.lax.fori_loop(0, tiles, lambda j, acc: fn(_tile_cols(j, tile), j * tile, acc),
                           init)


def _online(m, s, z):
  """Merge tile ``z`` into the running row max ``m`` and ``s = Σ e^{z − m}`` (online softmax)."""
  m_new = jnp.maximum(m, jnp.max(z, axis=-1, keepdims=True))
  m_safe = jnp.where(m_new == -jnp.inf, 0.0, m_new)
  s = s * jnp.exp(jnp.where(m == -jnp.inf, -jnp.inf, m - m_safe)) + jnp.sum(
      jnp.exp(z - m_safe), axis=-1, keepdims=True)
  return m_new, s


def _start(rows):
  """Initial ``(m, s)`` of :func:`_online` for ``rows`` rows."""
  return jnp.full((rows, 1), -jnp.inf, jnp.float32), jnp.zeros((rows, 1), jnp.float32)


def _stats(x_ref, tile, tiles, c):
  """Row max ``m`` (0 for rows without a finite entry) and ``s = Σ e^{z − m}``, ``[rows, 1]``."""
  m, s = _for_tiles(tile, tiles, lambda cols, offset, acc: _online(
      *acc, _load(x_ref, cols, offset, c)[0]), _start(x_ref.shape[0]))
  return jnp.where(m == -jnp.inf, 0.0, m), s


def _softmax_kernel(x_ref, o_ref, *, tile, tiles, c, log):
  m, s = _stats(x_ref, tile, tiles, c)
  empty = s == 0  # every class masked with −inf

  def write(cols, offset, acc):
    z, _ = _load(x_ref, cols, offset, c)
    z = z - m
    if log:
      out = jnp.where(empty, -jnp.inf, z - jnp.log(s))
    else:
      out = jnp.exp(z) / jnp.where(empty, 1.0, s)
    o_ref[:, cols] = out.astype(o_ref.dtype)
    return acc

  _for_tiles(tile, tiles, write, 0)


def _call(kernel, x, outs, interpret, max_tile, extra_in=(), extra_specs=(), aliases=None):
  n, c = x.shape
  max_tile = MAX_TILE if max_tile is None else max_tile
  tile, tiles = _layout(c, max_tile)
  br = _rows_per_block(n, tile)
  row_block = pl.BlockSpec((br, tile * tiles), lambda i: (i, 0))

  def spec(o):
    if o.shape[1] == c:
      return row_block
    return pl.BlockSpec((br, o.shape[1]), lambda i: (i, 0))

  specs = [spec(o) for o in outs]
  interpret = _interpret(interpret)
  params = None
  if not interpret:  # the Triton backend (Pallas would otherwise pick Mosaic GPU)
    from jax.experimental.pallas import triton as pltriton

    params = pltriton.CompilerParams(num_warps=_warps(br * tile), num_stages=1)
  return pl.pallas_call(
      functools.partial(kernel, tile=tile, tiles=tiles, c=c),
      out_shape=outs if len(outs) > 1 else outs[0],
      grid=(pl.cdiv(n, br),),
      in_specs=[row_block, *extra_specs],
      out_specs=specs if len(outs) > 1 else specs[0],
      interpret=interpret,
      compiler_params=params,
      input_output_aliases=aliases or {},
  )(x, *extra_in)


def _warps(elements: int) -> int:
  """Warps per program: more for wider blocks (4 up to 2048 elements, at most 16)."""
  return int(min(16, max(4, pl.next_power_of_2(elements) // 1024)))


@functools.partial(jax.jit, static_argnames=("log", "interpret", "max_tile"))
def softmax_2d(x: jax.Array, *, log: bool = False, interpret: bool | None = None,
               max_tile: int | None = None) -> jax.Array:
  """``softmax`` (or ``log_softmax``) of ``[N, C]`` over the last axis with one kernel."""
  kernel = functools.partial(_softmax_kernel, log=log)
  return _call(kernel, x, (jax.ShapeDtypeStruct(x.shape, x.dtype),), interpret, max_tile)


def apply_softcap(z, cap):
  """``cap·tanh(z/cap)`` with −inf kept (a masked class stays masked), and the tanh."""
  if cap is None:
    return z, None
  th = jnp.tanh(z / cap)
  return jnp.where(z == -jnp.inf, -jnp.inf, cap * th), th


def _xent_kernel(x_ref, t_ref, w_ref, g_ref, loss_ref, grad_ref, aux_ref, *, tile, tiles, c,
                 eps, z_loss, softcap, ignore_index):
  """Per row: ``ξ`` (PyTorch semantics with class weights and smoothing, plus ``λ_z lse²``),
  its gradient times the cotangent ``g`` (one number for every row), and
  ``aux = [w_t, −log y_t, counted, lse]``."""
  t = t_ref[...]  # [rows, 1] int32
  g = g_ref[...].astype(jnp.float32)  # [1, 1]
  rows = t.shape[0]

  def tile_terms(cols, offset):
    raw, idx = _load(x_ref, cols, offset, c)
    z, th = apply_softcap(raw, softcap)
    w = w_ref[:, cols].astype(jnp.float32)  # [1, tile]
    return z, th, idx, jnp.where(z > -jnp.inf, w, 0.0)

  # Pass 1: online max and sum, the target's logit and weight, smoothing sums.
  def stats(cols, offset, acc):
    m, s, z_t, w_t, k, wsum, wz = acc
    z, _, idx, wv = tile_terms(cols, offset)
    m_new, s = _online(m, s, z)
    hit = idx == t
    z_t = z_t + jnp.sum(jnp.where(hit, z, 0.0), axis=-1, keepdims=True)
    w_t = w_t + jnp.sum(jnp.where(hit, w_ref[:, cols].astype(jnp.float32), 0.0), axis=-1,
                        keepdims=True)
    if eps:
      k = k + jnp.sum((z > -jnp.inf).astype(jnp.float32), axis=-1, keepdims=True)
      wsum = wsum + jnp.sum(wv, axis=-1, keepdims=True)
      wz = wz + jnp.sum(jnp.where(wv != 0, wv * z, 0.0), axis=-1, keepdims=True)
    return m_new, s, z_t, w_t, k, wsum, wz

  zero = jnp.zeros((rows, 1), jnp.float32)
  init = (*_start(rows), zero, zero, zero, zero, zero)
  m, s, z_t, w_t, k, wsum, wz = _for_tiles(tile, tiles, stats, init)
  m = jnp.where(m == -jnp.inf, 0.0, m)
  empty = s == 0
  lse = m + jnp.log(jnp.where(empty, 1.0, s))
  counted = ~empty
  if ignore_index is not None:
    counted = counted & (t != ignore_index)
  bad = counted & ((t < 0) | (t >= c) | (z_t == -jnp.inf))
  nll = lse - z_t
  coef_k = eps / jnp.where(k > 0, k, 1.0) if eps else zero
  loss = (1 - eps) * w_t * nll + coef_k * (wsum * lse - wz) + z_loss * jnp.square(lse)
  loss_ref[...] = jnp.where(bad, jnp.nan, jnp.where(counted, loss, 0.0))
  aux_ref[:, 0:1] = jnp.where(counted, w_t, 0.0)
  aux_ref[:, 1:2] = jnp.where(counted, nll, 0.0)
  aux_ref[:, 2:3] = counted.astype(jnp.float32)
  aux_ref[:, 3:4] = lse

  # Pass 2: ∂ℓ/∂z_c = ((1−ε) w_t + (ε/K) W + 2 λ_z lse) y_c − (1−ε) w_t [c = t] − (ε/K) w_c,
  # times g (folded into the per-row coefficients).
  scale = g * ((1 - eps) * w_t + coef_k * wsum + 2 * z_loss * lse)
  hit_coef = g * ((1 - eps) * w_t)
  smooth_coef = g * coef_k

  def write(cols, offset, acc):
    z, th, idx, wv = tile_terms(cols, offset)
    grad = scale * jnp.exp(z - lse) - hit_coef * (idx == t).astype(jnp.float32)
    if eps:
      grad = grad - smooth_coef * wv
    if th is not None:
      grad = grad * (1 - jnp.square(th))
    grad = jnp.where(counted, grad, 0.0)
    grad_ref[:, cols] = jnp.where(bad, jnp.nan, grad).astype(grad_ref.dtype)
    return acc

  _for_tiles(tile, tiles, write, 0)


@functools.partial(jax.jit, static_argnames=("interpret", "max_tile", "eps", "z_loss",
                                             "softcap", "ignore_index", "donate"))
def xent_2d(x: jax.Array, labels: jax.Array, weights: jax.Array | None = None, *,
            eps: float = 0.0, z_loss: float = 0.0, softcap: float | None = None,
            ignore_index: int | None = None, donate: bool = False,
            grad_scale: jax.Array | float = 1.0, interpret: bool | None = None,
            max_tile: int | None = None):
  """``(loss [N], grad [N, C], aux [N, 4])`` in one kernel: the per-row loss, its gradient
  times ``grad_scale`` (a scalar: the cotangent every row is expected to get), and
  ``[w_t, −log y_t, counted, lse]`` (the first two 0 for rows that do not count).

  ``donate=True`` aliases the gradient output to the logits input
  (``input_output_aliases``): each program reads a tile of its rows before it
  writes the same tile, so the gradient may overwrite the logits in place.  XLA
  honours the alias when nothing reads the logits afterwards and inserts a copy
  otherwise, so the result is the same either way."""
  n, c = x.shape
  tile, tiles = _layout(c, MAX_TILE if max_tile is None else max_tile)
  w = jnp.ones((1, c), jnp.float32) if weights is None else weights.astype(jnp.float32)[None]
  outs = (jax.ShapeDtypeStruct((n, 1), jnp.float32), jax.ShapeDtypeStruct((n, c), x.dtype),
          jax.ShapeDtypeStruct((n, 4), jnp.float32))
  kernel = functools.partial(_xent_kernel, eps=eps, z_loss=z_loss, softcap=softcap,
                             ignore_index=ignore_index)
  br = _rows_per_block(n, tile)
  loss, grad, aux = _call(kernel, x, outs, interpret, max_tile,
                          extra_in=(labels.astype(jnp.int32).reshape(n, 1), w,
                                    jnp.asarray(grad_scale, jnp.float32).reshape(1, 1)),
                          extra_specs=(pl.BlockSpec((br, 1), lambda i: (i, 0)),
                                       pl.BlockSpec((1, tile * tiles), lambda i: (0, 0)),
                                       pl.BlockSpec((1, 1), lambda i: (0, 0))),
                          aliases={0: 1} if donate else None)
  return loss[:, 0], grad, aux


# ---------------------------------------------------------------------------
# Dispatch from the public functions (impl="auto" | "xla" | "pallas")
# ---------------------------------------------------------------------------

IMPLS = ("auto", "xla", "pallas")


def use(impl: str, x: jax.Array, axes: tuple[int, ...], fn: str, **unsupported) -> bool:
  """Whether ``fn`` should run the Pallas kernel.

  ``unsupported`` maps option names to whether they are set to something the
  kernels do not handle; ``impl="pallas"`` with any of them raises.
  """
  if impl not in IMPLS:
    raise ValueError(f"{fn}: impl must be one of {IMPLS}, got {impl!r}")
  if impl == "xla":
    return False
  reasons = [f"{k}" for k, v in unsupported.items() if v]
  if axes != (x.ndim - 1,):
    reasons.append(f"axis={axes} (the kernels take the last axis only)")
  if not supported(x):
    reasons.append(f"dtype {x.dtype} (float16, bfloat16 or float32 only)")
  if impl == "pallas":
    if reasons:
      raise ValueError(f"{fn}: impl='pallas' does not support " + ", ".join(reasons))
    return True
  return not reasons and jax.default_backend() == "gpu"


def choose(impl: str, x: jax.Array, axes: tuple[int, ...], fn: str, *, kernel, xla,
           **unsupported):
  """Runs ``kernel()`` (the Pallas path) or ``xla()`` as ``impl`` and the platform decide.

  ``unsupported`` maps option names to whether they are set to something the
  kernels do not handle; ``impl="pallas"`` with any of them raises.
  """
  if use(impl, x, axes, fn, **unsupported):
    return kernel()
  return xla()


def _flat(x):
  return x.reshape(-1, x.shape[-1])


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def softmax(x, log):
  """``softmax`` / ``log_softmax`` over the last axis; JVP ``ẏ = y(ż − ⟨y, ż⟩)``."""
  return softmax_2d(_flat(x), log=log).reshape(x.shape)


@softmax.defjvp
def _softmax_jvp(log, primals, tangents):
  (x,), (dx,) = primals, tangents
  out = softmax(x, log)
  y = (jnp.exp(out) if log else out).astype(jnp.float32)
  inner = jnp.sum(y * dx.astype(jnp.float32), axis=-1, keepdims=True)
  if log:  # d log y = ż − ⟨y, ż⟩
    return out, (dx.astype(jnp.float32) - inner).astype(out.dtype)
  return out, (y * (dx.astype(jnp.float32) - inner)).astype(out.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _xent(x, labels, weights, g_expected, opts):
  return _xent_fwd(x, labels, weights, g_expected, opts)[0]


def _xent_fwd(x, labels, weights, g_expected, opts):
  loss, grad, aux = xent_2d(_flat(x), labels.reshape(-1), weights, grad_scale=g_expected,
                            **dict(opts))
  shape = labels.shape
  out = (loss.reshape(shape), aux[:, 0].reshape(shape))
  # the logits are kept only where the weights' smoothing gradient reads them, so that
  # with ``donate`` nothing else holds them and the gradient can take their buffer
  keep = weights is not None and dict(opts).get("eps", 0.0)
  res = (x if keep else None, labels, weights, g_expected, grad.reshape(x.shape), aux)
  return out, res


def _xent_bwd(opts, res, cts):
  x, labels, weights, g_expected, grad, aux = res
  g, g_weight = cts
  # The kernel wrote g_expected · (y − t).  When every row's cotangent is g_expected (a
  # mean or sum whose result is differentiated directly) that is the gradient, with no
  # further pass over [N, C]; otherwise rescale it.
  dz = lax.cond(
      jnp.all(g == g_expected), lambda: grad,
      lambda: ((g / g_expected)[..., None] * grad).astype(grad.dtype))
  dw = None
  if weights is not None:  # XLA ops; removed by the compiler when nobody asks for them
    o = dict(opts)
    eps, c = o.get("eps", 0.0), grad.shape[-1]
    g, g_weight = g.reshape(-1), g_weight.reshape(-1)
    counted, nll, lse = aux[:, 2] > 0, aux[:, 1], aux[:, 3]
    t = jnp.clip(labels.reshape(-1), 0, c - 1)
    per_t = jnp.where(counted, g * (1 - eps) * nll + g_weight, 0.0)
    dw = jnp.zeros((c,), jnp.float32).at[t].add(per_t)
    if eps:
      z, _ = apply_softcap(_flat(x).astype(jnp.float32), o.get("softcap"))
      valid = z > -jnp.inf
      k = jnp.maximum(jnp.sum(valid, axis=-1), 1)
      coef = jnp.where(counted, g * eps / k, 0.0)
      dw = dw + jnp.sum(jnp.where(valid, coef[:, None] * (lse[:, None] - z), 0.0), axis=0)
    dw = dw.astype(weights.dtype)
  return dz, None, dw, None


_xent.defvjp(_xent_fwd, _xent_bwd)


def _mean_denominator(labels, weights, c, ignore_index):
  """``Σ w_t`` over the rows the mean will count, predicted from the labels alone (a row
  whose logits are all ``−inf`` is not counted either; then the prediction is off and the
  backward pass rescales)."""
  t = labels.reshape(-1)
  ok = (t >= 0) & (t < c)  # the kernel gives an out-of-range label the weight 0
  if ignore_index is not None:
    ok = ok & (t != ignore_index)
  w = jnp.ones((), jnp.float32) if weights is None else (
      weights.astype(jnp.float32)[jnp.clip(t, 0, c - 1)])
  return jnp.sum(jnp.where(ok, w, 0.0))


def cross_entropy(x, labels, reduction, *, weights=None, eps=0.0, z_loss=0.0, softcap=None,
                  ignore_index=None, donate=False):
  """Integer-label cross-entropy with the fused kernel, reduced as the XLA path does
  (``mean`` divides by ``Σ w_t`` over the counted rows).

  The kernel writes the gradient already multiplied by the cotangent that the reduction
  will hand every row when its result is differentiated directly (``1 / Σ w_t`` for the
  mean, 1 otherwise), so that ``jax.grad`` of the loss needs no second pass over the
  logits' size."""
  opts = tuple(sorted(dict(eps=float(eps), z_loss=float(z_loss), softcap=softcap,
                           ignore_index=ignore_index, donate=bool(donate)).items()))
  one = jnp.ones((), jnp.float32)
  if reduction == "mean":
    d = lax.stop_gradient(_mean_denominator(labels, weights, x.shape[-1], ignore_index))
    g_expected = one / jnp.where(d > 0, d, one)  # what the division below hands each row
  else:
    g_expected = one
  per, weight = _xent(x, labels, weights, g_expected, opts)
  if reduction == "none":
    return per
  if reduction == "sum":
    return jnp.sum(per)
  total = jnp.sum(weight)
  return jnp.sum(per) / jnp.where(total > 0, total, 1.0)
