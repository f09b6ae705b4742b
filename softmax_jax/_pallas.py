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


def _stats(x_ref, tile, tiles, c):
  """Row max ``m`` (0 for rows without a finite entry) and ``s = Σ e^{z − m}``, ``[rows, 1]``."""
  if tiles == 1:
    z, _ = _load(x_ref, slice(None), 0, c)
    m = jnp.max(z, axis=-1, keepdims=True)
    m = jnp.where(m == -jnp.inf, 0.0, m)
    return m, jnp.sum(jnp.exp(z - m), axis=-1, keepdims=True)

  rows = x_ref.shape[0]

  def body(j, carry):
    m, s = carry
    z, _ = _load(x_ref, _tile_cols(j, tile), j * tile, c)
    m_new = jnp.maximum(m, jnp.max(z, axis=-1, keepdims=True))
    m_safe = jnp.where(m_new == -jnp.inf, 0.0, m_new)
    s = s * jnp.exp(jnp.where(m == -jnp.inf, -jnp.inf, m - m_safe)) + jnp.sum(
        jnp.exp(z - m_safe), axis=-1, keepdims=True)
    return m_new, s

  init = (jnp.full((rows, 1), -jnp.inf, jnp.float32), jnp.zeros((rows, 1), jnp.float32))
  m, s = jax.lax.fori_loop(0, tiles, body, init)
  return jnp.where(m == -jnp.inf, 0.0, m), s


def _for_tiles(tile, tiles, fn, init):
  """``acc = fn(columns, offset, acc)`` over every tile (``columns``: a slice or ``pl.ds``)."""
  if tiles == 1:
    return fn(slice(None), 0, init)
  return jax.lax.fori_loop(0, tiles, lambda j, acc: fn(_tile_cols(j, tile), j * tile, acc),
                           init)


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


def _call(kernel, x, outs, interpret, max_tile, extra_in=()):
  n, c = x.shape
  tile, tiles = _layout(c, max_tile)
  br = _rows_per_block(n, tile)
  row_block = pl.BlockSpec((br, tile * tiles), lambda i: (i, 0))
  vec_block = pl.BlockSpec((br, 1), lambda i: (i, 0))
  specs = [row_block if len(o.shape) == 2 and o.shape[1] == c else vec_block for o in outs]
  interpret = _interpret(interpret)
  params = None
  if not interpret:  # the Triton backend (Pallas would otherwise pick Mosaic GPU)
    from jax.experimental.pallas import triton as pltriton

    params = pltriton.CompilerParams(num_warps=_warps(br * tile), num_stages=1)
  return pl.pallas_call(
      functools.partial(kernel, tile=tile, tiles=tiles, c=c),
      out_shape=outs if len(outs) > 1 else outs[0],
      grid=(pl.cdiv(n, br),),
      in_specs=[row_block] + [vec_block] * len(extra_in),
      out_specs=specs if len(outs) > 1 else specs[0],
      interpret=interpret,
      compiler_params=params,
  )(x, *extra_in)


def _warps(elements: int) -> int:
  """Warps per program: more for wider blocks (4 up to 2048 elements, at most 16)."""
  return int(min(16, max(4, pl.next_power_of_2(elements) // 1024)))


@functools.partial(jax.jit, static_argnames=("log", "interpret", "max_tile"))
def softmax_2d(x: jax.Array, *, log: bool = False, interpret: bool | None = None,
               max_tile: int = MAX_TILE) -> jax.Array:
  """``softmax`` (or ``log_softmax``) of ``[N, C]`` over the last axis with one kernel."""
  kernel = functools.partial(_softmax_kernel, log=log)
  return _call(kernel, x, (jax.ShapeDtypeStruct(x.shape, x.dtype),), interpret, max_tile)


def _xent_kernel(x_ref, t_ref, loss_ref, grad_ref, valid_ref, *, tile, tiles, c):
  m, s = _stats(x_ref, tile, tiles, c)
  t = t_ref[...]  # [rows, 1] int32
  empty = s == 0
  bad = (t < 0) | (t >= c)
  lse = m + jnp.log(jnp.where(empty, 1.0, s))

  def write(cols, offset, z_t):
    raw, idx = _load(x_ref, cols, offset, c)
    hit = idx == t
    grad = jnp.where(empty, 0.0, jnp.exp(raw - lse) - hit.astype(jnp.float32))  # y − t
    grad_ref[:, cols] = jnp.where(bad, jnp.nan, grad).astype(grad_ref.dtype)
    return z_t + jnp.sum(jnp.where(hit, raw, 0.0), axis=-1, keepdims=True)

  z_t = _for_tiles(tile, tiles, write, jnp.zeros_like(m))
  loss = jnp.where(empty, 0.0, lse - z_t)
  loss_ref[...] = jnp.where(bad, jnp.nan, loss)
  valid_ref[...] = jnp.where(empty, 0.0, 1.0)


@functools.partial(jax.jit, static_argnames=("interpret", "max_tile"))
def xent_2d(x: jax.Array, labels: jax.Array, *, interpret: bool | None = None,
            max_tile: int = MAX_TILE):
  """``(loss [N] float32, grad [N, C], counted [N])``: ``ξ``, ``y − t`` and whether the row
  has a finite logit, in one kernel."""
  n, c = x.shape
  vec = jax.ShapeDtypeStruct((n, 1), jnp.float32)
  outs = (vec, jax.ShapeDtypeStruct((n, c), x.dtype), vec)
  loss, grad, valid = _call(_xent_kernel, x, outs, interpret, max_tile,
                            extra_in=(labels.astype(jnp.int32).reshape(n, 1),))
  return loss[:, 0], grad, valid[:, 0]


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


@jax.custom_vjp
def _xent(x, labels):
  return _xent_fwd(x, labels)[0]


def _xent_fwd(x, labels):
  loss, grad, valid = xent_2d(_flat(x), labels.reshape(-1))
  return (loss.reshape(labels.shape), valid.reshape(labels.shape)), grad.reshape(x.shape)


def _xent_bwd(grad, cts):
  g, _ = cts
  return (g[..., None] * grad).astype(grad.dtype), None  # g · (y − t)


_xent.defvjp(_xent_fwd, _xent_bwd)


def cross_entropy(x, labels, reduction):
  """Per-example or reduced integer-label cross-entropy with the fused kernel.

  ``mean`` divides by the rows that have a finite logit (as the XLA path does).
  """
  per, valid = _xent(x, labels)
  if reduction == "none":
    return per
  if reduction == "sum":
    return jnp.sum(per)
  return jnp.sum(per) / jnp.maximum(jnp.sum(valid), 1.0)
