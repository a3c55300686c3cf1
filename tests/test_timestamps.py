"""Timestamps bounded on the way in, tolerated on the way out (issue 23, finding 6): an event
far from now goes to poison with its reason; query times outside the retention are a 400; a
record that cannot be read back (one written before the bound) is skipped and counted, never
a 500, in listings and in replays alike."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.events import EventStore, MalformedEvent, new_event
from shared.models.records import MessageStatus
from shared.services import Services
from shared.storage.clients import POISON_SUFFIX, SYSTEM_EVENTS_QUEUE
from shared.storage.logrecords import LoggedMessage
from tests.factories import PATH, a_connection, a_record, connect, records_of
from tests.plugins.app import Api

YEAR_ONE = datetime(1, 1, 1, tzinfo=UTC)


async def test_an_event_far_from_now_goes_to_poison_with_its_reason(
    api: Api, services: Services, account: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    stored = await services.connections.add(account, a_connection(), services.clock())
    queue = await services.storage.queue(SYSTEM_EVENTS_QUEUE)
    poison = await services.storage.queue(SYSTEM_EVENTS_QUEUE + POISON_SUFFIX)
    marker = uuid.uuid4().hex
    far = ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "2000-01-01T00:00:00+14:00"]
    for n, when in enumerate(far):
        event = {"EventId": f"{marker}-{n}", "AccountId": account, "EventKey": "Order.Shipped",
                 "EventTimestamp": when}  # fmt: skip
        await queue.send_message(base64.b64encode(json.dumps(event).encode()).decode())
    found: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(found) < len(far) and time.monotonic() < deadline:
        found = [base64.b64decode(m.content) for m in await poison.peek_messages(max_messages=32)]
        found = [f for f in found if marker.encode() in f]
        await asyncio.sleep(0.2)
    assert len(found) == len(far)
    assert "EventTimestamp" in caplog.text and "window" in caplog.text
    assert await records_of(services, stored) == []  # none was delivered


async def test_the_event_window_is_a_setting_around_the_injected_clock(services: Services) -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    events = EventStore(services.events.bodies, clock=lambda: now, window=timedelta(hours=2))
    inside = [now - timedelta(hours=2), now, now + timedelta(hours=2)]
    outside = [now - timedelta(hours=2, seconds=1), now + timedelta(hours=2, seconds=1)]
    for at in inside:
        assert (await events.from_payload(new_event("a", "Order.Shipped", at).to_json())).event_id
    for at in outside:
        with pytest.raises(MalformedEvent, match="EventTimestamp"):
            await events.from_payload(new_event("a", "Order.Shipped", at).to_json())


def year_one(record: LoggedMessage) -> LoggedMessage:
    """A record as one written before events were bounded: its EventTimestamp in year 1,
    which the Tables SDK writes but cannot read back."""
    message = record.message.model_copy(update={"event_timestamp": YEAR_ONE})
    return LoggedMessage(message, record.account, record.event_id, record.subject)


async def test_a_record_that_cannot_be_read_is_skipped_and_counted_never_a_500(
    api: Api, services: Services, account: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    now = services.clock()
    stored = await services.connections.add(account, a_connection(), now)
    good = [a_record(stored.uid, now - timedelta(minutes=n)) for n in range(1, 6)]
    bad = year_one(a_record(stored.uid, now - timedelta(minutes=3, seconds=30)))
    await services.messages.add(stored.log_partition, [*good, bad])
    listed: list[str] = []
    for page in (1, 2, 3):
        status, found = await api.call(
            "GET", f"{PATH}/{stored.uid}/messages", params={"page": page, "pageSize": 2}
        )
        assert status == 200, found
        listed += [m["Uid"] for m in found["Messages"]]
    assert listed == [str(r.message.uid) for r in good]
    assert "1 unreadable record" in caplog.text
    status, _ = await api.call("GET", f"{PATH}/{stored.uid}/messages/{bad.message.uid}")
    assert status == 404
    status, _ = await api.call("GET", f"{PATH}/{stored.uid}/stats")
    assert status == 200


async def test_a_replay_skips_a_record_it_cannot_read_and_finishes(
    api: Api,
    services: Services,
    account: str,
    servicebus_connection_string: str,
    unique_queue: str,
) -> None:
    now = services.clock()
    stored = await connect(services, account, servicebus_connection_string, unique_queue)
    failed = MessageStatus.FAILED
    records = [a_record(stored.uid, now - timedelta(minutes=n), failed) for n in range(1, 4)]
    records.append(year_one(a_record(stored.uid, now - timedelta(minutes=2, seconds=30), failed)))
    await services.messages.add(stored.log_partition, records)
    since = (now - timedelta(minutes=10)).isoformat()
    status, started = await api.call(
        "POST", f"{PATH}/{stored.uid}/messages/replay", {"Since": since}
    )
    assert status == 202 and started["Matched"] == 4, started
    replay: dict[str, Any] = {}
    deadline = time.monotonic() + 30
    while not replay.get("Done") and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        replay = (await api.call("GET", f"{PATH}/{stored.uid}/replays/{started['ReplayId']}"))[1]
    assert replay["Done"] and (replay["Sent"], replay["Failed"]) == (3, 0), replay


def times(now: datetime, **offsets: timedelta) -> dict[str, str]:
    return {name: (now + offset).isoformat() for name, offset in offsets.items()}


@pytest.mark.parametrize("route", ["messages", "stats"])
@pytest.mark.parametrize(
    ("query", "named"),
    [
        ({"until": "0001-01-01T00:00:00Z"}, "Until"),
        ({"since": "0001-01-01T00:00:00+01:00"}, "Since"),
        ({"until": "9999-12-31T23:59:59Z"}, "Until"),
        ({"since": "9999-12-31T23:59:59Z"}, "Since"),
        ("old", "Since"),
        ("ahead", "Until"),
    ],
)
async def test_query_times_outside_the_retention_are_400_naming_them(
    api: Api, services: Services, account: str, route: str, query: Any, named: str
) -> None:
    now = services.clock()
    if query == "old":  # past the 14 days and the day of grace for clocks
        query = times(now, since=-timedelta(days=15, hours=1), until=-timedelta(days=14, hours=6))
    elif query == "ahead":
        query = times(now, since=-timedelta(hours=1), until=timedelta(days=1, hours=1))
    stored = await services.connections.add(account, a_connection(), now)
    status, problem = await api.call("GET", f"{PATH}/{stored.uid}/{route}", params=query)
    assert status == 400 and list(problem["errors"]) == [named], problem


async def test_query_times_within_the_retention_answer(
    api: Api, services: Services, account: str
) -> None:
    now = services.clock()
    stored = await services.connections.add(account, a_connection(), now)
    query = times(now, since=-timedelta(days=14, hours=12), until=-timedelta(days=13))
    for route in ("messages", "stats"):
        status, found = await api.call("GET", f"{PATH}/{stored.uid}/{route}", params=query)
        assert status == 200, found
