"""What an API key may do: its scopes, one per kind of call."""

from __future__ import annotations

from enum import StrEnum


class Scope(StrEnum):
    """A right an API key holds; each route names the one it needs."""

    CONNECTIONS_READ = "connections:read"
    CONNECTIONS_WRITE = "connections:write"  # create, replace, delete, resume, ownership
    MESSAGES_READ = "messages:read"  # the log, deliveries, replays' progress, stats
    MESSAGES_SEND = "messages:send"  # re-send, test, replay
    KEYS_MANAGE = "keys:manage"  # portal links
    EVENTS_PUBLISH = "events:publish"  # POST /v1/events


# Keys made before scopes existed, and keys made without naming any, hold every scope; so do
# portal sessions (a person signed in with such a key's link).
EVERY_SCOPE = frozenset(Scope)


def scopes_from_text(text: str | None) -> frozenset[Scope]:
    """A key's stored scopes ("a,b"); every scope when it has none stored (an older key).
    A name this version does not know is dropped: a key never gains a right by it."""
    if not text:
        return EVERY_SCOPE
    known = {s.value for s in Scope}
    return frozenset(Scope(name) for name in text.split(",") if name in known)


def scopes_to_text(scopes: frozenset[Scope]) -> str:
    return ",".join(sorted(scopes))
