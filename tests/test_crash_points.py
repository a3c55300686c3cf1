"""Nothing is lost at any crash point (docs/API.md, "Delivery guarantees").

One test per fail point of shared/failpoints.py. Each runs the app in a host process
(`python -m local.host`, as `make run` does) with the point armed to crash the process
(`os._exit`, as SIGKILL leaves things), publishes events to several connections, checks
that the process died there, restarts it without the point, and reads every queue: each
delivery (event x connection) arrived, and every copy carries its delivery's message_id.
The messages a dead host held come back after its lease (LEASE_SECONDS, as the Functions
host's come back after theirs); retries come back after the test schedule of seconds.
"""

from __future__ import annotations

import asyncio
import base64
import re
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from local.azurite import start_azurite
from local.process import HostProcess
from local.servicebus.emulator import Emulator
from shared import failpoints
from shared.crypto import KeyRing
from shared.events import new_event
from shared.failpoints import CRASH_EXIT_CODE, POINTS, FailPointError, failpoint
from shared.models.replays import ReplayRequest
from shared.service import replays as replay
from shared.services import Services
from shared.storage.clients import SYSTEM_EVENTS_QUEUE
from shared.storage.replays import ReplayRow
from tests.factories import eventually
from tests.faultrun import (
    LEASE_SECONDS,
    Ledger,
    Target,
    connect_targets,
    host_environment,
    settled,
)
from tests.faultrun import open_services as services_on

ROOT = Path(__file__).resolve().parent.parent
HostFactory = Callable[..., HostProcess]
EmulatorFactory = Callable[..., Emulator]
EVENTS = 24


@dataclass
class Storage:
    """An Azurite of this module's own (no other host takes its events), with Services."""

    connection_string: str
    services: Services
    keys: str


@pytest.fixture(scope="module")
async def storage() -> AsyncIterator[Storage]:
    azurite = start_azurite()
    keys = KeyRing.new_key_spec("crash")
    services = await services_on(azurite.connection_string, keys)
    yield Storage(azurite.connection_string, services, keys)
    await services.close()
    azurite.stop()


class Run:
    """One crash test's parts: this module's storage, emulators of its own, host processes
    started with or without the point, events published."""

    def __init__(self, storage: Storage, hosts: HostFactory, emulators: EmulatorFactory) -> None:
        self.storage, self.services = storage, storage.services
        self._hosts, self.emulator = hosts, emulators
        # Settings of the hosts it starts, besides the common ones (host_environment).
        self.settings: dict[str, str] = {"REPLAY_RECORDS_PER_SECOND": "0"}

    async def targets(
        self, emulator: Emulator, accounts: dict[str, int] | None = None, /, **changes: Any
    ) -> list[Target]:
        """Connections to queues of `emulator`: by default three, of two accounts of the
        test's own."""
        if accounts is None:
            first, second = (f"crash-{uuid.uuid4().hex[:8]}" for _ in range(2))
            accounts = {first: 2, second: 1}
        return await connect_targets(self.services, emulator.connection_string, accounts, **changes)

    def host(self, armed: str = "") -> HostProcess:
        env = host_environment(self.storage.connection_string, self.storage.keys, **self.settings)
        env = {**env, failpoints.SETTING: armed} if armed else env
        lease = ["--message-lease", str(LEASE_SECONDS)]
        return self._hosts("function_app:app", env=env, args=lease)

    async def publish(self, ledger: Ledger, count: int, data: object = None) -> None:
        accounts = sorted({t.account for t in ledger.targets})
        for n in range(count):
            account = accounts[n % len(accounts)]
            event = new_event(account, "Order.Created", self.services.clock(), f"orders/{n}", data)
            ledger.owe(event)
            await self.services.publish(event)

    async def crash(self, point: str, at: int = 1) -> None:
        """Start a host armed to crash at `point` on its `at`th pass; wait until it did."""
        host = self.host(f"{point}=crash@{at}")
        try:
            code = await asyncio.to_thread(host.process.wait, 90)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the host never reached {point}:\n{host.output()[-4000:]}")
        assert code == CRASH_EXIT_CODE, host.output()[-4000:]
        assert f"fail point {point}: crash (pass {at})" in host.output()

    async def recover(self, ledger: Ledger) -> None:
        """A host without the point; every delivery arrives, each copy under its id."""
        self.host()
        await ledger.collect(timeout=90, settled=settled(self.services))
        assert ledger.missing == [] and ledger.strays == []

    async def crash_and_recover(self, point: str) -> Ledger:
        """The common case: EVENTS events to three healthy connections whose sends take
        0.2 s (so the host dies with deliveries still waiting for theirs); the host dies at
        its first pass of `point`, a new one finishes the work."""
        emulator = self.emulator()
        emulator.delay_sends(200)
        ledger = Ledger(await self.targets(emulator))
        await self.publish(ledger, EVENTS)
        await self.crash(point)
        emulator.delay_sends(0)
        await self.recover(ledger)
        return ledger


