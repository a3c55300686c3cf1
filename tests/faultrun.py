"""Proof that nothing is lost, counted where the customer counts: at the receiver.

- `Ledger`: every delivery a run owes (an event times each matching connection, known by its
  message_id) and what the subscribers got: what is missing, what came twice, and anything
  that came under another message_id (a repeat must carry the same one).
- `Stack`: Azurite on disk, the Service Bus emulator with its journal and the app in the
  local host, each a process that a fault run kills or restarts on the same ports and data.
- `fault_run`: events flow to several connections while, at seeded random moments, the host
  and the emulator are killed (SIGKILL) and Azurite is restarted (SIGTERM); then the run
  waits for every delivery. Used by tests/test_fault_run.py (small) and
  `python -m bench.bench_faults` (500 events).

Why Azurite gets SIGTERM and not SIGKILL: Azurite keeps its state in memory and saves it to
disk every 5 s, so a SIGKILL loses writes it had already confirmed (tables and queues to
different moments). Azure Storage confirms a write only once it is durable, so that loss
would be Azurite's, not something the app can or should survive. On SIGTERM Azurite saves
before it exits: what it confirmed is there after the restart, as in Azure.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from local.azurite import Azurite, start_azurite
from local.process import EmulatorProcess, HostProcess, start_emulator_process, start_host_process
from shared.crypto import KeyRing
from shared.dispatch import outgoing
from shared.events import new_event
from shared.models.events import SystemEvent
from shared.services import Services
from shared.settings import Settings, StorageTarget
from shared.storage.clients import REPLAY_QUEUE, RETRY_QUEUE, SYSTEM_EVENTS_QUEUE
from tests.factories import a_connection
from tests.servicebus_helpers import Subscriber


@dataclass(frozen=True)
class Target:
    """A connection that events go to, and the queue its subscriber reads."""

    account: str
    uid: uuid.UUID
    queue: str
    connection_string: str  # of the namespace (emulator) the queue is in


async def connect_targets(
    services: Services, connection_string: str, accounts: Mapping[str, int], **changes: Any
) -> list[Target]:
    """`accounts[a]` connections for each account a, each to a queue of its own, taking
    every event (saved as the API saves them, without the verification send); `changes`
    are API property names of the connection."""
    targets = []
    for account, count in accounts.items():
        for _ in range(count):
            queue = f"q-{uuid.uuid4().hex[:10]}"
            connection = a_connection(
                ServiceBusConnectionString=connection_string, QueueName=queue, **changes
            )
            stored = await services.connections.add(account, connection, services.clock())
            targets.append(Target(account, stored.uid, queue, connection_string))
    return targets


class Ledger:
    """What a run owes its subscribers, and what they received."""

    def __init__(self, targets: Sequence[Target]) -> None:
        self.targets = list(targets)
        self.owed: dict[str, Target] = {}  # by message_id
        self.event_of: dict[str, str] = {}
        self.copies: Counter[str] = Counter()
        self.strays: list[str] = []

    def owe(self, event: SystemEvent) -> None:
        for target in self.targets:
            if target.account == event.account_id:
                mid = outgoing.message_id(event.account_id, event.event_id, target.uid)
                self.owed[mid], self.event_of[mid] = target, event.event_id

    def got(self, queue: str, message: Any) -> None:
        mid = str(message.message_id)
        target = self.owed.get(mid)
        if target is None or target.queue != queue or message.correlation_id != self.event_of[mid]:
            self.strays.append(f"{queue}: message_id {mid}, EventId {message.correlation_id}")
        else:
            self.copies[mid] += 1

    @property
    def missing(self) -> list[str]:
        return [mid for mid in self.owed if not self.copies[mid]]

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.copies.values())

    async def collect(
        self, timeout: float, settled: Callable[[], Awaitable[bool]] | None = None
    ) -> float:
        """Read every target's queue until nothing owed is missing and the app is `settled`
        (its queues empty: nothing more will come), or `timeout` passes; then on until a
        round brings nothing. The seconds until then."""
        started = time.monotonic()
        async with AsyncExitStack() as stack:
            readers = {
                t.queue: await stack.enter_async_context(Subscriber(t.connection_string, t.queue))
                for t in self.targets
            }
            while time.monotonic() < started + timeout and (
                self.missing or (settled is not None and not await settled())
            ):
                await self._round(readers)
            drained = time.monotonic()
            while await self._round(readers) and time.monotonic() < drained + 10:
                pass
        return drained - started

    async def _round(self, readers: dict[str, Subscriber]) -> int:
        """Read each queue for half a second; how many messages came."""
        batches = await asyncio.gather(*(r.receive(500, timeout=0.5) for r in readers.values()))
        for queue, batch in zip(readers, batches, strict=True):
            for message in batch:
                self.got(queue, message)
        return sum(map(len, batches))


def settled(services: Services) -> Callable[[], Awaitable[bool]]:
    """Whether the app's queues are empty (visible or hidden): every event dispatched, no
    retry or replay run waiting, nothing held by a host that died."""

    async def check() -> bool:
        for name in (SYSTEM_EVENTS_QUEUE, RETRY_QUEUE, REPLAY_QUEUE):
            queue = await services.storage.queue(name)
            if (await queue.get_queue_properties()).approximate_message_count:
                return False
        return True

    return check


def host_environment(storage: str, keys: str, **settings: str) -> dict[str, str]:
    """The app's settings for a host process of a crash test or a fault run: local endpoints,
    no rate limits, and a retry schedule of seconds."""
    return {
        "AzureWebJobsStorage": storage,
        "ENCRYPTION_KEYS": keys,
        "ALLOW_LOCAL_ENDPOINTS": "true",
        "LIMIT_REQUEST_BURST": "1000000",
        "LIMIT_SEND_BURST": "1000000",
        "DELIVERY_RETRY_DELAYS": "1,2,3,5,8",
        "DELIVERY_ATTEMPT_TIMEOUT_SECONDS": "5",
        "CIRCUIT_BREAKER_COOL_DOWN_SECONDS": "1",
        **settings,
    }


async def open_services(storage: str, keys: str) -> Services:
    """Services of this process on another storage account than the test session's."""
    settings = Settings(StorageTarget(storage), keys, allow_local_endpoints=True)
    return await Services.open(settings)


