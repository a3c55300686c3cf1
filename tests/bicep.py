"""Bicep read without a compiler: pycep-parser's tree of a file, evaluated as far as can be
known before deployment.

`Template` follows parameters (their defaults unless given), variables (loops included) and
module outputs far enough to see, for example, that the lifecycle rule deletes message
bodies 15 days after they were written when the deployment keeps messages for 14. Values
only Azure knows (a resource's endpoint, a uniqueString, `environment()`) stay `Unresolved`,
shown as `<what>`.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra import check

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
INTERPOLATION = re.compile(r"\$\{([^}]*)\}")


@dataclass(frozen=True)
class Unresolved:
    """A value known only at deployment time (a resource property, a function result)."""

    text: str

    def __str__(self) -> str:
        return f"<{self.text}>"


@dataclass(frozen=True)
class ResourceRef:
    template: Template
    symbol: str


def body(declaration: dict[str, Any]) -> dict[str, Any]:
    """The object of a resource or module, inside any `if (...)` or `[for ...]` wrapper."""
    config: dict[str, Any] = declaration["config"]
    while "config" in config and ("condition" in config or "loop_type" in config):
        config = config["config"]
    return config


class Template:
    """One Bicep file with parameter values: those given, else the file's defaults."""

    def __init__(self, path: Path, params: dict[str, Any] | None = None) -> None:
        self.path = path
        self.tree = check.parse(path)
        self.given = params or {}
        self._modules: dict[str, Template] = {}
        self._locals: dict[str, Any] = {}  # a loop's item, while its body is evaluated

    def _with_local(self, name: str, value: Any) -> Template:
        inner = copy.copy(self)
        inner._locals = {**self._locals, name: value}
        return inner

    def __repr__(self) -> str:
        return f"Template({self.path.name})"

    def section(self, name: str) -> dict[str, Any]:
        return self.tree.get(name) or {}

    def param(self, name: str) -> Any:
        if name in self.given:
            return self.given[name]
        default = self.section("parameters")[name].get("default")
        return Unresolved(name) if default is None else self.eval(default)

    def lookup(self, name: str) -> Any:
        if name in self._locals:
            return self._locals[name]
        if name in self.section("parameters"):
            return self.param(name)
        if name in self.section("variables"):
            value = self.section("variables")[name]["value"]
            return (
                self._loop(value)
                if isinstance(value, dict) and "loop_type" in value
                else (self.eval(value))
            )
        if name in self.section("modules"):
            return self.module(name)
        if name in self.section("resources"):
            return ResourceRef(self, name)
        raise KeyError(f"{name} is not declared in {self.path.name}")

    def module(self, symbol: str) -> Template:
        if symbol not in self._modules:
            declaration = self.section("modules")[symbol]
            params = {k: self.eval(v) for k, v in body(declaration).get("params", {}).items()}
            path = self.path.parent / declaration["detail"]["path"]
            self._modules[symbol] = Template(path, params)
        return self._modules[symbol]

    def output(self, name: str) -> Any:
        return self.eval(self.section("outputs")[name]["value"])

    def resource(self, symbol: str) -> dict[str, Any]:
        value = self.eval(body(self.section("resources")[symbol]))
        assert isinstance(value, dict)
        return value

    def loop_items(self, symbol: str) -> Any:
        loop = self.section("resources")[symbol]["config"]["loop_type"]["detail"]
        return self.eval(loop["array_name"])

    def _loop(self, expr: dict[str, Any]) -> list[Any]:
        """`[for item in array: body]`, one body per item of a known array."""
        loop = expr["loop_type"]["detail"]
        items = self.eval(loop["array_name"])
        assert isinstance(items, list), f"cannot loop over {items}"
        return [self._with_local(loop["item_name"], item).eval(expr["config"]) for item in items]

    def path_value(self, parts: list[str]) -> Any:
        value = self.lookup(parts[0])
        rest = parts[1:]
        while rest:
            if isinstance(value, Template) and rest[0] == "outputs" and len(rest) > 1:
                value, rest = value.output(rest[1]), rest[2:]
            elif isinstance(value, ResourceRef) and rest == ["name"]:
                return value.template.resource(value.symbol)["name"]
            elif isinstance(value, dict) and rest[0] in value:
                value, rest = value[rest[0]], rest[1:]
            else:
                return Unresolved(".".join(parts))
        return value

    def eval(self, expr: Any) -> Any:
        if isinstance(expr, str):
            return self._string(expr)
        if isinstance(expr, list):
            return [self.eval(item) for item in expr]
        if not isinstance(expr, dict):
            return expr  # int, bool, None
        if "operator" in expr:
            return self._operator(expr["operator"])
        if "function" in expr:
            return self._function(
                expr["function"]["type"], expr["function"].get("parameters") or {}
            )
        return {_key(key): self.eval(value) for key, value in expr.items()}

    def _string(self, text: str) -> Any:
        # pycep gives identifiers and string literals alike as str: an identifier is a
        # name this file declares; a literal is anything else.
        if IDENTIFIER.fullmatch(text):
            try:
                return self.path_value(text.split("."))
            except KeyError:
                return text
        pieces = INTERPOLATION.split(text)
        if len(pieces) == 1:
            return text
        out = []
        for i, piece in enumerate(pieces):
            if i % 2 == 0:
                out.append(piece)
            else:
                value = self.path_value(piece.split(".")) if IDENTIFIER.fullmatch(piece) else None
                out.append(str(value) if value is not None else str(Unresolved(piece)))
        return "".join(out)

    def _function(self, name: str, parameters: dict[str, Any]) -> Any:
        args = [self.eval(value) for value in parameters.values() if value is not None]
        if name == "string" and not isinstance(args[0], Unresolved):
            return str(args[0]).lower() if isinstance(args[0], bool) else str(args[0])
        if name == "union" and all(isinstance(arg, dict) for arg in args):
            return {key: value for arg in args for key, value in arg.items()}
        if name == "concat" and all(isinstance(arg, list) for arg in args):
            return [item for arg in args for item in arg]
        if name == "items" and isinstance(args[0], dict):  # sorted by key, as Bicep does
            return [{"key": k, "value": v} for k, v in sorted(args[0].items())]
        if name == "replace" and all(isinstance(arg, str) for arg in args):
            return args[0].replace(args[1], args[2])
        if name == "range" and all(isinstance(arg, int) for arg in args):
            return list(range(args[0], args[0] + args[1]))
        # Unknown here (uniqueString, resourceGroup(), ...): keep the call, arguments
        # evaluated, so two values are equal only when they come from the same call.
        return Unresolved(f"{name}({', '.join(str(arg) for arg in args)})")

    def _operator(self, operator: dict[str, Any]) -> Any:
        kind, operands = operator["type"], operator["operands"]
        if kind == "property_accessor":
            parts: list[str] = []
            while True:
                head, tail = operands["operand_1"], operands["operand_2"]
                if not isinstance(head, str):  # a function's result: `environment().suffixes`
                    return Unresolved(".".join([str(self.eval(head)).strip("<>"), *_names(tail)]))
                parts.append(head)
                if isinstance(tail, dict) and tail.get("operator", {}).get("type") == kind:
                    operands = tail["operator"]["operands"]
                    continue
                parts.append(str(tail))
                return self.path_value(parts)
        if kind == "conditional":
            condition = self.eval(operands["condition"])
            if isinstance(condition, bool):
                return self.eval(operands["true_value" if condition else "false_value"])
        if kind == "add":
            left, right = self.eval(operands["operand_1"]), self.eval(operands["operand_2"])
            if type(left) is type(right) and isinstance(left, (int, str)):
                return left + right
        if kind in ("substract", "equals"):  # pycep's spelling
            left, right = self.eval(operands["operand_1"]), self.eval(operands["operand_2"])
            if kind == "equals":
                return left == right
            if isinstance(left, int) and isinstance(right, int):
                return left - right
        if kind == "minus":
            value = self.eval(operands["integer_value"])
            if isinstance(value, int):
                return -value
        return Unresolved(kind)


def _key(key: str) -> str:
    """An object key as Bicep means it: `'a.b'` quoted for its dots is `a.b`; an interpolated
    key (`'${identityId}'`) stays as written."""
    quoted = len(key) > 1 and key[0] == key[-1] == "'"
    return key[1:-1] if quoted and "${" not in key else key


def _names(accessor: Any) -> list[str]:
    """The names of `a.b.c` as pycep nests them (property accessors, right to left)."""
    names: list[str] = []
    while isinstance(accessor, dict) and "operator" in accessor:
        operands = accessor["operator"]["operands"]
        names.append(str(operands["operand_1"]))
        accessor = operands["operand_2"]
    return [*names, str(accessor)]


def app_settings(main: Template) -> dict[str, Any]:
    """The function app's settings by name, as main.bicep deploys them."""
    site = main.module("functionApp").resource("app")
    pairs = site["properties"]["siteConfig"]["appSettings"]
    return {pair["name"]: pair["value"] for pair in pairs}
