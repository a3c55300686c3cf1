"""Timer triggers: NCRONTAB or interval schedules, one invocation at a time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from azure.functions.timer import TimerRequest

from local.host.invoke import FunctionInvoker
from local.ncrontab import CronSchedule, IntervalSchedule

log = logging.getLogger("local.host")

# A timer invocation this late is reported with `past_due`.
PAST_DUE_AFTER = timedelta(seconds=1)


def utc_now() -> datetime:
    return datetime.now(UTC)


class TimerTrigger:
    """One timer trigger: runs its function at each occurrence, never two at once.

    As in the WebJobs timer listener, the next occurrence is computed after an invocation
    ends, so a run longer than the period skips occurrences rather than piling them up.
    """

    def __init__(
        self,
        invoker: FunctionInvoker,
        schedule: CronSchedule | IntervalSchedule,
        run_on_startup: bool = False,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.invoker = invoker
        self.schedule = schedule
        self.run_on_startup = run_on_startup
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._invoking = False
        self._stopping = False
        self._last: datetime | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"timer {self.invoker.name}")

    async def stop(self, grace: float) -> None:
        if self._task is None:
            return
        self._stopping = True
        if self._invoking:
            await asyncio.wait([self._task], timeout=grace)
        self._task.cancel()
        await asyncio.wait([self._task])

    async def _run(self) -> None:
        if self.run_on_startup:
            await self._invoke(scheduled=self._clock())
        while not self._stopping:
            due = self.schedule.next_after(self._clock())
            # The loop's clock and the wall clock can disagree a little: never fire early.
            while (remaining := (due - self._clock()).total_seconds()) > 0:  # noqa: ASYNC110
                await asyncio.sleep(remaining)
            await self._invoke(scheduled=due)

    async def _invoke(self, scheduled: datetime) -> None:
        now = self._clock()
        status = {
            "Last": (self._last or now).isoformat(),
            "Next": self.schedule.next_after(now).isoformat(),
            "LastUpdated": now.isoformat(),
        }
        request = TimerRequest(
            past_due=now - scheduled > PAST_DUE_AFTER,
            schedule_status=status,
            schedule={"AdjustForDST": True},
        )
        self._invoking = True
        try:
            await self.invoker(request)
        except Exception:
            log.exception("%s failed; the timer goes on", self.invoker.name)
        finally:
            self._invoking = False
            self._last = now
