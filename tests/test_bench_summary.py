"""The benchmark summary table is rendered from a saved results file (no timings asserted)."""

import json
from pathlib import Path

from bench.common import Result
from bench.summary import END, START, rewrite, save


def test_the_summary_table_is_rewritten_between_its_markers(tmp_path: Path) -> None:
    results = tmp_path / "last-run.json"
    figure = Result("dispatch", "1 connection", 1161.0, "deliveries/s", raw=663.0, target="x")
    save(results, "python -m bench --quick", "nproc 2, load 3.1", [figure])
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text(f"# Benchmarks\n{START}\nold table\n{END}\nafter\n")
    rewrite(doc, json.loads(results.read_text()))
    text = doc.read_text()
    assert "old table" not in text and text.endswith(f"{END}\nafter\n")
    assert "`python -m bench --quick` on nproc 2, load 3.1" in text
    assert "| dispatch | 1 connection | 1,161 deliveries/s | 663 deliveries/s | 175% | x |" in text
