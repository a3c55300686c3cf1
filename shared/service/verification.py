"""What saving a connection does to its health: verify it first (unless told not to, or it
is inactive), refuse it when the check fails, and say which health to store.

The check answers in two ways only: the service's own refusal (a wrong key, a missing queue:
a 400 naming the property), or that the namespace or container could not be reached, one
answer for every reason, given no sooner than the check's budget, so that neither its words
nor its time tell a silent host from a closed, private or unknown one. Verifications are
limited per account (LIMIT_VERIFICATIONS_PER_MINUTE): each sends a message somewhere."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from shared.errors import OverBudget, VerificationFailed
from shared.health import HealthState, Outcomes, merge
from shared.models.connection import Connection

if TYPE_CHECKING:
    from shared.services import Services
    from shared.storage.connections import StoredConnection


async def health_after_save(
    services: Services,
    stored: StoredConnection,
    verify: bool,
    previous: HealthState | None,
    code: str | None = None,
) -> HealthState | None:
    """The health to store with the save (None: leave it); raises when the
    verification fails (VerificationFailed: nothing may be saved), OverBudget past the
    account's rate of them.
    `code` (an Entra ID connection's confirmation code) goes in the verification message.

    A verified save ends a suspension and starts the health over; an unverified save of a
    new connection starts it Healthy; an unverified PUT leaves it."""
    from shared.api.http import limiter_of
    from shared.dispatch.probe import verify as send_verification

    now = services.clock()
    if not verify or not stored.connection.active:
        return None if previous else HealthState.new(now)
    if wait := limiter_of(services.settings).verifications.take(stored.account):
        detail = "too many verifications for this account; save with ?verify=false or try later"
        raise OverBudget(detail, wait)
    started = time.monotonic()
    dispatcher = await services.dispatcher()
    budget = services.settings.verify_seconds
    verdict = await send_verification(dispatcher, stored, now, budget, code)
    if verdict.error is not None:
        if verdict.unreachable:  # the same answer, at the same time, whatever the reason
            await no_sooner_than(started, budget)
        raise VerificationFailed(verdict.names, verdict.reason)
    seen = Outcomes()
    seen.add(now, None)
    base = (previous or HealthState.new(now)).resumed(now)
    return merge(base, seen, now, timedelta(seconds=services.settings.suspend_after_seconds))


async def no_sooner_than(
    started: float,
    seconds: float,
    timer: Callable[[], float] = time.monotonic,
    pause: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Wait until `seconds` have passed since `started` (on `timer`)."""
    await pause(max(0.0, seconds - (timer() - started)))


def with_health(stored: StoredConnection, state: HealthState | None, now: datetime) -> Connection:
    """The connection as the API shows it; without a health row, Healthy since it was saved."""
    state = state or HealthState.new(stored.updated_at or now)
    return stored.masked().model_copy(update={"health": state.view()})
