"""ASP.NET Core route templates, constraints and the Functions host's route order."""

from __future__ import annotations

import functools
import math
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar
from urllib.parse import unquote

T = TypeVar("T")


def _int_between(low: int, high: int) -> Callable[[str], bool]:
    def check(value: str) -> bool:
        return bool(re.fullmatch(r"-?\d+", value)) and low <= int(value) <= high

    return check


def _is_number(value: str) -> bool:
    try:
        return math.isfinite(float(value))
    except ValueError:
        return False


def _is_guid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _is_datetime(value: str) -> bool:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


_SIMPLE_CONSTRAINTS: dict[str, Callable[[str], bool]] = {
    "int": _int_between(-(2**31), 2**31 - 1),
    "long": _int_between(-(2**63), 2**63 - 1),
    "bool": lambda value: value.lower() in ("true", "false"),
    "guid": _is_guid,
    "alpha": lambda value: bool(re.fullmatch(r"[A-Za-z]+", value)),
    "datetime": _is_datetime,
    "decimal": _is_number,
    "double": _is_number,
    "float": _is_number,
    "required": lambda value: value != "",
}


def route_constraint(spec: str) -> Callable[[str], bool]:
    """One ASP.NET inline route constraint (`int`, `guid`, `min(1)`, `regex(...)`, ...)."""
    name, paren, argument = spec.partition("(")
    name = name.strip().lower()
    if not paren:
        if name not in _SIMPLE_CONSTRAINTS:
            raise ValueError(f"unknown route constraint {spec!r}")
        return _SIMPLE_CONSTRAINTS[name]
    if not argument.endswith(")"):
        raise ValueError(f"route constraint {spec!r} lacks its closing parenthesis")
    argument = argument[:-1]
    if name == "regex":
        # ASP.NET matches regex constraints case-insensitively and unanchored.
        pattern = re.compile(argument, re.IGNORECASE)
        return lambda value: pattern.search(value) is not None
    numbers = [int(part) for part in argument.split(",")]
    if name == "min" and len(numbers) == 1:
        return _int_between(numbers[0], 2**63 - 1)
    if name == "max" and len(numbers) == 1:
        return _int_between(-(2**63), numbers[0])
    if name == "range" and len(numbers) == 2:
        return _int_between(numbers[0], numbers[1])
    if name == "minlength" and len(numbers) == 1:
        return lambda value: len(value) >= numbers[0]
    if name == "maxlength" and len(numbers) == 1:
        return lambda value: len(value) <= numbers[0]
    if name == "length" and len(numbers) in (1, 2):
        low, high = numbers[0], numbers[-1]
        return lambda value: low <= len(value) <= high
    raise ValueError(f"unknown route constraint {spec!r}")


@dataclass(frozen=True)
class RouteParameter:
    name: str
    constraints: tuple[Callable[[str], bool], ...]
    optional: bool
    catch_all: bool
    default: str | None