LEASE_SECONDS = 3  # how long a killed host's messages stay hidden (the Functions host: 10 min)


@dataclass
class Stack:
    """Azurite (on disk), the emulator (journalled) and the app's host, in processes."""

    workdir: Path
    settings: dict[str, str] = field(default_factory=dict)
    azurite: Azurite | None = None
    emulator: EmulatorProcess | None = None
    host: HostProcess | None = None
    keys: str = field(default_factory=lambda: KeyRing.new_key_spec("faults"))
    host_logs: list[Path] = field(default_factory=list)

    def start(self) -> Stack:
        self.azurite = start_azurite(in_memory=False, location=self.workdir / "azurite")
        self.emulator = start_emulator_process(data_dir=self.workdir / "servicebus")
        self.start_host()
        return self

    @property
    def storage(self) -> str:
        assert self.azurite is not None
        return self.azurite.connection_string

    @property
    def servicebus(self) -> str:
        assert self.emulator is not None
        return self.emulator.connection_string

    def start_host(self) -> None:
        env = host_environment(self.storage, self.keys, **self.settings)
        lease = ["--message-lease", str(LEASE_SECONDS)]
        self.host = start_host_process("function_app:app", env=env, args=lease, timeout=60)
        self.host_logs.append(self.host.log_path)

    def kill_host(self) -> None:
        assert self.host is not None
        self.host.kill()

    def kill_emulator(self) -> None:
        assert self.emulator is not None
        self.emulator.kill()

    def start_emulator(self) -> None:
        assert self.emulator is not None
        self.emulator = start_emulator_process(self.emulator.port, self.emulator.data_dir)

    def stop_azurite(self) -> None:
        assert self.azurite is not None
        self.azurite.stop()  # SIGTERM: it saves what it confirmed (module docstring)

    def start_azurite(self) -> None:
        assert self.azurite is not None
        a = self.azurite
        ports = (a.blob_port, a.queue_port, a.table_port)
        self.azurite = start_azurite(ports=ports, in_memory=False, location=a.workdir)

    def errors(self) -> str:
        """The host logs' error lines, for a failed run's message."""
        lines = [
            line
            for path in self.host_logs
            if path.exists()
            for line in path.read_text(errors="replace").splitlines()
            if " ERROR " in line or " CRITICAL " in line
        ]
        return "\n".join(lines[-40:])

    def stop(self) -> None:
        for part in (self.host, self.emulator):
            if part is not None:
                part.kill()
        if self.azurite is not None:
            self.azurite.stop()
        for path in self.host_logs:
            path.unlink(missing_ok=True)