@pytest.fixture
def run(
    storage: Storage,
    local_host_process_factory: HostFactory,
    servicebus_emulator_factory: EmulatorFactory,
) -> Run:
    return Run(storage, local_host_process_factory, servicebus_emulator_factory)


async def test_after_send(run: Run) -> None:
    # Sent, not recorded: the event comes back and is sent again (same message_id).
    await run.crash_and_recover("after-send")


async def test_after_record(run: Run) -> None:
    await run.crash_and_recover("after-record")


async def test_before_complete(run: Run) -> None:
    # Every delivery of the event done and durable, the queue message not deleted: it comes
    # back after the lease and finds each delivery with its outcome (the ledger: none missing,
    # any copy under its delivery's id).
    await run.crash_and_recover("before-complete")


async def test_after_retry(run: Run) -> None:
    # One connection's queue does not exist yet (a Configuration failure, retried): its
    # deliveries fail, are recorded, their retries queued, and the host dies after one.
    strict = run.emulator(strict=True)
    targets = await run.targets(run.emulator())
    targets += await run.targets(strict, {targets[0].account: 1})
    ledger = Ledger(targets)
    await run.publish(ledger, EVENTS)
    await run.crash("after-retry", 2)
    strict.add_queue(targets[-1].queue)  # the customer creates the queue
    await run.recover(ledger)


async def test_after_defer(run: Run) -> None:
    # A bulkhead of one attempt per connection, behind sends that take 0.4 s: deliveries
    # go back on the retry queue (same attempt, no record), and the host dies after one.
    emulator = run.emulator()
    emulator.delay_sends(400)
    # (both patiences short: a destination that answered waits DELIVERY_BULKHEAD_SLOW_SECONDS)
    busy = {
        "DELIVERY_MAX_IN_FLIGHT_PER_CONNECTION": "1",
        "DELIVERY_BULKHEAD_WAIT_SECONDS": "0.05",
        "DELIVERY_BULKHEAD_SLOW_SECONDS": "0.05",
    }
    run.settings.update(busy)
    ledger = Ledger(await run.targets(emulator))
    await run.publish(ledger, EVENTS)
    await run.crash("after-defer")
    emulator.delay_sends(0)
    for setting in busy:  # the next host has the usual bulkheads
        del run.settings[setting]
    await run.recover(ledger)


async def test_after_claim_upload(run: Run) -> None:
    # Bodies over the queue's 4 KB limit go by claim check: the host dies with a body in
    # the customer's container and its reference not sent.
    container = {
        "BlobContainerConnectionString": run.storage.connection_string,
        "BlobContainerName": f"claims-{uuid.uuid4().hex[:8]}",
    }
    ledger = Ledger(await run.targets(run.emulator(max_message_size=4096), **container))
    await run.publish(ledger, 12, data={"Text": "x" * 6000})
    await run.crash("after-claim-upload", 2)
    await run.recover(ledger)


async def test_after_poison(run: Run) -> None:
    # A malformed event is copied to system-events-poison; the host dies before the
    # original is deleted. It is copied again, the events beside it are all delivered.
    ledger = Ledger(await run.targets(run.emulator()))
    await run.publish(ledger, 6)
    tag = uuid.uuid4().hex
    queue = await run.services.storage.queue(SYSTEM_EVENTS_QUEUE)
    await queue.send_message(base64.b64encode(f'{{"Malformed": "{tag}"}}'.encode()).decode())
    await run.publish(ledger, 6)
    await run.crash("after-poison")
    await run.recover(ledger)
    poison = await run.services.storage.queue(SYSTEM_EVENTS_QUEUE + "-poison")
    bodies = [base64.b64decode(m.content) for m in await poison.peek_messages(max_messages=32)]
    assert any(tag.encode() in body for body in bodies)


