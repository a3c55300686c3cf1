"""The bulkhead on its own: a limit per key, waiting in turn, one waiter woken per released
place, one timer per key, and waiting only while the holders or their destination move."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shared.dispatch.bulkhead import Bulkhead, Patience, Slot
from shared.dispatch.isolation import Deadline, DeliveryTimeout, Isolation
from shared.settings import IsolationSettings


class Clock:
    """An injected monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Destination:
    """A destination as the bulkhead sees it: whether its link is open, when it last answered
    (a QueueSender in the product; tests/test_isolation.py checks the real one)."""

    def __init__(self, clock: Clock | None = None, ready: bool = False) -> None:
        self.clock = clock or time.monotonic
        self.ready = ready
        self.last_answer = 0.0

    def answers(self) -> None:
        self.last_answer = self.clock()

    @property
    def answered(self) -> bool:
        return self.last_answer > 0

    def heard(self) -> float:
        return self.last_answer


def both(seconds: float) -> Patience:
    return Patience(seconds, seconds)


@pytest.fixture
async def timers() -> AsyncIterator[list[float]]:
    """The delays of every timer a bulkhead asks the event loop for while the test runs (the
    loop may also serve other tests' background tasks: their timers are not counted)."""
    loop = asyncio.get_running_loop()
    asked: list[float] = []
    call_later = loop.call_later

    def counting(delay: float, callback: Any, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        if isinstance(getattr(callback, "__self__", None), Bulkhead):
            asked.append(delay)
        return call_later(delay, callback, *args, **kwargs)

    loop.call_later = counting  # type: ignore[method-assign,assignment]
    yield asked
    loop.call_later = call_later  # type: ignore[method-assign]


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


async def test_waiters_get_released_places_in_turn_one_each() -> None:
    bulkhead: Bulkhead[str] = Bulkhead(limit=1)
    held = bulkhead.try_enter("x")
    assert held is not None
    waiting = [asyncio.create_task(bulkhead.enter("x")) for _ in range(5)]
    await asyncio.sleep(0.01)
    assert bulkhead.waiting("x") == 5
    assert bulkhead.try_enter("x") is None  # nobody jumps the line
    slots: list[Slot] = []
    held.release()
    assert bulkhead.try_enter("x") is None  # the place went to the first waiter at once
    for n, task in enumerate(waiting):
        slots.append(await asyncio.wait_for(task, 5))  # the next in line, and only it
        await asyncio.sleep(0.01)
        assert [t.done() for t in waiting] == [True] * (n + 1) + [False] * (4 - n)
        assert bulkhead.in_flight("x") == 1 and bulkhead.waiting("x") == 4 - n
        slots[-1].release()
    assert bulkhead.in_flight("x") == 0 and bulkhead.waiting("x") == 0


async def test_a_wait_given_up_leaves_nothing_behind() -> None:
    bulkhead: Bulkhead[str] = Bulkhead(limit=1)
    held = bulkhead.try_enter("x")
    assert held is not None
    with pytest.raises(DeliveryTimeout):
        async with Deadline(0.02).scope():
            await bulkhead.enter("x")
    after = asyncio.create_task(bulkhead.enter("x"))
    await asyncio.sleep(0.01)
    held.release()  # goes to the waiter behind the one that gave up
    with await asyncio.wait_for(after, 5):
        assert bulkhead.in_flight("x") == 1
    assert bulkhead.in_flight("x") == 0 and bulkhead.waiting("x") == 0


async def test_a_burst_costs_one_timer_per_key_not_one_per_wait(timers: list[float]) -> None:
    bulkhead: Bulkhead[str] = Bulkhead(limit=8)
    destination = Destination(ready=True)
    patience = both(5)

    async def one() -> None:
        slot = await bulkhead.enter_unless_stuck("x", patience, destination)
        assert slot is not None
        await asyncio.sleep(0)
        slot.release()

    await asyncio.gather(*(one() for _ in range(1000)))
    assert bulkhead.in_flight("x") == 0 and bulkhead.waiting("x") == 0
    # A timer is set when waiting starts while none is set, and again when it fires: a
    # handful for 1,000 deliveries through 8 places (the old bulkhead set one per wake).
    assert 1 <= len(timers) <= 5, timers


async def test_waiting_lasts_only_while_the_holders_move() -> None:
    clock = Clock()
    bulkhead: Bulkhead[str] = Bulkhead(limit=2, clock=clock)
    first, second = bulkhead.try_enter("x"), bulkhead.try_enter("x")
    assert first and second
    clock.now += 2
    assert bulkhead.still("x") == 2
    # Nobody let go for 2 s, with a patience of 2 s: stuck, so no waiting at all.
    assert await bulkhead.enter_unless_stuck("x", both(2)) is None
    first.release()  # they move: the clock of stillness starts again
    third = bulkhead.try_enter("x")
    assert third is not None and bulkhead.still("x") == 0
    waiting = asyncio.create_task(bulkhead.enter_unless_stuck("x", both(2)))
    await asyncio.sleep(0.01)
    assert not waiting.done()  # waits, as a place may come free any moment...
    second.release()
    slot = await asyncio.wait_for(waiting, 5)
    assert slot is not None and bulkhead.in_flight("x") == 2
    # ...but only until the holders have stood still for the patience (here 0.05 s of the
    # loop's time: the injected clock stands still, so nothing moves).
    late = [asyncio.create_task(bulkhead.enter_unless_stuck("x", both(0.05))) for _ in range(3)]
    assert await asyncio.wait_for(asyncio.gather(*late), 5) == [None, None, None]
    assert bulkhead.waiting("x") == 0
    assert await bulkhead.enter_unless_stuck("y", both(0)) is not None  # room: no wait


async def test_a_destination_that_answers_keeps_its_waiters_waiting() -> None:
    """A link being opened answers every few milliseconds; a black hole never does."""
    bulkhead: Bulkhead[str] = Bulkhead(limit=1)
    patience = Patience(silent=0.1, answering=0.5)
    opening, black_hole = Destination(), Destination()
    for key, destination in (("opening", opening), ("hole", black_hole)):
        assert await bulkhead.enter_unless_stuck(key, patience, destination) is not None
    waiting = asyncio.create_task(bulkhead.enter_unless_stuck("opening", patience, opening))
    behind_hole = asyncio.create_task(bulkhead.enter_unless_stuck("hole", patience, black_hole))
    for _ in range(10):  # 0.4 s of answers, four times the patience for silence
        opening.answers()
        await asyncio.sleep(0.04)
    assert await asyncio.wait_for(behind_hole, 5) is None  # let go after 0.1 s of silence
    assert not waiting.done()
    # Once it has answered, it is stuck only after the patience for answering ones.
    started = time.monotonic()
    assert await asyncio.wait_for(waiting, 5) is None
    assert time.monotonic() - started >= 0.4


async def test_our_own_stall_is_not_the_destinations() -> None:
    """While our event loop is blocked nobody reads the destination's answers: the time it
    stood still does not count against the destination."""
    bulkhead: Bulkhead[str] = Bulkhead(limit=1)
    held = bulkhead.try_enter("x")
    assert held is not None
    waiting = asyncio.create_task(bulkhead.enter_unless_stuck("x", both(0.1)))
    await asyncio.sleep(0)
    time.sleep(0.3)  # noqa: ASYNC251 (the loop is busy elsewhere: a long CPU-bound step)
    await asyncio.sleep(0.05)
    assert not waiting.done()  # given a patience of its own after the stall...
    assert await asyncio.wait_for(waiting, 5) is None  # ...and let go when it passes
    held.release()


async def test_the_account_counts_only_destinations_that_have_not_answered() -> None:
    settings = IsolationSettings(max_in_flight_per_account=1, max_in_flight_per_connection=8)
    isolation = Isolation(settings)
    ready, new = Destination(ready=True), Destination()
    one, two = uuid.uuid4(), uuid.uuid4()
    held = [await isolation.room("acme", one, ready) for _ in range(8)]
    assert all(held) and isolation.accounts.in_flight("acme") == 0
    first_to_new = await isolation.room("acme", two, new)
    assert first_to_new is not None and isolation.accounts.in_flight("acme") == 1
    # The account's one place is taken by an attempt that has not been answered: the next
    # waits, and is let go as that attempt stands still.
    assert await isolation.room("acme", two, new) is None
    for slot in [*held, first_to_new]:
        assert slot is not None
        slot.release()
    assert isolation.accounts.in_flight("acme") == 0
    assert isolation.connections.in_flight(one) == isolation.connections.in_flight(two) == 0
