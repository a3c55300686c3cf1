"""A connection's health: its state, the outcomes a process saw since its last write, and
the rule that merges those outcomes into the stored state (issue 15).

Several processes deliver to one connection, and each writes what it saw at most every
HEALTH_FLUSH_SECONDS when it changes what the row says (`says_more`), else once a minute
(shared/dispatch/healthtracker.py). The merge rule: timestamps take the later value, failure
counts add (a success seen by the writer starts them over), and the status follows the
outcomes of the write that lands last, so the stored health is at most a minute and a flush
interval behind the newest outcome anywhere (eventually consistent within 75 s). Suspension
is the exception: once Suspended, outcomes no longer change the state; only a verified save
or a resume does.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from shared.models.connection import ConnectionHealth, HealthStatus
from shared.models.records import DeliveryError, ErrorCategory


@dataclass(frozen=True)
class HealthState:
    """What the health row holds: the API's `Health`, and since when every delivery failed
    with Configuration (the clock of the suspension)."""

    status: HealthStatus
    since: datetime
    last_success_at: datetime | None = None
    last_failure_at: datetime | None = None
    consecutive_failures: int = 0
    last_error: DeliveryError | None = None
    failing_since: datetime | None = None

    @classmethod
    def new(cls, now: datetime) -> HealthState:
        return cls(HealthStatus.HEALTHY, now)

    def resumed(self, now: datetime) -> HealthState:
        """Healthy again (a resume or a verified save), the history of times kept."""
        return replace(
            self, status=HealthStatus.HEALTHY, since=now, consecutive_failures=0, failing_since=None
        )

    def view(self) -> ConnectionHealth:
        # Built, not validated: every value came from this typed state (a GET's CPU, issue 28).
        return ConnectionHealth.model_construct(
            status=self.status,
            since=self.since,
            last_success_at=self.last_success_at,
            last_failure_at=self.last_failure_at,
            consecutive_failures=self.consecutive_failures,
            last_error=self.last_error,
        )


def says_more(known: HealthState, new: HealthState) -> bool:
    """Whether `new` tells a reader something `known` does not: another status or another kind
    of last error. Counts and times alone wait for the heartbeat."""

    def kind(state: HealthState) -> tuple[str, str] | None:
        error = state.last_error
        return None if error is None else (str(error.category), error.type)

    return new.status != known.status or kind(new) != kind(known)


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


class Outcomes:
    """The delivery outcomes one process saw for one connection since it last wrote."""

    def __init__(self) -> None:
        self.last_success_at: datetime | None = None
        self.last_failure_at: datetime | None = None
        self.last_error: DeliveryError | None = None
        self.had_success = False
        self.trailing_failures = 0  # since the last success seen here
        self.configuration_since: datetime | None = None  # start of the trailing run
        self.only_configuration = True  # every outcome here was a Configuration failure

    def add(self, at: datetime, error: DeliveryError | None) -> None:
        if error is not None and error.category in (
            ErrorCategory.TOO_LARGE,  # the event's size, not the connection's health
            ErrorCategory.SUSPENDED,  # not sent at all
        ):
            return
        if error is None:
            self.last_success_at = _later(self.last_success_at, at)
            self.had_success, self.trailing_failures = True, 0
            self.configuration_since, self.only_configuration = None, False
            return
        self.last_failure_at = _later(self.last_failure_at, at)
        self.last_error = error
        self.trailing_failures += 1
        if error.category != ErrorCategory.CONFIGURATION:
            self.configuration_since, self.only_configuration = None, False
        elif self.configuration_since is None:
            self.configuration_since = at

    @property
    def empty(self) -> bool:
        return self.last_success_at is None and self.last_failure_at is None


def merge(
    state: HealthState,
    seen: Outcomes,
    now: datetime,
    suspend_after: timedelta,
    breaker_open: bool = False,
) -> HealthState:
    """The stored state with `seen` added (the rule in the module docstring). With the
    writer's circuit breaker open for the connection, it is at best Degraded."""
    if state.status == HealthStatus.SUSPENDED or seen.empty:
        return state
    failures = seen.trailing_failures + (0 if seen.had_success else state.consecutive_failures)
    failing_since = seen.configuration_since
    if failing_since is not None and seen.only_configuration and state.failing_since:
        failing_since = state.failing_since  # the run started before this writer's window
    if failures == 0:
        status = HealthStatus.DEGRADED if breaker_open else HealthStatus.HEALTHY
    elif failing_since is None:
        status = HealthStatus.DEGRADED
    elif now - failing_since >= suspend_after:
        status = HealthStatus.SUSPENDED
    else:
        status = HealthStatus.FAILING
    return HealthState(
        status=status,
        since=state.since if status == state.status else now,
        last_success_at=_later(state.last_success_at, seen.last_success_at),
        last_failure_at=_later(state.last_failure_at, seen.last_failure_at),
        consecutive_failures=failures,
        last_error=seen.last_error or state.last_error,
        failing_since=failing_since,
    )
