"""Checks of the Bicep in infra/ that run without Azure: every file parses, checkov passes.

    python infra/check.py            # parse every .bicep file, then run checkov
    python infra/check.py --doctor   # also run azure-functions-doctor on the repository

checkov and azure-functions-doctor live in their own virtual environment, `.venv-checkov`,
made on demand from requirements-infra.txt: checkov pins its own pycep-parser and many
other packages that need not agree with the app's. tests/test_infra.py uses the same
functions.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import venv
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycep import BicepParser

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
TOOLS_VENV = ROOT / ".venv-checkov"
TOOLS_REQUIREMENTS = ROOT / "requirements-infra.txt"
INSTALL_TIMEOUT_S = 900
RUN_TIMEOUT_S = 300

# How checkov reads a suppression in a Bicep file: a comment inside the resource body.
SKIP_COMMENT = re.compile(r"//\s*checkov:skip=([A-Z0-9_]+)(?::\s*(.*))?")


class ToolsUnavailable(RuntimeError):
    """The side venv with checkov could not be made (no package index, no venv module)."""


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


def parse(path: Path) -> dict[str, Any]:
    """The pycep-parser tree of one Bicep file; raises on a syntax error."""
    return dict(BicepParser().parse(text=path.read_text()))


@contextlib.contextmanager
def _install_lock() -> Iterator[None]:
    TOOLS_VENV.mkdir(exist_ok=True)
    with (TOOLS_VENV / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def tools_bin(name: str) -> Path:
    return TOOLS_VENV / "bin" / name


def ensure_tools(log: bool = True) -> float:
    """Make .venv-checkov when missing or when requirements-infra.txt changed.

    Returns the seconds spent installing (0 when it was already there).
    """
    wanted = hashlib.sha256(TOOLS_REQUIREMENTS.read_bytes()).hexdigest()
    stamp = TOOLS_VENV / ".installed"
    with _install_lock():
        if stamp.exists() and stamp.read_text() == wanted and tools_bin("checkov").exists():
            return 0.0
        started = time.monotonic()
        if log:
            print(f"installing {TOOLS_REQUIREMENTS.name} into {TOOLS_VENV.name} ...", flush=True)
        try:
            if not (TOOLS_VENV / "bin" / "python").exists():
                venv.EnvBuilder(with_pip=True).create(TOOLS_VENV)
            subprocess.run(
                [
                    str(tools_bin("python")),
                    *("-m", "pip", "install", "--quiet", "--disable-pip-version-check"),
                    *("-r", str(TOOLS_REQUIREMENTS)),
                ],
                check=True,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT_S,
            )
        except subprocess.CalledProcessError as e:
            output = f"{e.stdout or ''}{e.stderr or ''}"[-3000:]
            raise ToolsUnavailable(f"{' '.join(map(str, e.cmd))} failed:\n{output}") from e
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ToolsUnavailable(f"could not make {TOOLS_VENV}: {e}") from e
        stamp.write_text(wanted)
        elapsed = time.monotonic() - started
        if log:
            print(f"installed in {elapsed:.0f} s", flush=True)
        return elapsed


def _tool_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    # No calls home: no update check, no policy or guideline download.
    env.update(CKV_SKIP_PACKAGE_UPDATE_CHECK="true", BC_SKIP_MAPPING="TRUE", LOG_LEVEL="WARNING")
    return env


@dataclass
class CheckovReport:
    summary: dict[str, Any]
    failed: list[dict[str, Any]] = field(default_factory=list, repr=False)
    skipped: list[dict[str, Any]] = field(default_factory=list, repr=False)
    parsing_errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def describe(self, results: list[dict[str, Any]]) -> str:
        return "\n".join(
            f"  {r['check_id']} {r['resource']} ({r['file_path']}): {r['check_name']}"
            for r in results
        )


def run_checkov(directory: Path = INFRA) -> CheckovReport:
    """`checkov --framework bicep --skip-download -d infra`, its JSON report read back."""
    started = time.monotonic()
    proc = subprocess.run(
        [
            str(tools_bin("checkov")),
            *("--framework", "bicep", "--skip-download", "-d", str(directory)),
            *("--output", "json"),
        ],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=ROOT,
        env=_tool_env(),
    )
    seconds = time.monotonic() - started
    if proc.returncode not in (0, 1):  # 1: some check failed; anything else: checkov broke
        raise RuntimeError(f"checkov exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    data = json.loads(proc.stdout)
    reports = data if isinstance(data, list) else [data]
    bicep = next((r for r in reports if r.get("check_type") == "bicep"), None)
    if bicep is None:  # checkov prints a bare summary when it found nothing to scan
        raise RuntimeError(f"checkov scanned no Bicep file in {directory}:\n{proc.stdout[:2000]}")
    results = bicep["results"]
    return CheckovReport(
        summary=bicep["summary"],
        failed=results["failed_checks"],
        skipped=results["skipped_checks"],
        parsing_errors=list(results.get("parsing_errors", [])),
        seconds=seconds,
    )


def skip_comments() -> dict[str, list[tuple[Path, str]]]:
    """Every `// checkov:skip=ID: reason` in infra/: check id -> [(file, reason)]."""
    found: dict[str, list[tuple[Path, str]]] = {}
    for path in bicep_files():
        for line in path.read_text().splitlines():
            match = SKIP_COMMENT.search(line)
            if match:
                found.setdefault(match.group(1), []).append((path, (match.group(2) or "").strip()))
    return found


def run_doctor(root: Path = ROOT) -> tuple[int, str]:
    """azure-functions-doctor on the repository, for the Flex Consumption target."""
    proc = subprocess.run(
        [
            str(tools_bin("azure-functions-doctor")),
            *("doctor", "--path", str(root), "--hosting-plan", "flex-consumption"),
        ],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env={**_tool_env(), "COLUMNS": "160", "NO_COLOR": "1"},
    )
    return proc.returncode, proc.stdout + proc.stderr


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--doctor", action="store_true", help="also run azure-functions-doctor")
    options = args.parse_args(argv)

    failures = 0
    for path in bicep_files():
        try:
            parse(path)
            print(f"parsed  {path.relative_to(ROOT)}")
        except Exception as e:  # pycep raises lark errors of several kinds
            failures += 1
            print(f"INVALID {path.relative_to(ROOT)}: {e}")

    try:
        ensure_tools()
    except ToolsUnavailable as e:
        print(f"checkov could not be installed, so it did NOT run:\n{e}", file=sys.stderr)
        return 2
    report = run_checkov()
    print(f"checkov: {report.summary} in {report.seconds:.1f} s")
    if report.failed:
        print("failed:\n" + report.describe(report.failed))
    if report.parsing_errors:
        print("checkov could not parse:\n  " + "\n  ".join(report.parsing_errors))
    failures += len(report.failed) + len(report.parsing_errors)

    if options.doctor:
        code, output = run_doctor()
        print(output)
        failures += code != 0
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
