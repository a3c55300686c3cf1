"""Timer schedules as Azure Functions reads them (NCRONTAB or TimeSpan) and their next occurrence.

Everything here is pure: `next_after` takes the current time and returns the next due time,
so schedules are tested without waiting.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

_MONTHS = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
        start=1,
    )
}
_DAYS_OF_WEEK = {
    name: number for number, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))
}
# Feb 29 on a given weekday can be 28 years away; NCrontab searches without a limit.
_SEARCH_YEARS = 60


class Schedule(Protocol):
    def next_after(self, moment: datetime) -> datetime:
        """The first due time strictly after `moment` (same tzinfo as `moment`)."""
        ...


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: Mapping[str, int]


_SECOND = _Field("second", 0, 59, {})
_MINUTE = _Field("minute", 0, 59, {})
_HOUR = _Field("hour", 0, 23, {})
_DAY = _Field("day", 1, 31, {})
_MONTH = _Field("month", 1, 12, _MONTHS)
# NCrontab: Sunday is 0 and 7 is refused, unlike some Unix crons.
_DAY_OF_WEEK = _Field("day of week", 0, 6, _DAYS_OF_WEEK)


def _value(text: str, field: _Field, expression: str) -> int:
    if text.isdigit():
        value = int(text)
    elif text.lower() in field.names:
        value = field.names[text.lower()]
    else:
        raise ValueError(f"{expression!r}: {text!r} is not a valid {field.name}")
    if not field.low <= value <= field.high:
        raise ValueError(
            f"{expression!r}: {field.name} {value} is outside {field.low}-{field.high}"
        )
    return value


def _parse_field(text: str, field: _Field, expression: str) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        range_text, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"{expression!r}: bad step in {part!r}")
            step = int(step_text)
        if range_text == "*":
            start, end = field.low, field.high
        elif "-" in range_text:
            first, _, last = range_text.partition("-")
            start, end = _value(first, field, expression), _value(last, field, expression)
            if start > end:
                raise ValueError(f"{expression!r}: range {range_text!r} runs backwards")
        else:
            start = _value(range_text, field, expression)
            # "a/n" means every n-th value from a to the end of the range, as in NCrontab.
            end = field.high if slash else start
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class CronSchedule:
    """A 6-field NCRONTAB schedule: `second minute hour day month day-of-week`.

    A 5-field expression (no seconds) is accepted too and fires at second 0, as the
    Functions timer extension does. Day of month and day of week must both match
    (NCrontab's rule, not Vixie cron's "either").
    """

    expression: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]

    @classmethod
    def parse(cls, expression: str) -> CronSchedule:
        fields = expression.split()
        if len(fields) == 5:
            fields = ["0", *fields]
        if len(fields) != 6:
            raise ValueError(f"{expression!r}: an NCRONTAB expression has 6 fields")
        kinds = (_SECOND, _MINUTE, _HOUR, _DAY, _MONTH, _DAY_OF_WEEK)
        sets = [
            _parse_field(text, kind, expression) for text, kind in zip(fields, kinds, strict=True)
        ]
        return cls(expression, *sets)

    def __str__(self) -> str:
        return self.expression

    def next_after(self, moment: datetime) -> datetime:
        # Jump whole months, days, hours and minutes that cannot match, then step seconds.
        candidate = moment.replace(microsecond=0) + timedelta(seconds=1)
        limit = candidate.replace(year=candidate.year + _SEARCH_YEARS, month=1, day=1)
        while candidate < limit:
            if candidate.month not in self.months:
                year = candidate.year + candidate.month // 12
                candidate = candidate.replace(
                    year=year, month=candidate.month % 12 + 1, day=1, hour=0, minute=0, second=0
                )
            elif (
                candidate.day not in self.days
                or candidate.isoweekday() % 7 not in self.days_of_week
            ):
                candidate = candidate.replace(hour=0, minute=0, second=0) + timedelta(days=1)
            elif candidate.hour not in self.hours:
                candidate = candidate.replace(minute=0, second=0) + timedelta(hours=1)
            elif candidate.minute not in self.minutes:
                candidate = candidate.replace(second=0) + timedelta(minutes=1)
            elif candidate.second not in self.seconds:
                candidate += timedelta(seconds=1)
            else:
                return candidate
        raise ValueError(f"{self.expression!r} never occurs")


@dataclass(frozen=True)
class IntervalSchedule:
    """A TimeSpan schedule (`hh:mm:ss` or `d.hh:mm:ss`): due every interval after the last run."""

    interval: timedelta

    def next_after(self, moment: datetime) -> datetime:
        return moment + self.interval

    def __str__(self) -> str:
        return str(self.interval)


_TIMESPAN = re.compile(r"(?:(\d+)\.)?(\d{1,2}):(\d{1,2}):(\d{1,2}(?:\.\d+)?)")


def parse_timespan(text: str) -> timedelta:
    """A .NET TimeSpan string as host.json and timers use it: `hh:mm:ss[.fff]`, `d.hh:mm:ss`."""
    match = _TIMESPAN.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a TimeSpan (hh:mm:ss)")
    days, hours, minutes, seconds = match.groups()
    return timedelta(
        days=int(days or 0), hours=int(hours), minutes=int(minutes), seconds=float(seconds)
    )


def parse_schedule(text: str) -> CronSchedule | IntervalSchedule:
    """A timer trigger's `schedule`: an NCRONTAB expression, or a TimeSpan such as `00:05:00`."""
    if _TIMESPAN.fullmatch(text.strip()):
        interval = parse_timespan(text)
        if interval <= timedelta(0):
            raise ValueError(f"{text!r}: a TimeSpan schedule must be positive")
        return IntervalSchedule(interval)
    return CronSchedule.parse(text)
