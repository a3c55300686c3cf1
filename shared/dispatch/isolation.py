"""Keeping one tenant's slow or dead endpoint from stalling every other tenant.

- `Deadline`: one budget per delivery attempt, enforced with `asyncio.timeout` around what
  the attempt awaits (connection open, CBS, link attach, claim-check upload, send), so a
  black hole costs at most that long whatever the SDKs' own options do.
- Bulkheads (shared/dispatch/bulkhead.py): at most N attempts in flight per connection, and
  M queue-triggered attempts per account to destinations whose link is not open yet, in this
  process. A delivery finding no room waits its turn while the holders are moving (one lets
  go, or the destination answers, now and then); behind holders that stand still it is
  deferred by the dispatcher (back on the retry queue, same attempt) instead of holding a
  host slot.
- `Breaker`: per connection; after K consecutive timeouts or connection failures it fails
  deliveries fast until a probe after a cool-down gets an answer. `Breakers.states()` is
  what a health feature reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from types import TracebackType
from typing import Any, ClassVar
from uuid import UUID

from shared.dispatch.bulkhead import Bulkhead, Patience, Progress, Slot
from shared.settings import IsolationSettings


class IsolationFailure(Exception):
    """A failure our own isolation decided; `record_type` is the record's Error.Type."""

    record_type: ClassVar[str]


class DeliveryTimeout(IsolationFailure):
    record_type = "Timeout"


class CircuitOpen(IsolationFailure):
    record_type = "CircuitOpen"


def unreachable(error: BaseException) -> bool:
    """Whether an attempt's error counts against the endpoint in its breaker."""
    if isinstance(error, DeliveryTimeout):
        return True
    return isinstance(error, _unreachable_types())


@functools.cache
def _unreachable_types() -> tuple[type[BaseException], ...]:
    """Errors that say the endpoint did not answer, as opposed to an answer we did not like
    (auth, not found, busy, too large). Imported on first use: cold start."""
    from azure.core import exceptions as core
    from azure.servicebus import exceptions as sb

    return (
        sb.ServiceBusConnectionError,
        sb.ServiceBusCommunicationError,
        sb.OperationTimeoutError,
        core.ServiceRequestError,
        core.ServiceResponseError,
        OSError,  # ConnectionError and TimeoutError are OSErrors
    )


class Deadline:
    """The moment an attempt must be over by, on the event loop's clock."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = asyncio.get_running_loop().time() + seconds

    def remaining(self) -> float:
        return max(0.0, self.at - asyncio.get_running_loop().time())

    def scope(self) -> _Scope:
        """`async with deadline.scope():` cancels what runs inside at the deadline and raises
        DeliveryTimeout instead."""
        return _Scope(self)


class _Scope:
    """Deadline.scope, as a class: one per attempt, and @asynccontextmanager's generator
    cost 2% of a dispatch's CPU (bench_dispatch --profile)."""

    __slots__ = ("_deadline", "_timeout")

    def __init__(self, deadline: Deadline) -> None:
        self._deadline = deadline
        self._timeout = asyncio.timeout_at(deadline.at)

    async def __aenter__(self) -> None:
        await self._timeout.__aenter__()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._timeout.__aexit__(kind, error, tb)
        except TimeoutError as e:  # ours: the deadline cancelled what ran inside
            raise self._expired() from e
        if isinstance(error, TimeoutError) and self._deadline.remaining() <= 0:
            raise self._expired() from error  # else a timeout of the SDK's own, left as it is

    def _expired(self) -> DeliveryTimeout:
        return DeliveryTimeout(f"the attempt did not finish within {self._deadline.seconds:g} s")


# Closes that may hang on a dead peer run here, never awaited by a delivery; kept referenced
# so the loop does not drop them half-way.
_closing: set[asyncio.Task[None]] = set()


def close_in_background(close: Callable[[], Awaitable[Any]], seconds: float) -> None:
    """Throw a client away: close it without waiting, giving up after `seconds`."""

    async def run() -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(seconds):
                await close()

    task = asyncio.get_running_loop().create_task(run())
    _closing.add(task)
    task.add_done_callback(_closing.discard)


class BreakerState(StrEnum):
    CLOSED = "Closed"
    OPEN = "Open"
    HALF_OPEN = "HalfOpen"  # one probe is trying


