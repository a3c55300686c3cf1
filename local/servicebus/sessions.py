"""Sessions on the wire and in waiting: the session filter of a receiver's source, the
session lock's expiry on its attach, Service Bus's refusals, and receivers that wait for
the next available session."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from proton import Connection, Data, Link, symbol

from local.servicebus.store import Entity

SESSION_FILTER = "com.microsoft:session-filter"
LOCKED_UNTIL = "com.microsoft:locked-until-utc"
# A receiver's wait for the next available session, in ms (both SDKs send it when told
# how long to wait); without it Service Bus waits its operation timeout, 60 s.
ATTACH_TIMEOUT = "com.microsoft:timeout"
DEFAULT_SESSION_WAIT_SECONDS = 60.0
# Service Bus's words for a message without a SessionId sent to a session-enabled entity,
# and for receivers of the wrong kind (amqp:not-allowed, as it refuses them).
NO_SESSION_ID = (
    "The SessionId was not set on a message, and it cannot be sent to the entity. Entities "
    "that have session support enabled can only receive messages that have the SessionId "
    "set to a valid value."
)
SESSIONFUL_RECEIVER_REQUIRED = (
    "It is not possible for an entity that requires sessions to create a non-sessionful "
    "message receiver."
)
SESSIONFUL_RECEIVER_REFUSED = (
    "It is not possible for an entity that does not require sessions to create a sessionful "
    "message receiver."
)
_DATETIMEOFFSET_EPOCH = 621_355_968_000_000_000  # .NET ticks at the Unix epoch


def read_filters(data: Data) -> dict[str, Any]:
    """A source's filter set as {name: value}; empty when it has none."""
    data.rewind()
    if not data.next():
        return {}
    value = data.get_object()
    if not isinstance(value, dict):
        return {}
    return {str(k): getattr(v, "value", v) for k, v in value.items()}  # described: its value


def write_session_filter(data: Data, session: str) -> None:
    """Our attach's source names the session the receiver now holds (the SDK reads it)."""
    data.clear()
    data.put_map()
    data.enter()
    data.put_symbol(symbol(SESSION_FILTER))
    data.put_string(session)
    data.exit()


def datetime_offset(seconds: float) -> int:
    """A Unix time as .NET ticks, as `com.microsoft:locked-until-utc` carries it."""
    return _DATETIMEOFFSET_EPOCH + int(seconds * 10_000_000)


def attach_to_session(link: Link, session: str, lock_duration: float) -> None:
    """Fill in the attach that answers a session receiver: the session it holds (also
    when it asked for the next available one) and until when."""
    write_session_filter(link.source.filter, session)
    until = time.time() + lock_duration
    link.properties = {symbol(LOCKED_UNTIL): datetime_offset(until)}


def session_wait_seconds(link: Link) -> float:
    """How long a receiver asking for the next available session waits for one."""
    properties = link.remote_properties or {}
    timeout_ms = properties.get(symbol(ATTACH_TIMEOUT))
    return DEFAULT_SESSION_WAIT_SECONDS if timeout_ms is None else int(timeout_ms) / 1000


@dataclass(eq=False)
class Waiter:
    link: Link
    entity: Entity


class SessionWaiters:
    """Receivers that asked for the next available session when none was free. Their
    attach stays unanswered, as Service Bus leaves it, until a session gets messages or is
    let go (`grant`), or their wait runs out (the broker then refuses them)."""

    def __init__(self) -> None:
        self._waiting: list[Waiter] = []

    def add(self, link: Link, entity: Entity) -> None:
        self._waiting.append(Waiter(link, entity))

    def count(self, entity: Entity) -> int:
        return sum(1 for w in self._waiting if w.entity is entity)

    def waiting(self, link: Link) -> bool:
        return any(w.link == link for w in self._waiting)

    def forget(self, link: Link) -> None:
        self._waiting = [w for w in self._waiting if w.link != link]

    def forget_connection(self, connection: Connection) -> None:
        self._waiting = [w for w in self._waiting if w.link.connection != connection]

    def grant(self, entity: Entity) -> list[tuple[Link, str]]:
        """Free sessions of `entity` for its waiters, first come first served; each link
        returned now holds its session."""
        granted: list[tuple[Link, str]] = []
        for waiter in [w for w in self._waiting if w.entity is entity]:
            session = entity.free_session(waiter.link)
            if session is None:
                break
            self._waiting.remove(waiter)
            granted.append((waiter.link, session))
        return granted
