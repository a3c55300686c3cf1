"""The parts of delivery isolation on their own: deadline, breaker, error types, the sender's
readiness (the bulkheads: tests/test_bulkhead.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from azure.servicebus.exceptions import ServiceBusAuthenticationError, ServiceBusConnectionError

from local.blackhole import BlackHole
from local.servicebus.emulator import Emulator
from shared.dispatch.errors import classify
from shared.dispatch.isolation import (
    Breaker,
    Breakers,
    BreakerState,
    CircuitOpen,
    Deadline,
    DeliveryTimeout,
)
from shared.dispatch.outgoing import Outgoing
from shared.dispatch.servicebus import QueueSender, SenderPool
from shared.endpoints import ConnectGuard


class Clock:
    """An injected monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_deadline_cuts_off_what_runs_inside_and_says_timeout() -> None:
    deadline = Deadline(0.05)
    with pytest.raises(DeliveryTimeout, match=r"within 0\.05 s"):
        async with deadline.scope():
            await asyncio.sleep(30)
    assert deadline.remaining() == 0


async def test_a_timeout_of_the_sdks_own_before_the_deadline_is_left_as_it_is() -> None:
    with pytest.raises(TimeoutError) as raised:
        async with Deadline(30).scope():
            raise TimeoutError("the SDK's own")
    assert not isinstance(raised.value, DeliveryTimeout)


def test_the_breaker_opens_after_k_failures_and_lets_one_probe_after_the_cool_down() -> None:
    clock = Clock()
    breaker = Breaker(failures=3, cool_down=30, clock=clock)
    for _ in range(2):
        assert breaker.admit()
        breaker.record(DeliveryTimeout("slow"))
    assert breaker.state == BreakerState.CLOSED
    breaker.record(ServiceBusConnectionError(message="refused"))
    assert breaker.state == BreakerState.OPEN
    assert not breaker.admit()
    assert "next probe in 30 s" in str(breaker.open_error())

    clock.now += 29.9
    assert not breaker.admit()
    clock.now += 0.1
    assert breaker.admit()  # the probe
    assert breaker.state == BreakerState.HALF_OPEN
    assert not breaker.admit()  # only one
    breaker.record(DeliveryTimeout("still slow"))
    assert breaker.state == BreakerState.OPEN and not breaker.admit()

    clock.now += 30
    assert breaker.admit()
    breaker.record(None)
    assert breaker.state == BreakerState.CLOSED and breaker.failures == 0
    assert breaker.admit() and breaker.admit()


def test_a_probe_that_never_reports_is_replaced_after_another_cool_down() -> None:
    clock = Clock()
    breaker = Breaker(failures=1, cool_down=10, clock=clock)
    breaker.record(DeliveryTimeout("slow"))
    clock.now += 10
    assert breaker.admit()  # a probe whose process then dies
    clock.now += 9
    assert not breaker.admit()
    clock.now += 1
    assert breaker.admit()


def test_an_answer_from_the_endpoint_even_a_refusal_resets_the_count() -> None:
    breaker = Breaker(failures=2, cool_down=10, clock=Clock())
    breaker.record(DeliveryTimeout("slow"))
    breaker.record(ServiceBusAuthenticationError(message="bad key"))
    breaker.record(DeliveryTimeout("slow"))
    assert breaker.state == BreakerState.CLOSED
    breaker.record(asyncio.CancelledError())  # our own shutdown: says nothing
    assert breaker.failures == 1
    breaker.record(OSError("connection reset"))
    assert breaker.state == BreakerState.OPEN


def test_breakers_report_the_connections_that_are_not_closed() -> None:
    breakers = Breakers(failures=1, cool_down=10, clock=Clock())
    dead, fine = uuid.uuid4(), uuid.uuid4()
    breakers.get(dead).record(DeliveryTimeout("slow"))
    breakers.get(fine).record(None)
    assert breakers.get(dead) is breakers.get(dead)
    assert breakers.states() == {dead: BreakerState.OPEN}


def test_timeout_and_circuit_open_are_transient_with_their_own_types() -> None:
    timeout = classify(DeliveryTimeout("the attempt did not finish within 30 s"))
    assert (timeout.category, timeout.type) == ("Transient", "Timeout")
    assert timeout.message == "the attempt did not finish within 30 s"
    circuit = classify(CircuitOpen("5 consecutive attempts timed out"), secrets=["consecutive"])
    assert (circuit.category, circuit.type) == ("Transient", "CircuitOpen")
    assert circuit.message == "5 *** attempts timed out"  # scrubbed like any other


class DeafSender(QueueSender):
    """A sender whose send ignores cancellation, as an SDK that swallowed it would (no real
    SDK here does, so the sender's send is replaced; the pool and deadlines are real)."""

    stuck_after = 0.05

    def __init__(self, connection_string: str, queue: str, *args: Any) -> None:
        super().__init__(connection_string, queue, *args)
        self.let_go = asyncio.Event()

    async def _send_all(
        self, messages: Sequence[Outgoing], deadline: Deadline
    ) -> list[BaseException | None]:
        async with deadline.scope():  # as the real one: the deadline cancels what is inside
            while not self.let_go.is_set():
                with contextlib.suppress(asyncio.CancelledError):
                    await self.let_go.wait()
        return [None] * len(messages)


async def test_a_sender_whose_send_ignores_the_deadline_is_replaced() -> None:
    pool = SenderPool(make=DeafSender)
    deaf = pool.get("Endpoint=sb://127.0.0.1:1", "q")
    assert isinstance(deaf, DeafSender)
    message = Outgoing(b"{}", "id", "Order.Created", "e1", "2026-12-01T00:00:00Z", "a", False)
    deadline = Deadline(0.02)
    with pytest.raises(DeliveryTimeout):  # the delivery does not wait for the deaf flush
        async with deadline.scope():
            await deaf.send(message, deadline)
    assert pool.get("Endpoint=sb://127.0.0.1:1", "q") is deaf  # not yet given up on
    await asyncio.sleep(0.1)
    fresh = pool.get("Endpoint=sb://127.0.0.1:1", "q")
    assert fresh is not deaf and not fresh.stuck
    deaf.let_go.set()
    await pool.close()


async def test_a_sender_tells_a_link_being_opened_from_a_black_hole(
    servicebus_emulator: Emulator, unique_queue: str, black_hole: BlackHole
) -> None:
    """What the bulkheads read (shared/dispatch/bulkhead.py): whether the peer answered, from
    the SDK's own record of its last frame, a private attribute of the pinned azure-servicebus;
    an upgrade that moves it fails here rather than making every opening look like a black
    hole."""
    guard = ConnectGuard(allow_local=True)
    live = QueueSender(servicebus_emulator.connection_string, unique_queue, guard)
    hole = QueueSender(black_hole.connection_string, "orders", guard)
    message = Outgoing(b"{}", "id", "Order.Created", "e1", "2026-12-01T00:00:00Z", "a", False)
    try:
        assert not live.ready and not live.answered and live.heard() == 0
        started = time.monotonic()
        await live.send(message, Deadline(10))
        assert live.ready and live.answered and started < live.heard() <= time.monotonic()
        started = time.monotonic()
        with pytest.raises(DeliveryTimeout):
            await hole.send(message, Deadline(0.5))
        assert not hole.ready and not hole.answered
        assert hole.heard() <= started + 0.1  # asked to open its link, and no more since
    finally:
        await live.close()
        await hole.close()
    assert not live.ready  # a closed link is no longer open
