r"""The whole row's statistics when its classes are split over the devices of ``axis_name``.

Device ``k`` holds ``z[:, k·C/D : (k+1)·C/D]`` and computes the
:class:`~softmax_jax._numerics.RowStats` ``(m_k, s_k, tail_k)`` of its own classes;
the whole row's statistics are then (as in Megatron-LM's vocabulary-parallel
cross-entropy, plus the tail):

.. math::
  m = \operatorname{pmax}_k m_k, \qquad
  (s, \text{tail}, \dots) = \operatorname{psum}_k
      \big(\text{rescale}_m(s_k, \text{tail}_k), \dots\big)

one ``pmax`` and one ``psum`` of a tuple of ``[rows]`` numbers, which more per-row
sums (the label's logit, the smoothing sums) can join.  The rescaling and the
empty-row rule are the core's (:func:`~softmax_jax._numerics.rescale`,
:func:`~softmax_jax._numerics.finalize`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from softmax_jax import _numerics as nx


class GlobalStats(NamedTuple):
  stats: nx.RowStats  # of the whole row ([..., 1] each; tail None when not asked for)
  sums: dict  # the psum of the extra per-row sums


def global_stats(zm, axis_name, extra=None, tail=True) -> GlobalStats:
  """The whole row's :class:`~softmax_jax._numerics.RowStats` from this device's masked
  logits ``zm``, with one ``pmax`` and one ``psum``.

  ``extra(m)`` gives a dict of more local ``[..., 1]`` sums (they may use the global
  max ``m``) that travel in the same ``psum``.
  """
  local = nx.part_stats(zm)
  m = lax.stop_gradient(lax.pmax(local.m, axis_name))
  m = nx.finalize(local._replace(m=m)).m  # an empty row: m = 0
  local = nx.rescale(local, m)
  more = {} if extra is None else extra(m)
  if tail:
    s, tail_sum, more = lax.psum((local.s, local.tail, more), axis_name)
  else:
    (s, more), tail_sum = lax.psum((local.s, more), axis_name), None
  return GlobalStats(nx.RowStats(m, s, tail_sum), more)


def num_classes(width: int, axis_name, fn: str) -> int:
  """The whole row's class count ``width · D`` (inside ``shard_map`` only)."""
  try:
    return width * lax.axis_size(axis_name)
  except NameError as err:
    raise ValueError(f"{fn}: axis_name={axis_name!r} is not bound; call this function inside "
                     "jax.shard_map over a mesh with that axis (or use the mesh-taking "
                     "function of softmax_jax.sharded)") from err


def pick_local(values: jax.Array, local_index: jax.Array, here: jax.Array) -> jax.Array:
  """``values[local_index]`` where the label's class is on this device (``here``), else 0
  (``[..., 1]``; ``values`` is ``[C/D]`` or ``[..., C/D]``)."""
  if values.ndim == 1:
    picked = values[local_index]
  else:
    picked = jnp.take_along_axis(values, local_index, -1)
  return jnp.where(here, picked, jnp.zeros_like(picked))
