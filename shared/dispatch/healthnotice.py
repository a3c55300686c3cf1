"""`System.ConnectionHealthChanged` (issue 26): the event the health tracker publishes when it
writes a connection's health with another status, so the account's other connections that
enable it hear that one of them broke, or recovered. The dispatcher never sends it to the
connection it is about (a broken connection would be sent its own alarm)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from shared.catalog import HEALTH_CHANGED_EVENT_KEY
from shared.events import new_event
from shared.health import HealthState
from shared.models.connection import HealthStatus
from shared.models.events import SystemEvent

# What the account's operators should do, by the new status and the last error's category.
ACTIONS = {
    HealthStatus.HEALTHY: "Nothing: deliveries succeed again.",
    HealthStatus.DEGRADED: "Usually nothing: deliveries fail for reasons that pass (busy, "
    "timeouts) and are retried. If it lasts, check the namespace's throttling and quotas.",
    HealthStatus.FAILING: "Fix the connection: the namespace refuses deliveries (a wrong key, "
    "a missing queue, a missing role). They are retried, and the connection is suspended if "
    "every delivery keeps failing this way.",
    HealthStatus.SUSPENDED: "Fix the connection and save it, or resume it: events are kept, "
    "not sent, until then; replay them afterwards.",
}


def subject_of(uid: UUID) -> str:
    return f"connections/{uid}"


def is_about(event: SystemEvent, uid: UUID) -> bool:
    """Whether `event` is the health notice of connection `uid` (never sent to it)."""
    return event.event_key == HEALTH_CHANGED_EVENT_KEY and event.subject == subject_of(uid)


def reason_of(state: HealthState) -> dict[str, str] | None:
    """The last error as health shows it (its message was scrubbed of secrets when recorded);
    None for a recovery."""
    error = state.last_error
    if error is None or state.status == HealthStatus.HEALTHY:
        return None
    return {"Category": str(error.category), "Type": error.type, "Message": error.message}


def health_changed(
    account: str, uid: UUID, title: str | None, old: HealthState, new: HealthState, now: datetime
) -> SystemEvent:
    data: dict[str, Any] = {
        "ConnectionUid": str(uid),
        "Title": title,
        "OldState": str(old.status),
        "NewState": str(new.status),
        "Reason": reason_of(new),
        "Action": ACTIONS[new.status],
        "At": now.isoformat(),
    }
    return new_event(account, HEALTH_CHANGED_EVENT_KEY, now, subject_of(uid), data)
