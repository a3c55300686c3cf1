"""The event catalog (catalog.json) and the matching of event keys against patterns."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

TEST_EVENT_KEY = "System.Test"
HEALTH_CHANGED_EVENT_KEY = "System.ConnectionHealthChanged"
SYSTEM_PREFIX = "System."
UNKNOWN_ENTRY = "not an event key or pattern of the catalog"


@cache
def catalog() -> dict[str, str]:
    """EventKey to description, in the file's order."""
    entries = json.loads((Path(__file__).with_name("catalog.json")).read_text())
    return {e["EventKey"]: e["Description"] for e in entries}


def is_pattern(value: str) -> bool:
    return value == "*" or value.endswith(".*")


def matches(pattern: str, event_key: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return event_key.startswith(pattern[:-1])
    return pattern == event_key


def delivers(pattern: str, event_key: str) -> bool:
    """Whether a connection enabling `pattern` is sent `event_key`. `*` means every business
    event, not the platform's own System.* events: a connection that took every event before
    those existed must not start receiving another shape of Data (they are enabled by name or
    with `System.*`)."""
    if pattern == "*" and event_key.startswith(SYSTEM_PREFIX):
        return False
    return matches(pattern, event_key)


def canonical_entry(value: str) -> str | None:
    """The catalog's spelling of an event key or pattern given in any case, or None if unknown."""
    if value == "*":
        return value
    by_lower = {key.lower(): key for key in catalog()}
    if value.endswith(".*"):
        prefix = value[:-1].lower()
        hits = {key[: len(prefix)] for key in catalog() if key.lower().startswith(prefix)}
        return f"{hits.pop()}*" if len(hits) == 1 else None
    return by_lower.get(value.lower())


def known_key(value: str) -> str:
    """The catalog's spelling of one event key (not a pattern) in any case; ValueError naming
    EventKey, in the API's words, otherwise."""
    canonical = canonical_entry(value)
    if canonical is None or is_pattern(canonical):
        raise ValueError(f"EventKey: {UNKNOWN_ENTRY}")
    return canonical


def most_specific(patterns: list[str], event_key: str) -> str | None:
    """The enabled entry that best names the event: the exact key, else the longest prefix."""
    hits = [p for p in patterns if matches(p, event_key)]
    return max(hits, key=lambda p: (p == event_key, len(p)), default=None)
