r"""How a kernel walks its rows: row blocks, tiles of classes, and the ``pallas_call``.

One program handles a block of rows (all of their classes).  Rows that fit in one
tile (``C ≤ max_tile``) are read once; longer rows are walked tile by tile, each
tile's :class:`~softmax_jax._numerics.RowStats` merged into the running ones with
the core's online :func:`~softmax_jax._numerics.merge`.  Tiles have a power-of-two
width and row blocks come from the grid (the Triton backend's rules); the last tile
may reach past ``C`` and is masked with ``−inf``.  The tile sizes are static
arguments: :data:`MAX_TILE` and :data:`ROW_ELEMS` are only their defaults.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from softmax_jax import _numerics as nx
from softmax_jax._kernels import _triton

MAX_TILE = 16384  # default classes per tile (float32: 64 kB per row)
ROW_ELEMS = 16384  # default rows per block × tile width, at most


class Blocks(NamedTuple):
  """How ``[N, C]`` is cut: ``tiles`` tiles of ``tile`` classes, ``rows`` rows a block."""

  tile: int
  tiles: int
  rows: int

  @property
  def width(self) -> int:
    """The classes a row block spans (``C`` rounded up to whole tiles)."""
    return self.tile * self.tiles


def blocks(n: int, c: int, max_tile: int, row_elems: int) -> Blocks:
  """The :class:`Blocks` of ``n`` rows of ``c`` classes.  ``max_tile`` and ``row_elems``
  (static) must be positive powers of two; a tile is the next power of two above ``c``
  when that fits in ``max_tile``, and a last row block reaching past ``n`` is masked."""
  for name, v in (("max_tile", max_tile), ("row_elems", row_elems)):
    if not isinstance(v, int) or v < 1 or v & (v - 1):
      raise ValueError(f"{name} must be a power of two, got {v!r}")
  if c <= max_tile:
    tile, tiles = pl.next_power_of_2(c), 1
  else:
    tile, tiles = max_tile, pl.cdiv(c, max_tile)
  return Blocks(tile, tiles, max(1, min(pl.next_power_of_2(n), row_elems // tile)))


class Tile(NamedTuple):
  z: jax.Array  # [rows, tile] float32, −inf past the last class
  idx: jax.Array  # [rows, tile] int32 class indices


def load(x_ref, cols, offset: int, c: int) -> Tile:
  """A tile in float32 with the columns past ``c`` set to −inf, and its class indices."""
  z = x_ref[:, cols].astype(jnp.float32)
  idx = lax.broadcasted_iota(jnp.int32, z.shape, 1) + offset
  return Tile(jnp.where(idx < c, z, -jnp.inf), idx)


def for_tiles(tile: int, tiles: int, fn, init):
  """``acc = fn(columns, offset, acc)`` over every tile (``columns``: a slice or ``pl.ds``)."""
  if tiles == 1:
    return fn(slice(None), 0, init)

  def body(j, acc):
    return fn(pl.ds(pl.multiple_of(j * tile, tile), tile), j * tile, acc)

  return lax.fori_loop(0, tiles, body, init)


def row_stats(x_ref, tile: int, tiles: int, c: int) -> nx.RowStats:
  """The rows' :class:`~softmax_jax._numerics.RowStats` (``[rows, 1]``), merged tile by
  tile with the core's online merge."""
  st = for_tiles(tile, tiles, lambda cols, offset, acc: nx.merge(
      acc, nx.part_stats(load(x_ref, cols, offset, c).z)), nx.empty_stats((x_ref.shape[0], 1)))
  return nx.finalize(st)


def call(kernel, x, outs, b: Blocks, *, interpret, extra_in=(), extra_specs=(), aliases=None):
  """``pallas_call`` of ``kernel(x_ref, *extra_refs, *out_refs, tile=, tiles=, c=)`` over the
  row blocks ``b`` of ``x``.  An output as wide as ``x`` gets ``x``'s blocks, a narrower
  one ``[rows, width]`` blocks.  ``interpret=None`` lowers the Triton kernel for CUDA and
  interpret mode for any other platform (``lax.platform_dependent``)."""
  n, c = x.shape
  row_block = pl.BlockSpec((b.rows, b.width), lambda i: (i, 0))

  def spec(o):
    if o.shape[1] == c:
      return row_block
    return pl.BlockSpec((b.rows, o.shape[1]), lambda i: (i, 0))

  specs = [spec(o) for o in outs]

  def build(interp, *operands):
    return pl.pallas_call(
        functools.partial(kernel, tile=b.tile, tiles=b.tiles, c=c),
        out_shape=outs if len(outs) > 1 else outs[0],
        grid=(pl.cdiv(n, b.rows),),
        in_specs=[row_block, *extra_specs],
        out_specs=specs if len(outs) > 1 else specs[0],
        interpret=interp,
        compiler_params=None if interp else _triton.compiler_params(b.rows * b.tile),
        input_output_aliases=aliases or {},
    )(*operands)

  if interpret is None:
    return lax.platform_dependent(x, *extra_in, cuda=functools.partial(build, False),
                                  default=functools.partial(build, True))
  return build(interpret, x, *extra_in)
