r"""Linear cross-entropy computed in vocabulary chunks: the ``N × V`` logits never exist.

``linear_cross_entropy(h, W, t)`` is ``ξ(t, softmax(h W + b))`` per token.  A
language model's output layer has ``V`` of 32k–256k classes, and the
materialised logits (and their gradient) dominate its memory.  Here the
vocabulary is walked in chunks of ``chunk_size`` columns:

- statistics: per chunk, ``z = h W[:, c] + b[c]`` (``[N, chunk]``), its
  :class:`~softmax_jax._numerics.RowStats` ``(m, s, tail)`` merged into the
  running ones with the core's ``merge`` (online softmax), the label's logit,
  and with smoothing the number ``K`` of valid (finite) classes and their sum;
  all ``O(N)``;
- derivative: a ``jax.custom_jvp`` whose tangent is again a loop over chunks,
  ``ℓ̇ = Σ_c (∂ℓ/∂z_c) ż_c`` with ``ż = ḣ W + h Ẇ + ḃ`` and the lecture's
  ``∂ξ/∂z = y − t`` (options folded in).  The per-chunk ``∂ℓ/∂z_c`` sits under
  ``jax.checkpoint``, so reverse mode (the transpose of that linear loop) saves
  only the ``O(N)`` statistics and recomputes each chunk: ``d h += dz W_cᵀ``,
  ``d W_c = hᵀ dz``, ``d b_c = Σ dz``.

So temporary memory is ``O(N · chunk)`` plus the gradients, never ``O(N · V)``,
and ``jax.grad``, ``jax.jvp``, ``jax.jacfwd``, ``jax.linearize``, ``vmap`` and
second derivatives all work.  Per token (PyTorch's semantics, ``K`` valid classes,
``lse = log Σ_c e^{z_c}``, ``ε`` the smoothing, ``λ_z`` PaLM's ``z_loss``):

.. math::
  \ell = (1-\varepsilon)(\mathrm{lse} - z_t)
         + \frac{\varepsilon}{K}\sum_{c\ \mathrm{valid}} (\mathrm{lse} - z_c)
         + \lambda_z\, \mathrm{lse}^2, \qquad
  \frac{\partial \ell}{\partial z_c} = (1 + 2\lambda_z \mathrm{lse})\, y_c - (1-\varepsilon)\, t_c
         - \frac{\varepsilon}{K}[c\ \mathrm{valid}]

The label's entry uses ``1 − y_t`` from the tail (:func:`_numerics.complement`).
With ``logit_softcap = s`` the logits are ``s·tanh(z/s)`` (``−inf`` kept) and
the gradient gains the factor ``1 − tanh²(z/s)``.  The chunk loops and the custom JVP are
in ``softmax_jax/losses/_linear_chunks.py``; this module checks the arguments.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from softmax_jax import _arguments
from softmax_jax import _numerics as nm
from softmax_jax.losses._linear_chunks import Config, linear_xent

_DEFAULT_CHUNK_BYTES = 32 << 20  # logits of one chunk, float32


class _CheckedLabels(NamedTuple):
  """The labels as a JAX integer array and ``ignore_index`` checked against their dtype."""

  labels: jax.Array
  ignore_index: int | None


def _checked_labels(labels, ignore_index, shape, of, fn) -> _CheckedLabels:
  """Integer labels of ``shape``: ``ignore_index`` checked against the labels' own dtype,
  64-bit host labels kept from wrapping (:func:`_numerics.host_labels`)."""
  dtype = labels.dtype if hasattr(labels, "dtype") else np.asarray(labels).dtype
  if not jnp.issubdtype(dtype, jnp.integer) or dtype == jnp.bool_:
    raise ValueError(f"{fn}: labels must be integers of shape {shape} for {of}, got {dtype}")
  ignore = _arguments.ignore_index(ignore_index, dtype, fn)
  labels = nm.host_labels(labels, ignore)
  ignore = _arguments.ignore_index(ignore, labels.dtype, fn)  # 32-bit once on the device
  labels = _arguments.integer_labels(labels, shape, of, fn)
  return _CheckedLabels(labels, ignore)


def linear_cross_entropy(
    hidden: ArrayLike,
    weight: ArrayLike,
    labels: ArrayLike,
    *,
    bias: ArrayLike | None = None,
    chunk_size: int | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    logit_softcap: float | None = None,
    reduction: str = "mean",
    return_lse: bool = False,
):
  r"""Cross-entropy of ``softmax(hidden @ weight + bias)`` without the ``[N, V]`` logits.

  The vocabulary is walked in chunks of ``chunk_size`` columns, so only
  ``[N, chunk_size]`` logits exist at a time; the row statistics are merged as
  in online softmax, and what reverse mode saves between the passes is
  ``O(N)``.  Values and derivatives equal those of the materialised
  ``cross_entropy_with_integer_labels(hidden @ weight + bias, labels, ...)``
  (PyTorch semantics) up to rounding:

  .. math::
    \ell = (1-\varepsilon)(-\log y_t) + \frac{\varepsilon}{K}\sum_{c\ \mathrm{valid}}
    (-\log y_c) + \lambda_z\, \mathrm{lse}^2

  with ``K`` the number of valid classes (logit not ``−inf``).  The derivative
  is a ``jax.custom_jvp``, so ``jax.grad``, ``jax.jvp``, ``jax.jacfwd``,
  ``jax.linearize``, ``jax.vmap``, ``jax.hessian`` and grad-of-grad all work, for
  every ``reduction`` and with ``return_lse``.  First derivatives use the
  chunked formula (``1 − y_t`` from the tail, as the core losses do); second
  derivatives differentiate the chunk loop itself, which keeps per-chunk
  residuals: fine at the sizes where one takes Hessians, not at ``N × V`` of a
  language model.

  Args:
    hidden: ``[N, H]`` hidden states (any leading dims are flattened).
    weight: ``[H, V]`` output weight.
    labels: ``[N]`` integer labels (any integer dtype, compared in it).
    bias: optional ``[V]``; ``−inf`` entries remove those classes (vocabulary
      padding): they get probability 0, do not count in ``K`` and a label
      pointing at one is invalid.
    chunk_size: vocabulary columns per chunk (any positive integer); default:
      about 32 MB of float32 logits, a multiple of 128.
    ignore_index: a label value to skip (an integer the labels' dtype can hold).
    label_smoothing: ``ε`` in ``[0, 1]``, spread over the ``K`` valid classes.
    z_loss: PaLM's auxiliary ``λ_z · lse²`` per counted token (finite, ``≥ 0``).
    logit_softcap: ``s`` (finite, ``> 0``) to use ``s·tanh(z/s)`` as the logits
      (Gemma 2); ``−inf`` stays ``−inf``.
    reduction: ``"mean"`` (over the counted tokens; 0 if none), ``"sum"`` or
      ``"none"`` (shape of ``labels``).
    return_lse: also return the per-token log-sum-exp (0 for tokens that do not count).

  Returns:
    The loss, or ``(loss, lse)``; float32 for half-precision inputs.

  A token counts unless its label is ``ignore_index`` or its row has no valid
  class (all logits ``−inf``: loss 0, gradient 0).  A counted token whose label
  is outside ``[0, V)`` or points at a ``−inf`` class has a NaN loss and makes
  the gradient NaN, never a silently clamped value (second derivatives between
  it and other rows stay 0).  With half-precision inputs on an accelerator,
  the ``hidden`` part of a forward-mode tangent multiplies ``∂ℓ/∂z`` rounded to
  the weight's dtype (the bfloat16 matrix units); the CPU keeps it in float32.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from softmax_jax import cross_entropy_with_integer_labels, linear_cross_entropy
    >>> h = jax.random.normal(jax.random.key(0), (6, 4))
    >>> w = jax.random.normal(jax.random.key(1), (4, 10))
    >>> t = jnp.array([1, 2, 3, 4, 5, 6])
    >>> bool(jnp.allclose(linear_cross_entropy(h, w, t, chunk_size=4),
    ...                   cross_entropy_with_integer_labels(h @ w, t), rtol=1e-6))
    True
  """
  fn = "linear_cross_entropy"
  h = _arguments.float_array(hidden, "hidden", fn)
  w = _arguments.float_array(weight, "weight", fn)
  if w.ndim != 2 or h.ndim < 1 or h.shape[-1] != w.shape[0]:
    raise ValueError(f"{fn}: weight has shape {w.shape} but hidden has shape {h.shape}; "
                     f"weight must be [{h.shape[-1] if h.ndim else '?'}, classes]")
  lead = h.shape[:-1]
  labels, ignore = _checked_labels(labels, ignore_index, lead, f"hidden of shape {h.shape}",
                                   fn)
  h = h.reshape(-1, h.shape[-1])
  b = None
  if bias is not None:
    b = _arguments.float_array(bias, "bias", fn)
    if b.shape != (w.shape[1],):
      raise ValueError(f"{fn}: bias has shape {b.shape}, expected ({w.shape[1]},)")
  eps = _arguments.label_smoothing(label_smoothing, fn)
  reduction = _arguments.reduction(reduction, fn)
  lam = _arguments.z_loss(z_loss, fn)
  cap = _arguments.logit_softcap(logit_softcap, fn)
  v = _arguments.classes(w.shape[1], "weight", fn)
  if chunk_size is None:  # about _DEFAULT_CHUNK_BYTES of float32 logits, a multiple of 128
    chunk_size = max(128, _DEFAULT_CHUNK_BYTES // (4 * max(h.shape[0], 1)) // 128 * 128)
  chunk = min(_arguments.positive_int(chunk_size, "chunk_size", fn), v)
  code = nm.canonical_labels(labels.reshape(-1), v, ignore)
  out, lse = _reduced_linear_xent(h, w, b, code, Config(chunk, eps, lam, cap, bool(return_lse)),
                                  reduction)
  if reduction == "none":
    out = out.reshape(lead)
  return (out, lse.reshape(lead)) if return_lse else out


@functools.partial(jax.jit, static_argnums=(4, 5))
def _reduced_linear_xent(h, w, b, code, cfg: Config, reduction: str):
  """The loss and its reduction as one program, so that an eager call compiles its chunk
  loops once per shape instead of tracing them anew every call (inside ``jit`` it inlines)."""
  loss, lse, counted = linear_xent(h, w, b, code, cfg)
  return nm.reduce(loss, counted, reduction), lse
