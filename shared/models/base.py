"""Shared parts of every model: PascalCase names matched ignoring case, timestamps, errors."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    PlainSerializer,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_pascal

if TYPE_CHECKING:
    pass


def iso_utc(value: datetime) -> str:
    """`2025-10-13T14:22:10.652Z`: milliseconds, UTC, as the seed shows."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


Timestamp = Annotated[AwareDatetime, PlainSerializer(iso_utc, return_type=str)]


# Each model's property names by their lower case (the fields of a class never change).
_NAMES_BY_LOWER: dict[type, dict[str, str]] = {}


class ApiModel(BaseModel):
    # Schemas are built on first use, not at import: a shorter cold start.
    model_config = ConfigDict(
        alias_generator=to_pascal, populate_by_name=True, extra="forbid", defer_build=True
    )

    @model_validator(mode="before")
    @classmethod
    def _names_ignore_case(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if cls.model_fields.keys() >= data.keys():  # Python names (our own code): nothing to do
            return data
        by_lower = _NAMES_BY_LOWER.get(cls)
        if by_lower is None:  # once per model: every record the dispatcher writes builds three
            by_lower = {(f.alias or n).lower(): f.alias or n for n, f in cls.model_fields.items()}
            _NAMES_BY_LOWER[cls] = by_lower
        named: dict[Any, Any] = {}
        for key, value in data.items():
            name = by_lower.get(key.lower(), key) if isinstance(key, str) else key
            if name in named:
                raise ValueError(f"property {name} is given twice (names ignore case)")
            named[name] = value
        return named

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def error_map(error: ValidationError) -> dict[str, list[str]]:
    """Validation errors by property path, as clients name properties (`EnabledEvents[2]`)."""
    errors: dict[str, list[str]] = {}
    for item in error.errors(include_url=False):
        path = "".join(
            f"[{part}]"
            if isinstance(part, int)
            # a defaulted field reports its Python name; clients know the PascalCase one
            else f".{to_pascal(part) if re.fullmatch('[a-z0-9_]+', part) else part}"
            for part in item["loc"]
        ).lstrip(".")
        errors.setdefault(path or "$", []).append(item["msg"].removeprefix("Value error, "))
    return errors