# A fault: what to stop (then start again after a seeded pause).
FAULTS: dict[str, tuple[Callable[[Stack], None], Callable[[Stack], None]]] = {
    "kill the host": (Stack.kill_host, Stack.start_host),
    "kill the emulator": (Stack.kill_emulator, Stack.start_emulator),
    "restart Azurite": (Stack.stop_azurite, Stack.start_azurite),
}


@dataclass
class FaultRunResult:
    seed: int
    events: int
    owed: int
    lost: list[str]
    duplicates: int
    strays: list[str]
    drain_seconds: float
    faults: list[str]
    errors: str = ""


def fault_schedule(rng: random.Random, faults: int, seconds: float) -> list[tuple[float, str]]:
    """(when, which) for `faults` faults within `seconds`: each kind at least once (when
    there are as many faults as kinds), the rest drawn, in a seeded order."""
    kinds = list(FAULTS)[:faults] + [rng.choice(list(FAULTS)) for _ in range(faults - len(FAULTS))]
    rng.shuffle(kinds)
    moments = sorted(rng.uniform(0.5, seconds) for _ in kinds)
    return list(zip(moments, kinds, strict=True))


async def fault_run(
    workdir: Path,
    events: int,
    seed: int,
    faults: int = 3,
    events_per_second: float = 20.0,
    drain_timeout: float = 180.0,
    say: Callable[[str], None] = print,
) -> FaultRunResult:
    """Publish `events` at a steady rate to two accounts (two connections and one) while
    the faults of a seeded schedule happen; then wait for every delivery."""
    rng = random.Random(seed)
    stack = Stack(workdir).start()
    services = await open_services(stack.storage, stack.keys)
    try:
        targets = await connect_targets(services, stack.servicebus, {"fault-a": 2, "fault-b": 1})
        ledger = Ledger(targets)
        seconds = events / events_per_second
        schedule = fault_schedule(rng, faults, seconds)
        say(f"seed {seed}: {events} events over {seconds:.0f} s; faults {schedule}")
        started = time.monotonic()
        await asyncio.gather(
            _publish(services, ledger, events, events_per_second, started),
            _faults(stack, schedule, rng, started, say),
        )
        say(f"published and faults done after {time.monotonic() - started:.1f} s; draining")
        drain = await ledger.collect(drain_timeout, settled(services))
        missing = ledger.missing
        return FaultRunResult(
            seed, events, len(ledger.owed), missing, ledger.duplicates, ledger.strays, drain,
            [kind for _, kind in schedule], stack.errors() if missing or ledger.strays else "",
        )  # fmt: skip
    finally:
        await services.close()
        stack.stop()


async def _publish(
    services: Services, ledger: Ledger, events: int, rate: float, started: float
) -> None:
    """As a platform would: each event until the queue took it (it may take it twice, when
    an answer is lost; the same EventId then brings the same message_ids)."""
    accounts = sorted({t.account for t in ledger.targets})
    for n in range(events):
        await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
        event = new_event(accounts[n % len(accounts)], "Order.Created", services.clock(),
                          subject=f"orders/{n}", data={"N": n})  # fmt: skip
        ledger.owe(event)
        while True:
            try:
                await services.publish(event)
                break
            except Exception:  # Azurite is restarting: the platform tries again
                await asyncio.sleep(0.2)


async def _faults(
    stack: Stack,
    schedule: list[tuple[float, str]],
    rng: random.Random,
    started: float,
    say: Callable[[str], None],
) -> None:
    for moment, kind in schedule:
        await asyncio.sleep(max(0.0, started + moment - time.monotonic()))
        stop, start = FAULTS[kind]
        pause = rng.uniform(0.2, 1.5)
        await asyncio.to_thread(stop, stack)
        await asyncio.sleep(pause)
        await asyncio.to_thread(start, stack)
        say(f"{time.monotonic() - started:6.1f} s: {kind}, back after {pause:.1f} s")
