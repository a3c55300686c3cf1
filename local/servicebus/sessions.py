"""Sessions on the wire: the session filter of a receiver's source, the session lock's
expiry on its attach, and Service Bus's refusal of a message without a SessionId."""

from __future__ import annotations

from typing import Any

from proton import Data, symbol

SESSION_FILTER = "com.microsoft:session-filter"
LOCKED_UNTIL = "com.microsoft:locked-until-utc"
# Service Bus's words for a message without a SessionId sent to a session-enabled entity.
NO_SESSION_ID = (
    "The SessionId was not set on a message, and it cannot be sent to the entity. Entities "
    "that have session support enabled can only receive messages that have the SessionId "
    "set to a valid value."
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
