"""Benchmark harness: this package's functions beside jax.nn and optax, with roofline figures.

Each case compiles and warms up both implementations, checks that they agree
(a fast wrong answer is a failure, not a result), then times them
alternately with ``block_until_ready``.  Inputs rotate among several buffers
when they would fit in a cache.  The device's own elementwise-copy bandwidth
is measured in the same run, and every memory-bound case reports its
achieved GB/s (each input read once, each output written once) as a fraction
of it.  Temporary memory comes from the compiled executable's
``memory_analysis()``.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from softmax_jax import _arguments, _jacobian, _softmax, losses

CACHE_BYTES = 64 << 20  # inputs smaller than this rotate among several buffers


FAILED = "failed: "  # the start of the note of an implementation that did not compile or run


def is_failure(note: str) -> bool:
  return note.startswith(FAILED)


@dataclasses.dataclass
class Result:
  op: str
  impl: str
  baseline: str
  shape: str
  dtype: str
  backend: str
  device: str
  median_ms: float
  p25_ms: float
  p75_ms: float
  bytes: int | None
  gbps: float | None
  fraction_of_copy: float | None
  temp_bytes: int | None
  speedup: float | None  # baseline time / this time (our rows only)
  correct: bool
  note: str = ""

  @property
  def failed(self) -> bool:
    """Whether the implementation did not compile or run (``note`` says why)."""
    return is_failure(self.note)


@dataclasses.dataclass(frozen=True)
class Case:
  """One operation at one shape: our function, its baseline(s), inputs and byte count."""

  op: str
  shape: tuple[int, ...]
  dtype: str
  ours: Callable
  baselines: dict[str, Callable]
  make_inputs: Callable[[jax.Array], tuple]
  bytes: int | None
  rtol: float


def _timed(fn, arg_sets, reps):
  times = []
  for i in range(reps):
    args = arg_sets[i % len(arg_sets)]
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return times


def _temp_bytes(compiled) -> int | None:
  try:
    return int(compiled.memory_analysis().temp_size_in_bytes)
  except Exception:  # noqa: BLE001 - not every backend reports it
    return None


def _agree(a, b, rtol) -> bool:
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  if len(la) != len(lb):
    return False
  for x, y in zip(la, lb, strict=True):
    x = np.asarray(jnp.asarray(x, jnp.float32))
    y = np.asarray(jnp.asarray(y, jnp.float32))
    atol = rtol * max(1.0, float(np.abs(y).max()))
    if x.shape != y.shape or not np.allclose(x, y, rtol=rtol, atol=atol):
      return False
  return True


def copy_bandwidth(reps: int = 10, nbytes: int = 256 << 20) -> float:
  """GB/s of ``a * 1.0001`` on a float32 array of ``nbytes`` (read once, written once)."""
  n = nbytes // 4
  a = jnp.arange(n, dtype=jnp.float32)
  f = jax.jit(lambda a: a * 1.0001)
  jax.block_until_ready(f(a))
  t = statistics.median(_timed(f, [(a,)], reps))
  return 2 * 4 * n / t / 1e9


def run_case(case: Case, *, reps: int, key, copy_gbps: float | None) -> list[Result]:
  """Times ``case.ours`` and every baseline; returns our row first."""
  base_args = case.make_inputs(key)
  in_bytes = sum(int(a.size) * a.dtype.itemsize for a in jax.tree_util.tree_leaves(base_args))
  copies = int(min(8, max(1, CACHE_BYTES // max(in_bytes, 1)))) if in_bytes < CACHE_BYTES else 1
  arg_sets = [base_args] + [case.make_inputs(jax.random.fold_in(key, i)) for i in range(1, copies)]
  every = {"softmax_jax": case.ours, **case.baselines}
  compiled, temps, outs, failed = {}, {}, {}, {}
  for name, fn in every.items():
    # A function that does not compile or run here (a kernel the backend refuses, say)
    # becomes a failed row; the other implementations are still measured.
    try:
      compiled[name] = jax.jit(fn).lower(*base_args).compile()
      temps[name] = _temp_bytes(compiled[name])
      outs[name] = jax.block_until_ready(compiled[name](*base_args))
    except Exception as err:  # noqa: BLE001
      failed[name] = FAILED + _arguments.error_line(err, 200)
  impls = {name: fn for name, fn in every.items() if name not in failed}
  first_baseline = next(iter(case.baselines), None)
  correct = {name: True for name in impls}
  if (first_baseline is not None and np.isfinite(case.rtol)  # inf: a floor, not the same answer
      and not {"softmax_jax", first_baseline} & failed.keys()):
    ok = _agree(outs["softmax_jax"], outs[first_baseline], case.rtol)
    correct = {name: ok for name in impls}
  times = {name: [] for name in impls}
  for _ in range(2):  # warm-up
    for name in impls:
      _timed(compiled[name], arg_sets, 1)
  # Blocks of repetitions, alternating between implementations: each block
  # runs with its own data in cache, and a burst of load on a shared machine
  # falls on every implementation alike.
  blocks = 5
  for _ in range(blocks):
    for name in impls:
      times[name] += _timed(compiled[name], arg_sets, max(1, reps // blocks))
  common = dict(op=case.op, baseline=first_baseline or "",
                shape="x".join(map(str, case.shape)), dtype=case.dtype,
                backend=jax.default_backend(), device=jax.devices()[0].device_kind,
                bytes=case.bytes)
  results = []
  nan = float("nan")
  for name in every:
    if name in failed:
      results.append(Result(
          **common, impl=name, median_ms=nan, p25_ms=nan, p75_ms=nan, gbps=None,
          fraction_of_copy=None, temp_bytes=None, speedup=None, correct=False,
          note=failed[name]))
      continue
    ts = sorted(t * 1e3 for t in times[name])
    med = statistics.median(ts)
    gbps = case.bytes / (med / 1e3) / 1e9 if case.bytes else None
    frac = gbps / copy_gbps if gbps is not None and copy_gbps else None
    speedup = None
    if name == "softmax_jax" and first_baseline is not None and first_baseline in impls:
      speedup = statistics.median(times[first_baseline]) * 1e3 / med
    results.append(Result(
        **common, impl=name, median_ms=med, p25_ms=float(np.percentile(ts, 25)),
        p75_ms=float(np.percentile(ts, 75)), gbps=gbps, fraction_of_copy=frac,
        temp_bytes=temps[name], speedup=speedup, correct=correct[name]))
  return results


# ---------------------------------------------------------------------------
# The operations
# ---------------------------------------------------------------------------


def _normal(key, shape, dtype, scale=4.0):
  return (jax.random.normal(key, shape, jnp.float32) * scale).astype(dtype)


def _labels(key, n, c):
  return jax.random.randint(jax.random.fold_in(key, 7), (n,), 0, c)


def _targets(key, shape, dtype):
  return jax.nn.softmax(jax.random.normal(jax.random.fold_in(key, 3), shape)).astype(dtype)


def row_cases(n: int, c: int, dtype: str) -> list[Case]:
  """softmax, log_softmax and the cross-entropies at one [N, C] shape."""
  dt = jnp.dtype(dtype)
  isz = dt.itemsize
  tol = 4 * float(jnp.finfo(dt).eps) if dt.itemsize < 4 else 1e-4
  nc = n * c
  logits = lambda k: (_normal(k, (n, c), dt),)  # noqa: E731
  with_labels = lambda k: (_normal(k, (n, c), dt), _labels(k, n, c))  # noqa: E731
  with_targets = lambda k: (_normal(k, (n, c), dt), _targets(k, (n, c), dt))  # noqa: E731

  def sj_int(z, y):
    return losses.cross_entropy_with_integer_labels(z, y)

  def ox_int(z, y):
    return optax.softmax_cross_entropy_with_integer_labels(z, y).mean()

  def sj_soft(z, t):
    return losses.cross_entropy(z, t)

  def ox_soft(z, t):
    return optax.softmax_cross_entropy(z, t).mean()

  s = (n, c)
  # On GPU our functions run the fused Pallas kernels ("auto"); our XLA path is then
  # timed beside them as a second baseline.
  gpu = jax.default_backend() == "gpu"

  def xla(name, fn):
    return {f"softmax_jax {name} (xla)": fn} if gpu else {}

  return [
      Case("softmax", s, dtype, lambda z: _softmax.softmax(z),
           {"jax.nn.softmax": lambda z: jax.nn.softmax(z),
            **xla("softmax", lambda z: _softmax.softmax(z, impl="xla"))},
           logits, 2 * isz * nc, tol),
      Case("log_softmax", s, dtype, lambda z: _softmax.log_softmax(z),
           {"jax.nn.log_softmax": lambda z: jax.nn.log_softmax(z),
            **xla("log_softmax", lambda z: _softmax.log_softmax(z, impl="xla"))},
           logits, 2 * isz * nc, max(tol, 1e-3)),
      Case("xent_int_fwd", s, dtype, sj_int, {"optax": ox_int}, with_labels, isz * nc + 4 * n,
           max(tol, 1e-4)),
      Case("xent_int_fwd_bwd", s, dtype, jax.value_and_grad(sj_int),
           {"optax": jax.value_and_grad(ox_int),
            **xla("xent", jax.value_and_grad(
                lambda z, y: losses.cross_entropy_with_integer_labels(z, y, impl="xla")))},
           with_labels, 2 * isz * nc + 4 * n, max(tol, 1e-4)),
      Case("xent_prob_fwd", s, dtype, sj_soft, {"optax": ox_soft}, with_targets, 2 * isz * nc,
           max(tol, 1e-4)),
      Case("xent_prob_fwd_bwd", s, dtype, jax.value_and_grad(sj_soft),
           {"optax": jax.value_and_grad(ox_soft)}, with_targets, 3 * isz * nc, max(tol, 1e-4)),
  ]


def jacobian_cases(n: int, c: int) -> list[Case]:
  """Dense Jacobian against autodiff and against the memory floor of writing it."""
  logits = lambda k: (_normal(k, (n, c), jnp.float32, 2.0),)  # noqa: E731
  out_bytes = 4 * n * c * c + 4 * n * c

  def floor(z):  # the cost of merely writing [N, C, C] from [N, C]: one outer product
    return z[:, :, None] * z[:, None, :]

  def closed_form(z):  # the plain formula y_i (δ_ij − y_j) on jax.nn.softmax
    y = jax.nn.softmax(z)
    return y[..., :, None] * (jnp.eye(c, dtype=y.dtype) - y[..., None, :])

  cases = [
      Case("softmax_jacobian", (n, c), "float32", _jacobian.softmax_jacobian,
           {"vmap(jacfwd)": jax.vmap(jax.jacfwd(jax.nn.softmax))}, logits, out_bytes, 1e-5),
      Case("softmax_jacobian", (n, c), "float32", _jacobian.softmax_jacobian,
           {"vmap(jacrev)": jax.vmap(jax.jacrev(jax.nn.softmax))}, logits, out_bytes, 1e-5),
      Case("softmax_jacobian", (n, c), "float32", _jacobian.softmax_jacobian,
           {"closed form y(I − y)": closed_form}, logits, out_bytes, 1e-5),
      Case("softmax_jacobian", (n, c), "float32", _jacobian.softmax_jacobian,
           {"outer-product write": floor}, logits, out_bytes, float("inf")),
  ]
  return cases


def product_cases(n: int, c: int) -> list[Case]:
  """Matrix-free products against forming J and multiplying."""
  inputs = lambda k: (_normal(k, (n, c), jnp.float32, 2.0),  # noqa: E731
                      jax.random.normal(jax.random.fold_in(k, 5), (n, c)))

  def dense(z, v):
    return jnp.einsum("nij,nj->ni", _jacobian.softmax_jacobian(z), v)

  return [
      Case("softmax_vjp", (n, c), "float32", _jacobian.softmax_vjp, {"dense J @ v": dense},
           inputs, 3 * 4 * n * c, 1e-4),
      Case("softmax_jvp", (n, c), "float32", _jacobian.softmax_jvp, {"dense J @ v": dense},
           inputs, 3 * 4 * n * c, 1e-4),
  ]


def train_step_cases(n: int, d: int, c: int) -> list[Case]:
  """One gradient-descent step of softmax regression (W: [D, C], b: [C])."""

  def make(k):
    x = jax.random.normal(k, (n, d))
    y = _labels(k, n, c)
    params = (jnp.zeros((d, c)), jnp.zeros((c,)))
    return params, x, y

  def step(loss):
    def run(params, x, y):
      grads = jax.grad(lambda p: loss(x @ p[0] + p[1], y))(params)
      return jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, params, grads)
    return run

  ours = step(lambda z, y: losses.cross_entropy_with_integer_labels(z, y))
  base = step(lambda z, y: optax.softmax_cross_entropy_with_integer_labels(z, y).mean())
  return [Case("train_step", (n, d, c), "float32", ours, {"optax": base}, make, None, 1e-4)]


def linear_cases(n: int, h: int, v: int, dtype: str = "float32") -> list[Case]:
  """Chunked ``linear_cross_entropy`` value+grad against materialising ``h @ W``."""
  from softmax_jax.losses._linear import linear_cross_entropy

  dt = jnp.dtype(dtype)

  def make(k):
    k1, k2 = jax.random.split(k)
    return (jax.random.normal(k1, (n, h), dt), (jax.random.normal(k2, (h, v)) / h**0.5).astype(dt),
            _labels(k, n, v))

  ours = jax.value_and_grad(lambda x, w, t: linear_cross_entropy(x, w, t), (0, 1))
  base = jax.value_and_grad(
      lambda x, w, t: optax.softmax_cross_entropy_with_integer_labels(
          (x @ w).astype(jnp.float32), t).mean(), (0, 1))
  tol = 2e-2 if dt.itemsize < 4 else 1e-4
  return [Case("linear_xent_fwd_bwd", (n, h, v), dtype, ours, {"materialised (optax)": base},
               make, None, tol)]


OPS = ("softmax", "log_softmax", "xent_int_fwd", "xent_int_fwd_bwd", "xent_prob_fwd",
       "xent_prob_fwd_bwd", "softmax_jacobian", "softmax_vjp", "softmax_jvp", "train_step",
       "linear_xent_fwd_bwd")


def default_cases(shapes: Sequence[tuple[int, int]], dtypes: Sequence[str],
                  ops: Sequence[str] = OPS, *, jacobian_shape=(256, 128), product_shape=(8, 4096),
                  train_shape=(4096, 64, 10), linear_shape=(1024, 128, 16384)) -> list[Case]:
  cases: list[Case] = []
  for dtype in dtypes:
    for n, c in shapes:
      cases += [k for k in row_cases(n, c, dtype) if k.op in ops]
  if "softmax_jacobian" in ops:
    cases += jacobian_cases(*jacobian_shape)
  cases += [k for k in product_cases(*product_shape) if k.op in ops]
  if "train_step" in ops:
    cases += train_step_cases(*train_shape)
  if "linear_xent_fwd_bwd" in ops:
    for dtype in dtypes:
      cases += linear_cases(*linear_shape, dtype)
  return cases


def run(cases: Sequence[Case], *, reps: int = 15, seed: int = 0, measure_copy: bool = True,
        progress=None) -> tuple[list[Result], float | None]:
  """Runs every case; returns the rows and the copy bandwidth (GB/s) measured first."""
  copy_gbps = copy_bandwidth() if measure_copy else None
  key = jax.random.key(seed)
  rows: list[Result] = []
  for i, case in enumerate(cases):
    if progress is not None:
      progress(i, len(cases), case)
    rows += run_case(case, reps=reps, key=jax.random.fold_in(key, i), copy_gbps=copy_gbps)
  return rows, copy_gbps


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------

COLUMNS = ("op", "impl", "shape", "dtype", "median_ms", "p25_ms", "p75_ms", "gbps",
           "fraction_of_copy", "temp_bytes", "speedup", "correct")


def _cell(value, key):
  if value is None or value != value:  # None or NaN (a row that failed)
    return "-"
  if key in ("median_ms", "p25_ms", "p75_ms"):
    return f"{value:.3f}"
  if key == "gbps":
    return f"{value:.1f}"
  if key in ("fraction_of_copy", "speedup"):
    return f"{value:.2f}"
  if key == "temp_bytes":
    return f"{value / 1e6:.1f} MB"
  if key == "correct":
    return "yes" if value else "WRONG"
  return str(value)


def status(r: Result) -> str:
  """``yes``, ``WRONG`` (disagrees with its baseline) or the failure (did not compile or run)."""
  if r.failed:
    return r.note.replace("|", "/")
  return _cell(r.correct, "correct")


def markdown(rows: Sequence[Result], copy_gbps: float | None) -> str:
  head = ["| op | impl | shape | dtype | median ms | spread (p25–p75) ms | GB/s | "
          "of copy | temp | speedup vs baseline | agrees |", "|" + "---|" * 11]
  body = [f"| {r.op} | {r.impl} | {r.shape} | {r.dtype} | {_cell(r.median_ms, 'median_ms')} | "
          f"{_cell(r.p25_ms, 'p25_ms')}–{_cell(r.p75_ms, 'p75_ms')} | {_cell(r.gbps, 'gbps')} | "
          f"{_cell(r.fraction_of_copy, 'fraction_of_copy')} | {_cell(r.temp_bytes, 'temp_bytes')}"
          f" | {_cell(r.speedup, 'speedup')} | {status(r)} |" for r in rows]
  dev = f"{rows[0].backend} ({rows[0].device})" if rows else "?"
  copy = f"{copy_gbps:.1f} GB/s" if copy_gbps else "not measured"
  return "\n".join([f"Device: {dev}. Elementwise-copy bandwidth in this run: {copy}.", "",
                    *head, *body])


def text_table(rows: Sequence[Result]) -> str:
  cells = [[status(r)[:40] if k == "correct" else _cell(getattr(r, k), k) for k in COLUMNS]
           for r in rows]
  widths = [max(len(k), *(len(c[i]) for c in cells)) if cells else len(k)
            for i, k in enumerate(COLUMNS)]
  fmt = lambda cs: "  ".join(c.rjust(w) for c, w in zip(cs, widths, strict=True))  # noqa: E731
  return "\n".join([fmt(COLUMNS), *map(fmt, cells)])


def write_csv(rows: Sequence[Result], path) -> None:
  import csv

  with open(path, "w", newline="") as fh:
    writer = csv.DictWriter(fh, fieldnames=[f.name for f in dataclasses.fields(Result)])
    writer.writeheader()
    for r in rows:
      writer.writerow(dataclasses.asdict(r))


def plot(rows: Sequence[Result], path) -> None:
  """Bar chart of the fraction of copy bandwidth per op, one bar group per backend."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  mem = [r for r in rows if r.fraction_of_copy is not None]
  labels = sorted({f"{r.op}\n{r.shape} {r.dtype}" for r in mem})
  series = sorted({(r.backend, r.impl) for r in mem})
  fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(labels)), 4))
  width = 0.8 / max(1, len(series))
  for s, (backend, impl) in enumerate(series):
    vals = []
    for label in labels:
      hits = [r.fraction_of_copy for r in mem if (r.backend, r.impl) == (backend, impl)
              and f"{r.op}\n{r.shape} {r.dtype}" == label]
      vals.append(max(hits) if hits else 0.0)
    ax.bar(np.arange(len(labels)) + s * width, vals, width, label=f"{impl} ({backend})")
  ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, labels, fontsize=6, rotation=60,
                ha="right")
  ax.set_ylabel("fraction of copy bandwidth")
  ax.axhline(1.0, color="k", lw=0.5)
  ax.legend(fontsize=6)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
