"""softmax_jax.bench._report: the tables, CSV and plot of a run, on hand-made rows."""

import csv
import dataclasses

import pytest

from softmax_jax import bench

NAN = float("nan")


def _row(**fields):
  base = dict(op="softmax", impl="softmax_jax", baseline="jax.nn.softmax", shape="64x32",
              dtype="float32", backend="cpu", device="cpu", median_ms=0.5, p25_ms=0.4,
              p75_ms=0.6, bytes=16384, gbps=32.768, fraction_of_copy=0.5, temp_bytes=2_000_000,
              speedup=1.25, correct=True)
  return bench.Result(**{**base, **fields})


ROWS = [_row(), _row(impl="jax.nn.softmax", speedup=None, median_ms=0.625),
        _row(op="log_softmax", correct=False),
        _row(op="xent_int_fwd", median_ms=NAN, p25_ms=NAN, p75_ms=NAN, gbps=None,
             fraction_of_copy=None, temp_bytes=None, speedup=None, correct=False,
             note=bench.FAILED + "NotImplementedError: a | b")]


def test_markdown_has_a_line_per_row_with_its_status():
  text = bench.markdown(ROWS, 65.5)
  lines = text.splitlines()
  assert lines[0] == "Device: cpu (cpu). Elementwise-copy bandwidth in this run: 65.5 GB/s."
  body = [x for x in lines if x.startswith("| ") and "---" not in x][1:]
  assert len(body) == len(ROWS)
  assert body[0] == ("| softmax | softmax_jax | 64x32 | float32 | 0.500 | 0.400–0.600 | 32.8 | "
                     "0.50 | 2.0 MB | 1.25 | yes |")
  assert body[2].endswith("| WRONG |")
  # a failed row: no figures, and its note cannot break the table
  assert body[3] == ("| xent_int_fwd | softmax_jax | 64x32 | float32 | - | -–- | - | - | - | - | "
                     "failed: NotImplementedError: a / b |")
  assert "not measured" in bench.markdown(ROWS, None)


def test_text_table_aligns_every_column():
  lines = bench.text_table(ROWS).splitlines()
  assert lines[0].split() == list(bench.COLUMNS)
  assert len({len(x) for x in lines}) == 1
  assert lines[1].split()[-1] == "yes" and lines[3].split()[-1] == "WRONG"
  assert lines[4].endswith("failed: NotImplementedError: a / b")


def test_csv_holds_every_field_of_every_row(tmp_path):
  path = tmp_path / "rows.csv"
  bench.write_csv(ROWS, path)
  with open(path) as fh:
    read = list(csv.DictReader(fh))
  assert [r["op"] for r in read] == [r.op for r in ROWS]
  assert list(read[0]) == [f.name for f in dataclasses.fields(bench.Result)]
  assert float(read[0]["median_ms"]) == 0.5 and read[3]["note"].startswith("failed: ")


def test_plot_writes_a_bar_chart_of_the_memory_bound_rows(tmp_path):
  pytest.importorskip("matplotlib")
  path = tmp_path / "p.png"
  bench.plot(ROWS, path)
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