def _split_top_level(text: str, separator: str) -> list[str]:
    """Split on `separator` outside parentheses (a regex constraint may contain it)."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == separator and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


def _parse_parameter(token: str) -> RouteParameter:
    text = token
    catch_all = text.startswith("*")
    text = text.lstrip("*")
    optional = text.endswith("?")
    if optional:
        text = text[:-1]
    text, *default = _split_top_level(text, "=")
    name, *constraints = _split_top_level(text, ":")
    if not name:
        raise ValueError(f"route parameter {{{token}}} has no name")
    return RouteParameter(
        name=name,
        constraints=tuple(route_constraint(spec) for spec in constraints),
        optional=optional,
        catch_all=catch_all,
        default="=".join(default) if default else None,
    )


def _parse_segment(segment: str) -> list[str | RouteParameter]:
    """A template segment as literal text and parameters; `{{` and `}}` are literal braces."""
    parts: list[str | RouteParameter] = []
    literal, index = "", 0
    while index < len(segment):
        char = segment[index]
        if segment.startswith(("{{", "}}"), index):
            literal += char
            index += 2
        elif char == "{":
            depth, end = 0, index + 1
            while end < len(segment) and not (segment[end] == "}" and depth == 0):
                depth += {"(": 1, ")": -1}.get(segment[end], 0)
                end += 1
            if end == len(segment):
                raise ValueError(f"unclosed {{ in route segment {segment!r}")
            if literal:
                parts.append(literal)
                literal = ""
            parts.append(_parse_parameter(segment[index + 1 : end]))
            index = end + 1
        else:
            literal += char
            index += 1
    if literal:
        parts.append(literal)
    return parts


class RouteTemplate:
    """An ASP.NET Core route template compiled once to a regular expression.

    Literals match case-insensitively; `{name}`, `{name:constraint}`, `{name?}`,
    `{name=default}` and `{*rest}` as in ASP.NET. A trailing slash is ignored.
    """

    def __init__(self, template: str) -> None:
        self.template = template
        text = template.removeprefix("~").strip("/")
        self.segments = [_parse_segment(segment) for segment in text.split("/")] if text else []
        self.parameters: list[RouteParameter] = []
        pattern = ""
        for parts in self.segments:
            if len(parts) == 1 and isinstance(parts[0], RouteParameter):
                parameter = parts[0]
                group = f"(?P<p{len(self.parameters)}>{'.*' if parameter.catch_all else '[^/]+'})"
                self.parameters.append(parameter)
                skippable = (
                    parameter.optional or parameter.catch_all or parameter.default is not None
                )
                pattern += f"(?:/{group})?" if skippable else f"/{group}"
                continue
            pattern += "/"
            for part in parts:
                if isinstance(part, str):
                    pattern += re.escape(part)
                else:
                    pattern += f"(?P<p{len(self.parameters)}>[^/]+?)"
                    self.parameters.append(part)
        self._regex = re.compile(f"^{pattern}/?$", re.IGNORECASE)

    def match(self, path: str) -> dict[str, str] | None:
        """Route values for a percent-encoded path, or None when it does not match."""
        found = self._regex.match(path)
        if found is None:
            return None
        values: dict[str, str] = {}
        for parameter, raw in zip(self.parameters, found.groups(), strict=True):
            if raw is None or (raw == "" and parameter.catch_all):
                if parameter.default is not None:
                    values[parameter.name] = parameter.default
                continue
            value = unquote(raw)
            for check in parameter.constraints:
                if not check(value):
                    return None
            values[parameter.name] = value
        return values


def compare_routes(left: RouteTemplate, right: RouteTemplate) -> int:
    """The Functions host's route order (WebJobsRouteBuilder.RouteComparison).

    Segment by segment: a literal before a parameter, a parameter with more constraints
    before one with fewer, literals alphabetically (ignoring case); then longer first.
    """
    for index, left_parts in enumerate(left.segments):
        if index >= len(right.segments):
            return -1
        mine, theirs = left_parts[0], right.segments[index][0]
        if isinstance(mine, str) != isinstance(theirs, str):
            return -1 if isinstance(mine, str) else 1
        if isinstance(mine, RouteParameter) and isinstance(theirs, RouteParameter):
            if len(mine.constraints) != len(theirs.constraints):
                return -1 if len(mine.constraints) > len(theirs.constraints) else 1
        elif isinstance(mine, str) and isinstance(theirs, str):
            mine_key, theirs_key = mine.upper(), theirs.upper()
            if mine_key != theirs_key:
                return -1 if mine_key < theirs_key else 1
    return 1 if len(right.segments) > len(left.segments) else 0


@dataclass(frozen=True)
class Route(Generic[T]):
    template: RouteTemplate
    methods: frozenset[str] | None  # None: every method
    target: T


class Router(Generic[T]):
    """Finds the target for a method and path; routes are ordered and filtered once, here."""

    def __init__(self, routes: Iterable[Route[T]]) -> None:
        def order(left: Route[T], right: Route[T]) -> int:
            return compare_routes(left.template, right.template)

        ordered = sorted(routes, key=functools.cmp_to_key(order))
        self.routes = ordered
        named = {method for route in ordered for method in route.methods or ()}
        self._by_method = {
            method: [r for r in ordered if r.methods is None or method in r.methods]
            for method in named
        }
        self._any_method = [route for route in ordered if route.methods is None]

    def match(self, method: str, path: str) -> tuple[T, dict[str, str]] | None:
        # A method that no route lists can still reach routes that take every method.
        for route in self._by_method.get(method, self._any_method):
            values = route.template.match(path)
            if values is not None:
                return route.target, values
        return None
