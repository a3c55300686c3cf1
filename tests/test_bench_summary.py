"""The benchmark summary table is rendered from a saved results file (no timings asserted)."""

import json
from pathlib import Path

from bench.common import Result
from bench.summary import DOC, END, START, rewrite, save


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


def test_the_real_page_has_one_summary_table_between_markers(tmp_path: Path) -> None:
    """`python -m bench --summary` rewrites docs/BENCHMARKS.md, and only its table."""
    text = DOC.read_text()
    assert text.count(START) == 1 and text.count(END) == 1 and text.index(START) < text.index(END)
    results = tmp_path / "last-run.json"
    save(results, "python -m bench --quick", "nproc 2", [Result("purge", "best", 1.0, "records/s")])
    copy = tmp_path / "BENCHMARKS.md"
    copy.write_text(text)
    rewrite(copy, json.loads(results.read_text()))
    head, tail = text.split(START)[0], text.split(END)[1]
    assert copy.read_text().startswith(head) and copy.read_text().endswith(tail)
    assert "| purge | best | " in copy.read_text()
