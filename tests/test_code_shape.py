"""The shape of `shared/` and `local/`: no import cycles, short modules and functions.
Read from the source with `ast`.

Imports count wherever they are (module level or inside a function: a function-level import
only postpones a cycle); imports under `if TYPE_CHECKING:` do not, as they never run.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("shared", "local")
LONGEST_MODULE = 500  # lines
LONGEST = 60  # lines, def to last line; longer needs a `# long: <why>` comment
LONG_MARK = "# long:"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package: str = "shared") -> dict[str, Path]:
    return {module_name(p): p for p in sorted((ROOT / package).rglob("*.py"))}


def _type_checking_only(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for child in ast.iter_child_nodes(node):
        if _type_checking_only(child):
            assert isinstance(child, ast.If)
            for other in child.orelse:  # the `else:` of TYPE_CHECKING does run
                yield from _import_nodes(ast.Module(body=[other], type_ignores=[]))
            continue
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        yield from _import_nodes(child)


def imports_of(name: str, source: str, known: Mapping[str, object], package: bool) -> set[str]:
    """The known modules `name` imports, and the packages their import runs first."""
    found: set[str] = set()
    for node in _import_nodes(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:  # relative: from the package holding this module
            here = name.split(".") if package else name.split(".")[:-1]
            here = here[: len(here) - (node.level - 1)]
            base = ".".join([*here, base] if base else here)
        for alias in node.names:  # `from shared.storage import clients` imports a module
            full = f"{base}.{alias.name}"
            found.add(full if full in known else base)
    with_parents = {".".join(m.split(".")[:i]) for m in found for i in range(1, m.count(".") + 2)}
    return {m for m in with_parents if m in known and m != name}


def import_graph(package: str = "shared") -> dict[str, set[str]]:
    known = modules(package)
    return {
        name: imports_of(name, path.read_text(), known, path.name == "__init__.py")
        for name, path in known.items()
    }


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Each import cycle, as a path that ends where it starts (depth-first search)."""
    found: list[list[str]] = []
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            found.append([*path[path.index(module) :], module])
            return
        if module in done:
            return
        for imported in sorted(graph.get(module, ())):
            visit(imported, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    return found


def long_modules(paths: Mapping[str, Path], longest: int = LONGEST_MODULE) -> list[str]:
    return [name for name, path in paths.items() if len(path.read_text().splitlines()) > longest]


def long_functions(source: str, longest: int = LONGEST) -> list[tuple[str, int]]:
    """Functions longer than `longest` lines without a `# long:` reason on the def line or
    the line just above it (above its decorators, if any)."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        length = (node.end_lineno or node.lineno) - node.lineno + 1
        first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        reason = lines[max(first - 2, 0) : node.lineno]
        if length > longest and not any(LONG_MARK in line for line in reason):
            found.append((node.name, length))
    return found


# ----------------------------------------------------------- the rules, on shared/ and local/


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle(package: str) -> None:
    graph = import_graph(package)
    assert len(graph) > 5 and any(graph.values())  # it did look
    assert cycles(graph) == []


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_is_long(package: str) -> None:
    found = set(long_modules(modules(package)))
    assert found == set()


def test_no_function_in_shared_is_long_without_a_reason() -> None:
    found = {
        f"{path.relative_to(ROOT)}:{name} ({length} lines)"
        for path in modules().values()
        for name, length in long_functions(path.read_text())
    }
    assert found == set()


def test_the_dispatcher_imports_without_the_wiring() -> None:
    code = (
        "import sys, shared.dispatch.dispatcher; "
        "assert 'shared.services' not in sys.modules, 'the dispatcher pulled in the wiring'"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# ------------------------------------------------------- the checks themselves can fail


def test_the_walk_finds_cycles_through_function_level_imports_only() -> None:
    known = dict.fromkeys(["p", "p.a", "p.b", "p.c"])
    a = """
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from p.c import C
        def f():
            from p import b
    """
    b = "from .a import x\n"
    c = "import p.a\n"
    graph = {
        "p": set(),
        "p.a": imports_of("p.a", textwrap.dedent(a), known, package=False),
        "p.b": imports_of("p.b", b, known, package=False),
        "p.c": imports_of("p.c", c, known, package=False),
    }
    assert graph == {"p": set(), "p.a": {"p", "p.b"}, "p.b": {"p", "p.a"}, "p.c": {"p", "p.a"}}
    assert cycles(graph) == [["p.a", "p.b", "p.a"]]


def test_a_long_module_is_found(tmp_path: Path) -> None:
    short, long_ = tmp_path / "short.py", tmp_path / "long.py"
    short.write_text("x = 1\n" * 3)
    long_.write_text("x = 1\n" * 4)
    assert long_modules({"short": short, "long": long_}, longest=3) == ["long"]


def test_a_long_function_needs_a_reason() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(4))
    short, long_ = f"def short():\n{body}\n", f"def long_():\n{body}\n{body}\n"
    assert long_functions(short + long_, longest=5) == [("long_", 9)]
    reasoned = f"# long: one table, read top to bottom\n@decorated\n{long_}"
    assert long_functions(reasoned, longest=5) == []


# The HTTP layer's own parts (routing, OpenAPI, rate limits) may reach lower; route modules
# (those with a Blueprint) parse, call a service, shape the answer: no storage, no dispatch.
BELOW_THE_SERVICES = ("shared.storage", "shared.dispatch")


def reaches_below_the_services(graph: Mapping[str, set[str]]) -> dict[str, set[str]]:
    routes = [n for n, p in modules().items() if "Blueprint()" in p.read_text()]
    return {
        name: below
        for name in routes
        if name.startswith("shared.api.")
        and (below := {m for m in graph[name] if m.startswith(BELOW_THE_SERVICES)})
    }


def test_http_route_modules_reach_storage_and_dispatch_only_through_services() -> None:
    assert reaches_below_the_services(import_graph()) == {}
