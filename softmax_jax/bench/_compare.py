"""Lining up benchmark runs (backends, machines, commits) case by case.

Each run is the JSON that ``softmax-jax bench --json`` or a sweep writes: a ``rows`` list of
:class:`~softmax_jax.bench._timing.Result` dicts, with the run's ``context`` (or the older
``machine`` line).  Rows are keyed by ``(op, impl, shape, dtype, baseline)`` and every run
is set against the first one, the baseline: ``ratio = median_B / median_A``.

**The spread rule.**  A run's interval for a case is its ``[p25, p75]``, widened where
needed to at least ``± noise × median`` (``noise`` 5 % by default: a quartile range a few
microseconds wide would make every re-run "different").  Repeats of a run (several JSON
files of the same configuration) count as one run whose median is the median of their
medians and whose interval covers all of theirs, so that what varies between processes,
which no single run's quartiles see, is inside the spread.  B is *slower* than A when B's
interval lies wholly above A's, *faster* when wholly below, and *within spread* when they
overlap.  A case *regresses* when it is gated, slower, and its ratio exceeds
``threshold``; a gated case timed in the baseline that failed in a later run regresses too.

With ``relative``, every time is first divided by the time of its case's baseline
implementation (``jax.nn``, optax, ...) in the same run: a change of the machine's speed
between runs (the load of a shared machine) cancels, and only this package's rows remain.

Only the standard library is used: comparing needs no JAX.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import math
import pathlib
import statistics
from collections.abc import Sequence

KEY = ("op", "impl", "shape", "dtype")
DEFAULT_GATE = ("*/softmax_jax",)  # our rows, every op
# Context entries that differ between any two runs and are not worth a line.
UNCOMPARED = ("argv", "cpu.load_average")


class CompareError(ValueError):
  """A run that cannot be compared (an unreadable or invalid file, no common case...)."""


def load(path) -> dict:
  """The run in the JSON file ``path``; a :class:`CompareError` naming the file and the cause
  (with the line and column of a JSON syntax error) if it cannot be read or is no run."""
  try:
    text = pathlib.Path(path).read_text()
  except FileNotFoundError:
    raise CompareError(f"{path}: no such file") from None
  except IsADirectoryError:
    raise CompareError(f"{path}: is a directory, not a JSON file") from None
  except UnicodeDecodeError:
    raise CompareError(f"{path}: not a text file") from None
  except OSError as e:
    raise CompareError(f"{path}: {e.strerror or e}") from None
  try:
    data = json.loads(text)
  except json.JSONDecodeError as e:
    raise CompareError(f"{path}: not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}"
                       ) from None
  check(data, str(path))
  return data


def check(data, where: str = "run") -> None:
  """Raises :class:`CompareError` unless ``data`` is a bench or sweep run."""
  if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
    raise CompareError(f"{where}: no 'rows' list: not the JSON of softmax-jax bench or a sweep")
  for i, row in enumerate(data["rows"]):
    if not isinstance(row, dict):
      raise CompareError(f"{where}: row {i} is not an object")
    missing = [k for k in (*KEY, "median_ms") if k not in row]
    if missing:
      raise CompareError(f"{where}: row {i} has no {', '.join(missing)}")
    value = row["median_ms"]
    if value is not None and not isinstance(value, int | float):
      raise CompareError(f"{where}: row {i} has median_ms {value!r}, not a number")


def context(data: dict) -> dict[str, str]:
  """The run's context flattened to ``{"key.sub": "value"}`` (from ``context``, else from the
  ``machine`` line and the rows' backend and device)."""
  ctx = data.get("context")
  if not isinstance(ctx, dict):
    rows = data.get("rows") or [{}]
    ctx = {"machine": data.get("machine"), "backend": rows[0].get("backend"),
           "device": rows[0].get("device")}
  flat: dict[str, str] = {}

  def walk(prefix, value):
    if isinstance(value, dict):
      for k, v in value.items():
        walk(f"{prefix}.{k}" if prefix else str(k), v)
    elif value is not None:
      flat[prefix] = " ".join(map(str, value)) if isinstance(value, list) else str(value)

  walk("", ctx)
  return flat


@dataclasses.dataclass
class Entry:
  """One case in one run (or in repeats of one run): its median time and the interval the
  spread rule uses."""

  median_ms: float
  low: float
  high: float
  repeats: int = 1

  @classmethod
  def of_row(cls, median: float, p25: float, p75: float, noise: float) -> Entry:
    """A row's entry: ``[p25, p75]`` widened to at least ``± noise × median`` (the median
    alone where the row has no quartiles)."""
    p25, p75 = (median if math.isnan(q) else q for q in (p25, p75))
    return cls(median, min(p25, median * (1 - noise)), max(p75, median * (1 + noise)))

  @property
  def failed(self) -> bool:
    return not (self.median_ms > 0)  # NaN (did not compile or run) or no time

  def scaled(self, factor: float) -> Entry:
    return Entry(self.median_ms * factor, self.low * factor, self.high * factor, self.repeats)


