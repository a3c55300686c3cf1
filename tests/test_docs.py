"""README.md and docs/ are the product's own documentation: they point at nothing outside the
repository, which someone who clones it could not read."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# [text](target): the target of a Markdown link, without its #anchor.
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("page", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_mention_nothing_outside_the_repository(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert "../shared" not in text
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        resolved = (page.parent / target).resolve()
        assert resolved.is_relative_to(ROOT), f"{page.name} links outside the repository: {target}"
        assert resolved.exists(), f"{page.name} links to a missing file: {target}"


def test_the_reference_lists_every_route_of_the_api() -> None:
    """A new route cannot be forgotten in docs/API.md's table."""
    import function_app  # noqa: F401  # registers the routes
    from shared.api import openapi

    reference = (ROOT / "docs" / "API.md").read_text(encoding="utf-8")
    for path, operations in openapi.document()["paths"].items():
        for method in operations:
            assert f"`{method.upper()} {path}`" in reference, f"{method.upper()} {path}"


def test_the_readme_stays_short() -> None:
    """A newcomer reads it in five minutes (issue 24): design choices go to docs/DESIGN.md."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines < 200, f"README.md has {lines} lines: move detail to docs/"


def test_capacity_says_what_bench_scale_counts() -> None:
    """docs/CAPACITY.md's operations per delivery are bench_scale's counts (issue 25): a
    change to what a path reads or writes fails here until the page says so. Small figures
    (300 connections): the paths in the table do not depend on how many there are."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "bench.bench_scale", "--connections", "300"]
    command += ["--deliveries", "20", "--records", "200"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    row = r"^  ({})\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)  "
    page = (ROOT / "docs" / "CAPACITY.md").read_text(encoding="utf-8")
    paths = ("first attempt", "failed attempt", "retry", "claim check", "health heartbeat")
    for path in paths:
        counted = re.search(row.format(path), done.stdout, re.MULTILINE)
        assert counted, f"bench_scale printed no {path!r} row"
        documented = re.search(rf"^\| {path} \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|", page, re.M)
        assert documented, f"docs/CAPACITY.md has no {path!r} row"
        assert documented.groups() == counted.groups()[1:], path