async def test_replay_chunk_sent(run: Run) -> None:
    # Two replays of delivered events: the host dies after a chunk's sends, before its
    # counts are written. The chunk is sent again; each replay still counts each once.
    services = run.services
    targets = await run.targets(run.emulator(), {f"crash-{uuid.uuid4().hex[:8]}": 2})
    first = Ledger(targets)
    since = services.clock() - timedelta(seconds=1)
    await run.publish(first, 10)
    host = run.host()
    await first.collect(timeout=60)
    assert first.missing == []
    host.stop()
    stored = [await services.connections.get(t.account, t.uid) for t in targets]
    window = (since, services.clock())
    for connection in stored:  # its records are written after its sends
        await eventually(recorded(services, connection.log_partition, window, 10))

    again = Ledger(targets)
    again.owed, again.event_of = dict(first.owed), dict(first.event_of)
    request = ReplayRequest(since=since, until=window[1], only_failed=False)
    started = [await replay.start(services, c, request, services.clock()) for c in stored]
    assert [s.matched for s in started] == [10, 10]
    await run.crash("replay-chunk-sent")
    await run.recover(again)
    for connection, replay_started in zip(stored, started, strict=True):
        row = await eventually(
            finished(services, connection.log_partition, replay_started.replay_id)
        )
        assert (row.sent, row.failed) == (10, 0)  # counted once, though sent twice


def recorded(
    services: Services, partition: str, window: tuple[datetime, datetime], expected: int
) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await services.messages.count_first_attempts(partition, window) >= expected

    return check


def finished(services: Services, partition: str, replay_id: UUID) -> Callable[[], Awaitable[Any]]:
    async def check() -> ReplayRow | None:
        row = await services.replays.get(partition, replay_id)
        return row if row.done else None

    return check


# ---------------------------------------------------- the points themselves, in process


def test_each_point_is_one_line_in_the_code_and_has_a_test() -> None:
    sources = [*ROOT.glob("shared/**/*.py"), *ROOT.glob("local/**/*.py")]
    sources.remove(ROOT / "shared" / "failpoints.py")  # (its docstring shows one)
    calls = [m for p in sources for m in re.findall(r'failpoint\("([a-z-]+)"\)', p.read_text())]
    assert sorted(calls) == sorted(POINTS)  # each once, none unknown
    tested = {
        name.removeprefix("test_").replace("_", "-")
        for name in globals()
        if name.startswith("test_")
    }
    assert set(POINTS) <= tested


def test_points_are_armed_only_with_the_local_flag_and_never_by_infra(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(PermissionError):
        failpoints.arm("after-send=crash", environ={})
    failpoints.arm_from_environment({failpoints.SETTING: "after-send=crash"})
    assert "FAILPOINTS is set and ignored" in caplog.text
    failpoint("after-send")  # not armed: nothing happens
    for path in [*ROOT.glob("infra/**/*.bicep"), *ROOT.glob("infra/*.json")]:
        assert failpoints.SETTING not in path.read_text(), path


def test_a_point_raises_at_its_pass_and_a_wrong_spec_is_refused() -> None:
    local = {"ALLOW_LOCAL_ENDPOINTS": "true"}
    try:
        failpoints.arm("after-record=raise@2", environ=local)
        failpoint("after-record")  # the first pass goes by
        failpoint("after-send")  # another point is not armed
        with pytest.raises(FailPointError):
            failpoint("after-record")
        failpoint("after-record")  # only the second pass
    finally:
        failpoints.disarm()
    for wrong in ("after-sned=crash", "after-send=explode", "after-send=crash@0"):
        with pytest.raises(ValueError, match="FAILPOINTS"):
            failpoints.arm(wrong, environ=local)


async def test_the_first_burst_of_invocations_shares_one_dispatcher(storage: Storage) -> None:
    # Found by test_after_defer: invocations that started together each made a dispatcher,
    # so each had bulkheads and senders of its own (and all but one were never closed).
    services = await services_on(storage.connection_string, storage.keys)
    try:
        made = await asyncio.gather(*(services.dispatcher() for _ in range(8)))
        assert all(dispatcher is made[0] for dispatcher in made)
    finally:
        await services.close()
