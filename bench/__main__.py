"""Every benchmark, one after another, then a summary of each figure against its baseline.

    python -m bench [--quick | --smoke] [--only NAME,...]   (`make bench` runs --quick)

`--smoke` runs each with tiny numbers: its own checks hold, its figures mean nothing
(tests/test_benchmarks.py runs it in `make test`, so a benchmark cannot break unseen).

Each benchmark runs as `python -m bench.bench_<name>` in a process of its own (so one's
memory, threads and event loop never touch the next), starting and stopping what it needs.
Its output is shown as it comes; its figures are collected for the summary. A benchmark that
fails or overruns its time is reported and the others still run; the exit status is then 1.
Figures never fail the run: targets are shown beside them, to be read, not enforced.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from bench import summary
from bench.common import RESULTS_VARIABLE, ROOT, Result, header, machine

# name -> module; the order they run in (quick ones first).
BENCHMARKS = {
    "coldstart": "bench.bench_coldstart",
    "dispatch": "bench.bench_dispatch",
    "memory": "bench.bench_memory",
    "e2e": "bench.bench_e2e",
    "api": "bench.bench_api",
    "logwrite": "bench.bench_logwrite",
    "portal": "bench.bench_portal",
    "isolation": "bench.bench_isolation",
    "replay": "bench.bench_replay",
    "publish": "bench.bench_publish",
    "faults": "bench.bench_faults",
    "scale": "bench.bench_scale",
    # Written by someone else: run when present (see `purge_results`).
    "purge": "bench.bench_purge",
}
TIMEOUT_SECONDS = {"smoke": 180, "quick": 240, "full": 1800}
# Each benchmark's tiny run (with --quick); None: it has a smoke test of its own.
SMOKE: dict[str, list[str] | None] = {
    "coldstart": ["--runs", "1", "--top", "3"],
    "dispatch": ["--connections", "1,3", "--events", "20"],
    "memory": ["--connections", "3", "--events", "5"],
    "e2e": ["--events", "20"],
    "api": ["--records", "5000", "--requests", "16"],  # page 50 of 100 each
    "logwrite": ["--records", "100", "--rounds", "2"],
    "portal": ["--records", "100", "--runs", "1"],
    "isolation": ["--events", "10"],
    "replay": ["--records", "100"],
    "publish": ["--events", "50"],
    "faults": None,  # tests/test_fault_run.py
    "scale": ["--connections", "300", "--deliveries", "20", "--records", "300"],
    "purge": ["--records", "200", "--partitions", "2", "--rounds", "2"],
}


def available(name: str) -> bool:
    return (ROOT / Path(*BENCHMARKS[name].split("."))).with_suffix(".py").exists()


def run_one(name: str, mode: str, results_file: Path) -> tuple[bool, str, float]:
    """Run one benchmark ("smoke", "quick" or "full"), echoing its output; (succeeded, output,
    seconds)."""
    extra = {"smoke": ["--quick", *(SMOKE.get(name) or [])], "quick": ["--quick"], "full": []}
    command = [sys.executable, "-m", BENCHMARKS[name], *extra[mode]]
    env = {**os.environ, RESULTS_VARIABLE: str(results_file), "PYTHONUNBUFFERED": "1"}
    timeout = TIMEOUT_SECONDS[mode]
    started = time.monotonic()
    output: list[str] = []
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    assert process.stdout is not None
    timer_fired = False

    def overrun(*_: object) -> None:
        nonlocal timer_fired
        timer_fired = True
        process.send_signal(signal.SIGINT)  # its `finally` blocks stop what it started

    signal.signal(signal.SIGALRM, overrun)
    signal.alarm(timeout)
    try:
        for line in process.stdout:
            print(line, end="", flush=True)
            output.append(line)
        try:
            process.wait(30 if timer_fired else None)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # its own session: it and its children
            process.wait()
    finally:
        signal.alarm(0)
    if timer_fired:
        print(f"!! {name}: stopped after {timeout} s", flush=True)
    return process.returncode == 0 and not timer_fired, "".join(output), time.monotonic() - started


def purge_results(output: str) -> list[Result]:
    """bench_purge prints its figures rather than handing them over: read its `best:` line
    (the best round of each), else the median of its `round N:` lines, and its CPU line."""
    figures = r"raw\s+([\d.]+) records/s.*?purge\s+([\d.]+) records/s"
    best = re.search(r"^best: " + figures, output, re.MULTILINE)
    rounds = re.findall(r"^round \d+: " + figures, output, re.MULTILINE)
    if best:
        raw, ours, how = float(best[1]), float(best[2]), f"best of {len(rounds) or 1} round(s)"
    elif rounds:
        raw = statistics.median(float(r) for r, _ in rounds)
        ours = statistics.median(float(p) for _, p in rounds)
        how = f"median of {len(rounds)} round(s)"
    else:
        return []
    cpu = re.search(r"^CPU per 1,000 records.*$", output, re.MULTILINE)
    return [Result("purge", f"purge, {how}", ours, "records/s", raw=raw,
                   target=">= 80% of raw", note=cpu[0] if cpu else "")]  # fmt: skip


def load_results(path: Path) -> list[Result]:
    results = []
    for line in path.read_text().splitlines() if path.exists() else []:
        data = json.loads(line)
        data.pop("ratio", None)
        results.append(Result(**data))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--quick", action="store_true", help="every benchmark's quick mode")
    modes.add_argument("--smoke", action="store_true", help="tiny numbers: checks, no figures")
    parser.add_argument("--only", help=f"comma-separated, of: {', '.join(BENCHMARKS)}")
    parser.add_argument(
        "--summary",
        action="store_true",
        help="rewrite docs/BENCHMARKS.md's table from the last run",
    )
    args = parser.parse_args()
    if args.summary:
        if not summary.LAST_RUN.exists():
            parser.error(f"no {summary.LAST_RUN.name}: run `make bench` first, it saves one")
        summary.rewrite(summary.DOC, json.loads(summary.LAST_RUN.read_text()))
        return 0
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    print(f"bench ({mode}): {machine()}", flush=True)

    started = time.monotonic()
    outcomes: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="bench-") as folder:
        results_file = Path(folder) / "results.jsonl"
        for name in names:
            if not available(name):
                outcomes[name] = f"skipped: {BENCHMARKS[name]} is not there yet"
                print(f"\n== {name}: {outcomes[name]}", flush=True)
                continue
            print(f"\n== {name}", flush=True)
            ok, output, seconds = run_one(name, mode, results_file)
            outcomes[name] = f"{'ok' if ok else 'FAILED'} in {seconds:.0f} s"
            handed_over = {r.benchmark for r in load_results(results_file)}
            if name == "purge" and "purge" not in handed_over and ok:
                with results_file.open("a") as out:
                    for result in purge_results(output):
                        out.write(json.dumps(asdict(result)) + "\n")
        results = load_results(results_file)
    if mode != "smoke":  # smoke figures mean nothing: never a summary's source
        command = " ".join(["python -m bench", *sys.argv[1:]])
        summary.save(summary.LAST_RUN, command, machine(), results)

    print(f"\n== summary ({mode}, "
          f"{time.monotonic() - started:.0f} s): {machine()}")  # fmt: skip
    print("  ratio: ours/raw, a share for rates, a factor (x) for times and sizes")
    print(header())
    for name in names:
        rows = [r for r in results if r.benchmark == name]
        for result in rows:
            print(result.row())
        if not rows or not outcomes[name].startswith("ok"):
            print(f"  {name}: {outcomes[name]}")
    return 0 if all(not o.startswith("FAILED") for o in outcomes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