def merge(entries: Sequence[Entry]) -> Entry:
  """Repeats of one case: the median of their medians, and the interval covering all of
  theirs (what varies between processes is then inside the spread)."""
  timed = [e for e in entries if not e.failed]
  if not timed:
    return entries[0]
  return Entry(statistics.median(e.median_ms for e in timed), min(e.low for e in timed),
               max(e.high for e in timed), len(entries))


def _number(value) -> float:
  return float(value) if isinstance(value, int | float) else math.nan


@dataclasses.dataclass
class Line:
  """One case across the runs: ``entries[k]`` is ``None`` where run ``k`` lacks it."""

  op: str
  impl: str
  shape: str
  dtype: str
  baseline: str
  label: str  # the impl, with its baseline where the impl alone is ambiguous
  gated: bool
  entries: list[Entry | None]
  ratios: list[float | None]  # median_k / median_0; None for the baseline and missing runs
  # "" (the baseline itself), "within spread", "faster", "slower", "REGRESSED", "missing",
  # "failed", "baseline failed"
  verdicts: list[str]

  @property
  def regressed(self) -> bool:
    return "REGRESSED" in self.verdicts


@dataclasses.dataclass
class Comparison:
  """Every case of the baseline run set against the later runs."""

  names: list[str]
  contexts: list[dict[str, str]]
  lines: list[Line]
  threshold: float
  gate: tuple[str, ...]
  noise: float
  not_in_baseline: int  # cases of later runs that the baseline lacks (left out)
  relative: bool = False  # times over the case's baseline implementation in the same run

  @property
  def differences(self) -> list[tuple[str, list[str]]]:
    """The context entries that differ between runs, with each run's value."""
    keys = list(dict.fromkeys(k for c in self.contexts for k in c))
    vals = [(k, [c.get(k, "-") for c in self.contexts]) for k in keys]
    return [(k, v) for k, v in vals if len(set(v)) > 1 and k not in UNCOMPARED]

  @property
  def baseline_drift(self) -> dict[str, float]:
    """For each later run, the median ratio of the rows whose impl is the case's baseline
    (code this package does not change: how much the machine's speed moved)."""
    out = {}
    for k, name in enumerate(self.names[1:], start=1):
      ratios = [ln.ratios[k] for ln in self.lines if ln.impl == ln.baseline and ln.ratios[k]]
      if ratios:
        out[name] = statistics.median(ratios)
    return out

  @property
  def regressions(self) -> list[tuple[Line, str, float | None]]:
    """``(line, run name, ratio)`` of every regressed case."""
    return [(ln, self.names[k], ln.ratios[k]) for ln in self.lines
            for k, v in enumerate(ln.verdicts) if v == "REGRESSED"]

  def as_dict(self) -> dict:
    return {"names": self.names, "contexts": self.contexts, "threshold": self.threshold,
            "gate": list(self.gate), "noise": self.noise, "relative": self.relative,
            "differences": dict(self.differences), "not_in_baseline": self.not_in_baseline,
            "lines": [_finite(dataclasses.asdict(ln)) for ln in self.lines],
            "regressions": [{"op": ln.op, "impl": ln.impl, "shape": ln.shape,
                             "dtype": ln.dtype, "baseline": ln.baseline, "run": name,
                             "ratio": ratio} for ln, name, ratio in self.regressions]}

  def text(self) -> str:
    """The comparison as an aligned plain-text table (``*``: a gated case)."""
    from softmax_jax.bench._compare_report import text

    return text(self)

  def markdown(self) -> str:
    """The comparison as Markdown: the header as a list, then the table."""
    from softmax_jax.bench._compare_report import markdown

    return markdown(self)

  def plot(self, path) -> None:
    """Each case's ratio to the baseline on a log scale, one marker per later run."""
    from softmax_jax.bench._compare_report import plot

    plot(self, path)


def _finite(value):
  """``value`` with every NaN replaced by ``None`` (strict JSON has no NaN)."""
  if isinstance(value, dict):
    return {k: _finite(v) for k, v in value.items()}
  if isinstance(value, list):
    return [_finite(v) for v in value]
  return None if isinstance(value, float) and math.isnan(value) else value



def _gate_patterns(gate) -> tuple[str, ...]:
  patterns = tuple(DEFAULT_GATE if gate is None else ([gate] if isinstance(gate, str) else gate))
  return tuple(p if "/" in p else f"{p}/softmax_jax" for p in patterns)


def _gated(op: str, impl: str, patterns: Sequence[str]) -> bool:
  for p in patterns:
    op_pattern, _, impl_pattern = p.partition("/")
    if fnmatch.fnmatchcase(op, op_pattern) and fnmatch.fnmatchcase(impl, impl_pattern):
      return True
  return False


def _verdict(a: Entry | None, b: Entry | None, gated: bool, threshold: float
             ) -> tuple[float | None, str]:
  if b is None:
    return None, "missing"
  if a is None or a.failed:
    return None, "failed" if b.failed else "baseline failed"
  if b.failed:
    return None, "REGRESSED" if gated else "failed"
  ratio = b.median_ms / a.median_ms
  if b.low > a.high:
    return ratio, "REGRESSED" if gated and ratio > threshold else "slower"
  if b.high < a.low:
    return ratio, "faster"
  return ratio, "within spread"


