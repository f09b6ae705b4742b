"""Trace-time argument checks shared by the public functions.

Every check runs in Python before anything is traced, so a bad argument fails
with a message naming it instead of producing a wrong number.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

REDUCTIONS = ("mean", "sum", "none")
_HALF = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def float_array(x, name: str, fn: str) -> jax.Array:
  """Returns ``x`` as a JAX array, raising ``TypeError`` unless it is real floating."""
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(
        f"{fn}: {name} must be a floating-point array, got dtype {x.dtype}. "
        f"Cast it first, e.g. {name}.astype(jnp.float32)."
    )
  return x


def compute_dtype(dtype) -> jnp.dtype:
  """The dtype the arithmetic is done in: float32 for half types, else ``dtype``."""
  dtype = jnp.dtype(dtype)
  return jnp.dtype(jnp.float32) if dtype in _HALF else dtype


def axes(axis, ndim: int, fn: str, *, allow_tuple: bool = True) -> tuple[int, ...]:
  """Normalises ``axis`` (an int, or a tuple of ints) to sorted non-negative ints."""
  if ndim == 0:
    raise ValueError(f"{fn}: x must have at least one dimension (the class axis), got a scalar.")
  if isinstance(axis, Sequence) and not isinstance(axis, str):
    if not allow_tuple:
      raise TypeError(f"{fn}: axis must be a single int, got {axis!r}.")
    items = tuple(axis)
  else:
    items = (axis,)
  out = []
  for a in items:
    if not isinstance(a, numbers.Integral) or isinstance(a, bool):
      raise TypeError(f"{fn}: axis must be an int, got {a!r}.")
    if not -ndim <= a < ndim:
      raise ValueError(f"{fn}: axis={a} is out of range for an input with {ndim} dimensions.")
    out.append(int(a) % ndim)
  if len(set(out)) != len(out) or not out:
    raise ValueError(f"{fn}: axis={axis!r} repeats an axis or is empty.")
  return tuple(sorted(out))


def where_mask(where, shape: tuple[int, ...], fn: str, name: str = "x") -> jax.Array | None:
  """Checks a ``where`` mask and broadcasts it to ``shape`` (``None`` stays ``None``)."""
  if where is None:
    return None
  where = jnp.asarray(where)
  if where.dtype != jnp.bool_:
    raise TypeError(f"{fn}: where must be a boolean array, got dtype {where.dtype}.")
  try:
    ok = np.broadcast_shapes(where.shape, shape) == tuple(shape)
  except ValueError:
    ok = False
  if not ok:
    raise ValueError(
        f"{fn}: where has shape {where.shape} but {name} has shape {tuple(shape)}; "
        f"where must have the shape of {name} or broadcast to it."
    )
  return jnp.broadcast_to(where, shape)


def temperature(value, fn: str):
  """Checks a temperature when its value is known at trace time; returns it unchanged."""
  try:
    concrete = np.asarray(value, dtype=np.float64)
  except (TypeError, jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
    return value  # a traced temperature (learned, say) cannot be checked here
  if concrete.shape != ():
    raise ValueError(f"{fn}: temperature must be a scalar, got shape {concrete.shape}.")
  if not (np.isfinite(concrete) and concrete > 0):
    raise ValueError(f"{fn}: temperature must be a finite number > 0, got {float(concrete)!r}.")
  return value


def label_smoothing(value, fn: str) -> float:
  """Checks that ``label_smoothing`` is a static number in [0, 1]."""
  try:
    value = float(value)
  except (TypeError, jax.errors.ConcretizationTypeError) as err:
    raise TypeError(f"{fn}: label_smoothing must be a Python number, got {value!r}.") from err
  if not 0.0 <= value <= 1.0:
    raise ValueError(f"{fn}: label_smoothing must lie in [0, 1], got {value!r}.")
  return value


def reduction(value, fn: str) -> str:
  if value not in REDUCTIONS:
    raise ValueError(f"{fn}: reduction must be one of {REDUCTIONS}, got {value!r}.")
  return value


def integer_labels(labels, shape: tuple[int, ...], of: str, fn: str) -> jax.Array:
  """``labels`` as an integer array of ``shape`` (``of`` names what fixes the shape)."""
  labels = jnp.asarray(labels)
  if labels.shape != shape or not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f"{fn}: labels must be integers of shape {shape} for {of}, "
                     f"got {labels.dtype} {labels.shape}")
  return labels


def _real_number(value) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def z_loss(value, fn: str) -> float:
  """A finite number ``>= 0`` (PaLM's ``λ_z``)."""
  if not _real_number(value) or not (np.isfinite(value) and value >= 0):
    raise ValueError(f"{fn}: z_loss must be a finite number >= 0, got {value!r}")
  return float(value)


def logit_softcap(value, fn: str) -> float | None:
  """``None`` or a finite number ``> 0``."""
  if value is None:
    return None
  if not _real_number(value) or not (np.isfinite(value) and value > 0):
    raise ValueError(f"{fn}: logit_softcap must be a finite number > 0 or None, got {value!r}")
  return float(value)


def positive_int(value, name: str, fn: str) -> int:
  """A Python or NumPy integer ``>= 1`` (not a bool)."""
  if not isinstance(value, numbers.Integral) or isinstance(value, bool | np.bool_) or value < 1:
    raise ValueError(f"{fn}: {name} must be a positive integer, got {value!r}")
  return int(value)


def ignore_index_type(value, fn: str):
  """Raises ``TypeError`` unless ``value`` is ``None`` or an integer (not a bool)."""
  if value is not None and (not isinstance(value, numbers.Integral)
                            or isinstance(value, bool | np.bool_)):
    raise TypeError(f"{fn}: ignore_index must be an int or None, got {value!r}")
  return value


def ignore_index(value, label_dtype, fn: str) -> int | None:
  """``None`` or an integer that labels of ``label_dtype`` can hold.

  A value the dtype cannot hold (``-100`` with uint8 labels, ``2**40`` with
  int32) could only be matched after wrapping, so it is refused."""
  if ignore_index_type(value, fn) is None:
    return None
  value = int(value)
  info = np.iinfo(np.dtype(label_dtype))
  if not info.min <= value <= info.max:
    raise ValueError(f"{fn}: ignore_index={value} cannot occur in labels of dtype "
                     f"{np.dtype(label_dtype).name} (range [{info.min}, {info.max}]); "
                     "pick a value in that range or use a wider label dtype")
  return value


def integer_dtype(labels: jax.Array, fn: str) -> jax.Array:
  """Raises ``TypeError`` unless ``labels`` has an integer (not bool) dtype."""
  if not jnp.issubdtype(labels.dtype, jnp.integer) or labels.dtype == jnp.bool_:
    raise TypeError(f"{fn}: labels must be an integer array of class indices, got dtype "
                    f"{labels.dtype}; for probability targets use cross_entropy.")
  return labels


def classes(num: int, name: str, fn: str) -> int:
  """At least one class along the class axis."""
  if num < 1:
    raise ValueError(f"{fn}: {name} has no classes (size 0 along the class axis); "
                     "a softmax needs at least one class")
  return num


def same_shape(a: jax.Array, a_name: str, b: jax.Array, b_name: str, fn: str) -> None:
  if a.shape != b.shape:
    raise ValueError(
        f"{fn}: {a_name} has shape {a.shape} but {b_name} has shape {b.shape}; "
        "they must have the same shape."
    )


def error_line(err: BaseException, limit: int) -> str:
  """``"Type: first line of the message"`` (the message cut at ``limit`` characters), for
  reports that record a failure and go on."""
  lines = str(err).strip().splitlines() or [""]
  return f"{type(err).__name__}: {lines[0][:limit]}"


def mesh(mesh, axes: dict, fn: str) -> None:
  """``mesh`` is a ``Mesh`` with automatic axes that has every named axis in ``axes``."""
  if not isinstance(mesh, jax.sharding.Mesh):
    raise TypeError(f"{fn}: mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
  for name, value in axes.items():
    if value is not None and value not in mesh.shape:
      raise ValueError(f"{fn}: {name}={value!r} is not an axis of the mesh "
                       f"{dict(mesh.shape)}")
  if jax.sharding.AxisType.Explicit in tuple(getattr(mesh, "axis_types", ())):
    raise ValueError(f"{fn}: the mesh has Explicit axes {mesh.axis_types}; use automatic "
                     "axes: jax.make_mesh(shape, names, axis_types=(jax.sharding.AxisType.Auto,)"
                     " * len(names)) or jax.sharding.Mesh(devices, names)")
