"""Cold start: `import function_app` in a fresh interpreter, against a hello-world app.

    python -m bench.bench_coldstart [--quick] [--runs N] [--top N]

Each run is a new `python -c` (the same interpreter as this one) that times its own
`import function_app` with `time.perf_counter`; the process's whole life (interpreter start
included) is timed too. The baseline is a hello-world function app (one `@app.route`
returning "hello") written to a temporary folder and imported the same way, runs of the two
interleaved. Bytecode caches are warm (one untimed run each first), as they are in a
deployed package. Then `python -X importtime` lists the modules that cost most, by
cumulative time. Target: at most 1.5x the hello-world app.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, Result, arguments, machine, report

HELLO_APP = '''"""A hello-world function app: the cold-start baseline."""

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="hello")
def hello(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("hello")
'''
PROBE = (
    "import time; started = time.perf_counter(); import function_app; "
    "print(time.perf_counter() - started)"
)


def import_once(folder: Path) -> tuple[float, float]:
    """(seconds the import took, seconds the whole process took)."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=folder, capture_output=True, text=True, check=True
    )
    return float(done.stdout.strip()), time.perf_counter() - started


def import_times(folder: Path) -> list[tuple[int, int, str]]:
    """`-X importtime` of function_app: (self us, cumulative us, module) per module."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import function_app"],
        cwd=folder, capture_output=True, text=True, check=True,
    )  # fmt: skip
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        own, cumulative, name = line.removeprefix("import time:").split("|")
        rows.append((int(own), int(cumulative), name.rstrip()))
    return rows


def top_modules(rows: list[tuple[int, int, str]], n: int) -> list[str]:
    """The `n` costliest modules by cumulative time, with their depth in the import tree
    (0: imported by function_app itself)."""
    ordered = sorted(rows, key=lambda row: row[1], reverse=True)[:n]
    lines = []
    for own, cumulative, name in ordered:
        depth = (len(name) - len(name.lstrip()) - 1) // 2
        lines.append(f"    {cumulative / 1000:7.1f} ms cumulative {own / 1000:6.1f} ms self  "
                     f"depth {depth}  {name.strip()}")  # fmt: skip
    return lines


def measure(runs: int, top: int) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="hello-app-") as folder:
        hello = Path(folder)
        (hello / "function_app.py").write_text(HELLO_APP)
        timings: dict[str, list[tuple[float, float]]] = {"ours": [], "hello": []}
        for where in (ROOT, hello):  # warm the bytecode caches
            import_once(where)
        for _ in range(runs):
            timings["ours"].append(import_once(ROOT))
            timings["hello"].append(import_once(hello))
    ours_import = [t[0] * 1000 for t in timings["ours"]]
    hello_import = [t[0] * 1000 for t in timings["hello"]]
    ours_process = [t[1] * 1000 for t in timings["ours"]]
    hello_process = [t[1] * 1000 for t in timings["hello"]]
    extra = statistics.median(ours_import) - statistics.median(hello_import)
    rows = import_times(ROOT)
    total = max(cum for _, cum, name in rows if name.strip() == "function_app")
    print(f"  -X importtime of function_app ({total / 1000:.0f} ms in that run), "
          f"top {top} by cumulative time:")  # fmt: skip
    print("\n".join(top_modules(rows, top)))
    return [
        Result("coldstart", f"import function_app, best of {runs}", min(ours_import), "ms",
               raw=min(hello_import), target="<= 1.5x hello world", higher_is_better=False),
        Result("coldstart", f"import function_app, median of {runs}",
               statistics.median(ours_import), "ms", raw=statistics.median(hello_import),
               target="<= 1.5x hello world", higher_is_better=False,
               note=f"ours - hello: {extra:.0f} ms of our own imports (the hello app is "
                    "mostly azure.functions, which the Functions worker has loaded already)"),
        Result("coldstart", f"whole process (python -c), median of {runs}",
               statistics.median(ours_process), "ms", raw=statistics.median(hello_process),
               higher_is_better=False),
    ]  # fmt: skip


def main() -> None:
    args = arguments(
        __doc__,
        runs=(int, "runs of each (default 5 quick, 15 full)"),
        top=(int, "modules to list (default 15)"),
    )
    print(f"coldstart: {machine()}", flush=True)
    report(measure(args.runs or (5 if args.quick else 15), args.top or 15))


if __name__ == "__main__":
    main()
