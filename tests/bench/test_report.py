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
              speedup=1.25, correct=True, ref_gbps=65.536, compile_ms=123.4, first_call_ms=130.0)
  return bench.Result(**{**base, **fields})


ROWS = [_row(), _row(impl="jax.nn.softmax", speedup=None, median_ms=0.625),
        _row(op="log_softmax", correct=False),
        _row(op="xent_int_fwd", median_ms=NAN, p25_ms=NAN, p75_ms=NAN, gbps=None,
             fraction_of_copy=None, temp_bytes=None, speedup=None, correct=False,
             compile_ms=None, first_call_ms=None, note=bench.FAILED + "NotImplementedError: a | b")]


def test_markdown_has_a_line_per_row_with_its_status():
  text = bench.markdown(ROWS, 7.5)
  lines = text.splitlines()
  assert lines[0].startswith("Device: cpu (cpu). Elementwise-copy bandwidth of a 256 MiB array")
  assert lines[0].endswith("each row's `of copy` is over its own `ref GB/s`): 7.5 GB/s.")
  head, body = lines[2], [x for x in lines if x.startswith("| ") and "---" not in x][1:]
  assert "| compile ms | GB/s | ref GB/s | of copy | of matmul |" in head
  assert len(body) == len(ROWS)
  assert body[0] == ("| softmax | softmax_jax | 64x32 | float32 | 0.500 | 0.400–0.600 | 123 | "
                     "32.8 | 65.5 | 0.50 | - | 2.0 MB | 1.25 | yes |")
  assert body[2].endswith("| WRONG |")
  # a failed row: no figures of its own (its case's roofline was measured), and its note
  # cannot break the table
  assert body[3] == ("| xent_int_fwd | softmax_jax | 64x32 | float32 | - | -–- | - | - | 65.5 | "
                     "- | - | - | - | failed: NotImplementedError: a / b |")
  assert "not measured" in bench.markdown(ROWS, None)


def test_text_table_aligns_every_column():
  lines = bench.text_table(ROWS).splitlines()
  assert lines[0].split() == list(bench.COLUMNS)
  assert len({len(x) for x in lines}) == 1
  assert lines[1].split()[-1] == "yes" and lines[3].split()[-1] == "WRONG"
  assert lines[4].endswith("failed: NotImplementedError: a / b")
  assert lines[1].split()[bench.COLUMNS.index("compile_ms")] == "123"
  short = bench.text_table(ROWS, columns=bench.SWEEP_COLUMNS).splitlines()
  assert short[0].split() == list(bench.SWEEP_COLUMNS) and len(short) == len(ROWS) + 1


def test_rows_written_before_the_roofline_and_compile_fields_still_load():
  old = {k: v for k, v in dataclasses.asdict(ROWS[0]).items()
         if k not in ("ref_gbps", "gflops", "ref_gflops", "fraction_of_matmul", "compile_ms",
                      "first_call_ms")}
  row = bench.Result(**old)
  assert row.ref_gbps is None and row.compile_ms is None and row.fraction_of_copy == 0.5
  text = bench.markdown([row], 7.5)
  assert "| - | 32.8 | - | 0.50 | - |" in text
  assert "256 MiB array in this run (`of copy` is over it): 7.5 GB/s." in text


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