class Breaker:
    """Consecutive failures to reach one connection's endpoint, and whether to try at all."""

    def __init__(
        self, failures: int, cool_down: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._threshold, self._cool_down, self._clock = failures, cool_down, clock
        self.failures = 0
        self.state = BreakerState.CLOSED
        self._since = 0.0  # when it opened, or when the probe started

    def admit(self) -> bool:
        """Whether an attempt may go ahead. Once the cool-down is over one probe may; a
        probe that never reports (its process died) is replaced after another cool-down."""
        if self.state == BreakerState.CLOSED:
            return True
        if self._clock() - self._since < self._cool_down:
            return False
        self.state, self._since = BreakerState.HALF_OPEN, self._clock()
        return True

    def record(self, error: BaseException | None) -> None:
        """An admitted attempt's outcome. Any answer from the endpoint closes the breaker,
        even an error; only silence or a broken connection counts against it."""
        if isinstance(error, asyncio.CancelledError):
            return  # our own shutdown says nothing about the endpoint
        if error is None or not unreachable(error):
            self.failures, self.state = 0, BreakerState.CLOSED
            return
        self.failures += 1
        if self.state == BreakerState.HALF_OPEN or self.failures >= self._threshold:
            self.state, self._since = BreakerState.OPEN, self._clock()

    def open_error(self) -> CircuitOpen:
        wait = max(0.0, self._cool_down - (self._clock() - self._since))
        return CircuitOpen(
            f"{self.failures} consecutive attempts timed out or could not connect; "
            f"the next probe in {wait:.0f} s"
        )


class Breakers:
    """One breaker per connection, made on first use."""

    MAX_KEPT = 10_000  # beyond this, closed breakers with nothing to remember are forgotten

    def __init__(
        self, failures: int, cool_down: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._make = lambda: Breaker(failures, cool_down, clock)
        self._breakers: dict[UUID, Breaker] = {}

    def get(self, connection: UUID) -> Breaker:
        breaker = self._breakers.get(connection)
        if breaker is None:
            if len(self._breakers) >= self.MAX_KEPT:
                self._breakers = {
                    uid: b for uid, b in self._breakers.items() if b.failures or b.state != "Closed"
                }
            breaker = self._breakers[connection] = self._make()
        return breaker

    def is_open(self, connection: UUID) -> bool:
        """Whether deliveries to the connection fail fast now (read by its health)."""
        breaker = self._breakers.get(connection)
        return breaker is not None and breaker.state != BreakerState.CLOSED

    def states(self) -> dict[UUID, BreakerState]:
        """Connections whose breaker is not plainly closed (for health reporting)."""
        return {uid: b.state for uid, b in self._breakers.items() if b.state != "Closed"}


class Isolation:
    """The deadline, bulkheads and breakers of one dispatcher."""

    def __init__(
        self, settings: IsolationSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.connections: Bulkhead[UUID] = Bulkhead(settings.max_in_flight_per_connection, clock)
        self.accounts: Bulkhead[str] = Bulkhead(settings.max_in_flight_per_account, clock)
        self.breakers = Breakers(
            settings.breaker_failures, settings.breaker_cool_down_seconds, clock
        )
        self._patience = Patience(settings.bulkhead_wait_seconds, settings.bulkhead_slow_seconds)

    def deadline(self) -> Deadline:
        return Deadline(self.settings.attempt_timeout_seconds)

    async def room(self, account: str, connection: UUID, destination: Progress) -> Slot | None:
        """A place in the connection's bulkhead, and in the account's while the destination's
        link is not open yet, both released with the slot; None when the attempts in the way
        stand still (see Bulkhead).

        The account's limit counts only what may turn out stuck: attempts to a destination
        that has not answered on its current link. One that answers sends whole batches,
        whatever the account's other connections do."""
        wait = self._patience
        if destination.ready:
            return await self.connections.enter_unless_stuck(connection, wait, destination)
        in_account = await self.accounts.enter_unless_stuck(account, wait, destination)
        if in_account is None:
            return None
        try:
            in_connection = await self.connections.enter_unless_stuck(connection, wait, destination)
        except BaseException:  # cancelled while waiting: the account's place is not kept
            in_account.release()
            raise
        if in_connection is None:
            in_account.release()
            return None

        def release() -> None:
            in_connection.release()
            in_account.release()

        return Slot(release)

    def defer_seconds(self, account: str, connection: UUID) -> int:
        """How long a delivery that found no room waits on the retry queue: until the
        attempts in its way have reached their deadline, so that it comes back once, to a
        breaker that has decided. (Coming back sooner, as long as they had stood still, cost
        the other tenants more: Y's p99 2.0x its alone figure against 1.9x,
        docs/BENCHMARKS.md.)"""
        stuck_for = max(self.connections.still(connection), self.accounts.still(account))
        left = math.ceil(self.settings.attempt_timeout_seconds - stuck_for)
        return max(self.settings.busy_defer_seconds, left)
