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
