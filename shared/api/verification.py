"""What saving a connection does to its health: verify it first (unless told not to, or it
is inactive), refuse it on a Configuration failure, and say which health to store."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from shared.api.http import ApiError
from shared.health import HealthState, Outcomes, merge
from shared.models import Connection, ErrorCategory

if TYPE_CHECKING:
    from shared.services import Services
    from shared.storage.connections import StoredConnection


async def health_after_save(
    services: Services, stored: StoredConnection, verify: bool, previous: HealthState | None
) -> HealthState | None:
    """The health to store with the save (None: leave it); ApiError 400 when the
    verification fails with Configuration (then nothing may be saved).

    A verified save ends a suspension and starts the health over from its outcome; an
    unverified save of a new connection starts it Healthy; an unverified PUT leaves it."""
    from shared.dispatch.verify import verify as send_verification

    now = services.clock()
    if not verify or not stored.connection.active:
        return None if previous else HealthState.new(now)
    dispatcher = await services.dispatcher()
    verdict = await send_verification(dispatcher, stored, now, services.settings.verify_seconds)
    error = verdict.error
    if error is not None and error.category == ErrorCategory.CONFIGURATION:
        raise ApiError(
            400,
            "Verification failed",
            f"the verification message could not be delivered: {error.message} "
            "(send ?verify=false to save without the check)",
            {verdict.property: [error.message]},
        )
    seen = Outcomes()
    seen.add(now, error)  # a Transient failure: saved, Degraded
    base = (previous or HealthState.new(now)).resumed(now)
    return merge(base, seen, now, timedelta(seconds=services.settings.suspend_after_seconds))


def with_health(stored: StoredConnection, state: HealthState | None, now: datetime) -> Connection:
    """The connection as the API shows it; without a health row, Healthy since it was saved."""
    state = state or HealthState.new(stored.updated_at or now)
    return stored.masked().model_copy(update={"health": state.view()})
