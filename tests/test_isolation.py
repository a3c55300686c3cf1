"""The parts of delivery isolation on their own: deadline, bulkheads, breaker, error types."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from typing import Any

import pytest

from shared.dispatch.errors import classify
from shared.dispatch.isolation import (
    Breaker,
    Breakers,
    BreakerState,
    Bulkhead,
    CircuitOpen,
    Deadline,
    DeliveryTimeout,
)
from shared.dispatch.outgoing import Outgoing
from shared.dispatch.servicebus import QueueSender, SenderPool


class Clock:
    """An injected monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ServiceBusConnectionError(Exception):
    """Stands in for the SDK's class of that name (the breaker goes by class names)."""


class ServiceBusAuthenticationError(Exception):
    """Stands in for the SDK's: the endpoint answered, with a refusal."""


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


async def test_a_bulkhead_holds_at_most_its_limit_per_key() -> None:
    bulkhead: Bulkhead[str] = Bulkhead(limit=2)
    first, second = bulkhead.try_enter("x"), bulkhead.try_enter("x")
    assert first and second
    assert bulkhead.try_enter("x") is None  # full
    assert bulkhead.try_enter("y") is not None  # other keys are not
    first.release()
    first.release()  # twice is once
    assert bulkhead.in_flight("x") == 1
    assert bulkhead.try_enter("x") is not None


async def test_entering_waits_for_a_released_slot() -> None:
    bulkhead: Bulkhead[uuid.UUID] = Bulkhead(limit=1)
    uid = uuid.uuid4()
    held = bulkhead.try_enter(uid)
    assert held is not None
    waiting = asyncio.create_task(bulkhead.enter(uid))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    held.release()
    with await asyncio.wait_for(waiting, 5):
        assert bulkhead.in_flight(uid) == 1
    assert bulkhead.in_flight(uid) == 0


async def test_a_wait_for_a_slot_given_up_leaves_nothing_behind() -> None:
    bulkhead: Bulkhead[str] = Bulkhead(limit=1)
    held = bulkhead.try_enter("x")
    assert held is not None
    with pytest.raises(DeliveryTimeout):
        async with Deadline(0.02).scope():
            await bulkhead.enter("x")
    held.release()
    assert bulkhead.in_flight("x") == 0


async def test_a_delivery_waits_for_room_only_while_the_holders_are_moving() -> None:
    clock = Clock()
    bulkhead: Bulkhead[str] = Bulkhead(limit=2, clock=clock)
    first, second = bulkhead.try_enter("x"), bulkhead.try_enter("x")
    assert first and second
    clock.now += 2
    assert bulkhead.still("x") == 2
    # Nobody let go for 2 s, with a patience of 2 s: stuck, so no waiting at all.
    assert await asyncio.wait_for(bulkhead.enter_unless_stuck("x", patience=2), 1) is None
    first.release()  # they move: the clock of stillness starts again
    third = bulkhead.try_enter("x")
    assert third is not None and bulkhead.still("x") == 0
    waiting = asyncio.create_task(bulkhead.enter_unless_stuck("x", patience=2))
    await asyncio.sleep(0.01)
    assert not waiting.done()  # waits, as a slot may come free any moment...
    second.release()
    slot = await asyncio.wait_for(waiting, 5)
    assert slot is not None and bulkhead.in_flight("x") == 2
    # ...but only until the holders would have stood still for `patience`.
    assert await bulkhead.enter_unless_stuck("x", patience=0.05) is None
    assert await bulkhead.enter_unless_stuck("y", patience=0) is not None  # room: no wait


def test_the_breaker_opens_after_k_failures_and_lets_one_probe_after_the_cool_down() -> None:
    clock = Clock()
    breaker = Breaker(failures=3, cool_down=30, clock=clock)
    for _ in range(2):
        assert breaker.admit()
        breaker.record(DeliveryTimeout("slow"))
    assert breaker.state == BreakerState.CLOSED
    breaker.record(ServiceBusConnectionError("refused"))
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
    breaker.record(ServiceBusAuthenticationError("bad key"))
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
