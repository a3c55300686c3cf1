"""The summary table of docs/BENCHMARKS.md, rendered from the last run's saved results.

`python -m bench` saves its results (with command and machine) to `LAST_RUN`;
`python -m bench --summary` rewrites the table between the markers, so it cannot go stale.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.common import ROOT, Result, _number

LAST_RUN = ROOT / "bench" / "last-run.json"
DOC = ROOT / "docs" / "BENCHMARKS.md"
START, END = "<!-- bench-summary:start -->", "<!-- bench-summary:end -->"


def save(path: Path, command: str, machine: str, results: list[Result]) -> None:
    data = {"command": command, "machine": machine, "results": [asdict(r) for r in results]}
    path.write_text(json.dumps(data, indent=1) + "\n")


def render(data: dict[str, Any]) -> str:
    lines = [
        f"`{data['command']}` on {data['machine']}",
        "",
        "| benchmark | figure | ours | raw | ratio | target |",
        "|---|---|---:|---:|---:|---|",
    ]
    for fields in data["results"]:
        r = Result(**fields)
        raw = "-" if r.raw is None else f"{_number(r.raw)} {r.unit}"
        ours = f"{_number(r.ours)} {r.unit}"
        lines.append(
            f"| {r.benchmark} | {r.name} | {ours} | {raw} | {r.ratio_text()} | {r.target} |"
        )
    return "\n".join(lines)


def rewrite(doc: Path, data: dict[str, Any]) -> None:
    text = doc.read_text()
    head, _, rest = text.partition(START)
    _, found, tail = rest.partition(END)
    if not found:
        raise SystemExit(f"{doc}: no {START} ... {END} markers")
    doc.write_text(f"{head}{START}\n{render(data)}\n{END}{tail}")