def _entries(run: dict, noise: float, relative: bool) -> dict[tuple, Entry]:
  """The run's cases by key; with ``relative``, each time over the time of the case's
  baseline implementation in the same run (the baselines' own rows left out, and the rows
  whose baseline failed)."""
  rows: dict[tuple, Entry] = {}
  for r in run["rows"]:
    key = (*(str(r[k]) for k in KEY), str(r.get("baseline", "")))
    rows.setdefault(key, Entry.of_row(_number(r["median_ms"]), _number(r.get("p25_ms")),
                                      _number(r.get("p75_ms")), noise))
  if not relative:
    return rows
  out = {}
  for (op, impl, shape, dtype, baseline), e in rows.items():
    yardstick = rows.get((op, baseline, shape, dtype, baseline))
    if impl == baseline or yardstick is None or yardstick.failed:  # no yardstick: missing
      continue
    out[op, impl, shape, dtype, baseline] = e.scaled(1 / yardstick.median_ms)
  return out


def _grouped(run: dict | Sequence[dict], noise: float, relative: bool) -> dict[tuple, Entry]:
  """The cases of one run, or of repeats of one run (a list of runs) merged case by case."""
  if isinstance(run, dict):
    return _entries(run, noise, relative)
  each = [_entries(r, noise, relative) for r in run]
  keys = dict.fromkeys(k for e in each for k in e)
  return {k: merge([e[k] for e in each if k in e]) for k in keys}


def compare(runs: Sequence[dict | Sequence[dict]], *, names: Sequence[str] | None = None,
            threshold: float = 1.25, gate: str | Sequence[str] | None = None,
            noise: float = 0.05, relative: bool = False) -> Comparison:
  """Sets every run after the first against the first (the baseline), case by case.

  Args:
    runs: two or more runs (dicts as :func:`load` returns, or as ``softmax-jax bench``
      writes them); a list of runs in place of one is repeats of that run, merged case by
      case by :func:`merge`.
    names: one name per run (default ``run 1``, ``run 2``...).
    threshold: the ratio above which a slower gated case regresses.
    gate: ``fnmatch`` patterns ``OP`` or ``OP/IMPL`` choosing the gated cases; ``OP`` alone
      means this package's rows of ``OP``.  Default: this package's rows of every op.
    noise: the least half-width of a run's interval, as a fraction of its median.
    relative: compare each time divided by the time of its case's baseline implementation
      (``jax.nn``, optax...) in the same run, which cancels a change of the machine's
      speed between runs (load on a shared machine) but also a change of backend; the
      baselines' own rows are left out.

  Returns:
    A :class:`Comparison`; its ``regressions`` are the gated cases that regressed.

  Raises:
    CompareError: fewer than two runs, names that do not match the runs, a run that is not
      a bench run, no case common to the baseline and a later run, or a gate pattern
      matching no case.
  """
  if len(runs) < 2:
    raise CompareError(f"need at least 2 runs to compare, got {len(runs)}")
  names = [f"run {k + 1}" for k in range(len(runs))] if names is None else list(names)
  if len(names) != len(runs):
    raise CompareError(f"{len(names)} names for {len(runs)} runs")
  if not (threshold >= 1 and math.isfinite(threshold)):
    raise CompareError(f"threshold must be a finite ratio >= 1, got {threshold}")
  if not 0 <= noise < 1:
    raise CompareError(f"noise must be a fraction in [0, 1), got {noise}")
  for name, run in zip(names, runs, strict=True):
    for r in [run] if isinstance(run, dict) else run:
      check(r, name)
  patterns = _gate_patterns(gate)
  keyed = [_grouped(run, noise, relative) for run in runs]
  base = keyed[0]
  for name, rows in zip(names[1:], keyed[1:], strict=True):
    if not base.keys() & rows.keys():
      raise CompareError(f"{name} has no case in common with {names[0]} "
                         "(cases are matched by op, impl, shape, dtype and baseline)")
  for p in patterns:
    if not any(_gated(op, impl, [p]) for op, impl, *_ in base):
      raise CompareError(f"gate {p!r} matches no case of {names[0]}")
  ambiguous = {k[:4] for k in base if sum(j[:4] == k[:4] for j in base) > 1}
  lines = []
  for key, first in base.items():
    op, impl, shape, dtype, baseline = key
    gated = _gated(op, impl, patterns)
    label = f"{impl} (vs {baseline})" if key[:4] in ambiguous and impl != baseline else impl
    entries = [first] + [rows.get(key) for rows in keyed[1:]]
    ratios, verdicts = [None], [""]
    for entry in entries[1:]:
      ratio, verdict = _verdict(first, entry, gated, threshold)
      ratios.append(ratio)
      verdicts.append(verdict)
    lines.append(Line(op, impl, shape, dtype, baseline, label, gated, entries, ratios,
                      verdicts))
  extra = len({k for rows in keyed[1:] for k in rows} - base.keys())
  firsts = [r if isinstance(r, dict) else r[0] for r in runs]
  return Comparison(names, [context(r) for r in firsts], lines, threshold, patterns, noise, extra,
                    relative)
