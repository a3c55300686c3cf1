"""At most N holders per key (a connection, an account) in this process; the rest wait their
turn, first come first served, for as long as the holders keep moving.

The cost is nothing when nothing is slow: a released place goes straight to the longest
waiter (one waiter woken per release, none woken in vain), and a key with waiters has one
timer, not one per waiter or per wake. The timer says when the holders will have stood still
for the waiters' patience; then every waiter that may leave is let go (None), so that a
queue-triggered delivery goes back to the retry queue instead of holding a host slot.

"Moving" is what a holder or its destination did last: a holder came or let go, or the
destination (a `Progress`, e.g. a Service Bus sender) was asked to open its link or answered.
A link that takes half a second to open answers every few milliseconds meanwhile; a black hole
answers nothing. Our own loop standing still (a late timer) counts as a move too: nobody read
the answers meanwhile.

The interface is small on purpose (`enter`, `enter_unless_stuck`, `try_enter`, `still`,
`in_flight`, `waiting`), so that a limit kept in shared storage across instances can replace
it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Generic, Protocol, TypeVar

K = TypeVar("K")


class Progress(Protocol):
    """What a destination says about itself while attempts to it are in flight."""

    @property
    def ready(self) -> bool:
        """Its link is open and has delivered (an attempt will not wait for an opening)."""

    @property
    def answered(self) -> bool:
        """Its peer has answered at all on the current link (a black hole never does)."""

    def heard(self) -> float:
        """When it last moved (answered, or was asked), on the bulkhead's clock; 0: never."""


@dataclass(frozen=True)
class Patience:
    """How long waiters wait for the holders to move: `silent` while their destination has not
    answered at all on its current link (a black hole never does), `answering` once it has
    (a live destination is stuck only when slow beyond doubt, not while our own process is
    busy and reads its answers late)."""

    silent: float
    answering: float


class Slot:
    """One place in a bulkhead, held until released."""

    def __init__(self, release: Callable[[], None]) -> None:
        self._release: Callable[[], None] | None = release

    def release(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()

    def __enter__(self) -> Slot:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


@dataclass(eq=False)
class _Waiter:
    future: asyncio.Future[Slot | None]
    may_leave: bool  # let go (None) when the holders stand still; else waits as long as it takes
    progress: Progress | None


@dataclass(eq=False)
class _Lane:
    """One key's holders and waiters."""

    holders: dict[int, float] = field(default_factory=dict)  # slot number -> when taken
    released: float = 0.0  # when a holder last let go
    waiters: deque[_Waiter] = field(default_factory=deque)
    sources: dict[Progress, int] = field(default_factory=dict)  # of holders and waiters: how many
    patience: Patience = Patience(0.0, 0.0)  # of the waiters that may leave (the latest given)
    timer: asyncio.TimerHandle | None = None
    armed_at_move: float = 0.0  # the last move known when the timer was set
    due: float = 0.0  # when the timer should fire, on the loop's clock
    excused: float = 0.0  # our own loop did not run meanwhile: counts as a move


class Bulkhead(Generic[K]):
    """At most `limit` holders per key; see the module's docstring."""

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self._clock = limit, clock
        self._lanes: dict[K, _Lane] = {}
        self._numbers = itertools.count()

    def in_flight(self, key: K) -> int:
        lane = self._lanes.get(key)
        return len(lane.holders) if lane else 0

    def waiting(self, key: K) -> int:
        lane = self._lanes.get(key)
        return len(lane.waiters) if lane else 0

    def still(self, key: K) -> float:
        """Seconds since the holders of `key` last moved (0 when there are none)."""
        lane = self._lanes.get(key)
        if lane is None or not lane.holders:
            return 0.0
        return self._clock() - self._last_move(lane)

    def try_enter(self, key: K) -> Slot | None:
        """A slot now, or None when the key is at its limit or others wait for it."""
        lane = self._lane(key)
        if len(lane.holders) >= self.limit or lane.waiters:
            self._forget_if_idle(key, lane)
            return None
        return self._take(key, lane, None)

    async def enter(self, key: K, progress: Progress | None = None) -> Slot:
        """A slot, waiting in turn as long as it takes (the caller bounds the wait)."""
        slot = await self._enter(key, progress, None)
        assert slot is not None  # nobody lets a waiter without patience go
        return slot

    async def enter_unless_stuck(
        self, key: K, patience: Patience, progress: Progress | None = None
    ) -> Slot | None:
        """A slot, waiting in turn only while the holders keep moving (one lets go, or their
        destination answers, at least every so often: see Patience). None when they stand
        still that long: stuck, e.g. on a black hole, where waiting would only hold a host
        slot."""
        return await self._enter(key, progress, patience)

    async def _enter(
        self, key: K, progress: Progress | None, patience: Patience | None
    ) -> Slot | None:
        lane = self._lane(key)
        if len(lane.holders) < self.limit and not lane.waiters:
            return self._take(key, lane, progress)
        if patience is not None:
            lane.patience = patience
            if self._clock() - self._last_move(lane, progress) >= self._patience(lane, progress):
                return None
        waiter = _Waiter(asyncio.get_running_loop().create_future(), patience is not None, progress)
        lane.waiters.append(waiter)
        _count(lane.sources, progress, 1)
        self._arm(key, lane)
        try:
            return await waiter.future
        except BaseException:  # cancelled (a deadline): leave the line, pass on a slot handed over
            if waiter.future.done() and not waiter.future.cancelled():
                handed = waiter.future.result()
                if handed is not None:
                    handed.release()
            elif waiter in lane.waiters:
                lane.waiters.remove(waiter)
                _count(lane.sources, progress, -1)
                self._settle(key, lane)
            raise

    def _lane(self, key: K) -> _Lane:
        lane = self._lanes.get(key)
        if lane is None:  # not setdefault: it would build a lane (three containers) every call
            lane = self._lanes[key] = _Lane()
        return lane

    def _take(self, key: K, lane: _Lane, progress: Progress | None) -> Slot:
        number = next(self._numbers)
        lane.holders[number] = self._clock()
        _count(lane.sources, progress, 1)
        return Slot(lambda: self._leave(key, number, progress))

    def _leave(self, key: K, number: int, progress: Progress | None) -> None:
        lane = self._lanes[key]
        del lane.holders[number]
        _count(lane.sources, progress, -1)
        lane.released = self._clock()
        while lane.waiters and len(lane.holders) < self.limit:  # hand the place over, in turn
            waiter = lane.waiters.popleft()
            _count(lane.sources, waiter.progress, -1)
            if not waiter.future.done():  # else cancelled, and about to leave the line
                waiter.future.set_result(self._take(key, lane, waiter.progress))
        self._settle(key, lane)

    def _last_move(self, lane: _Lane, progress: Progress | None = None) -> float:
        oldest = next(iter(lane.holders.values()), 0.0)
        return max(oldest, lane.released, lane.excused, self._heard(lane, progress))

    @staticmethod
    def _heard(lane: _Lane, progress: Progress | None = None) -> float:
        heard = max((source.heard() for source in lane.sources), default=0.0)
        return max(heard, progress.heard() if progress else 0.0)

    @staticmethod
    def _patience(lane: _Lane, progress: Progress | None = None) -> float:
        answered = any(source.answered for source in lane.sources) or (
            progress is not None and progress.answered
        )
        return lane.patience.answering if answered else lane.patience.silent

    def _arm(self, key: K, lane: _Lane) -> None:
        """One timer per key, for when the holders will have stood still for the patience of
        the waiters that may leave."""
        if lane.timer is not None or not any(w.may_leave for w in lane.waiters):
            return
        lane.armed_at_move = self._last_move(lane)
        delay = max(0.0, lane.armed_at_move + self._patience(lane) - self._clock())
        loop = asyncio.get_running_loop()
        lane.due = loop.time() + delay
        lane.timer = loop.call_later(delay, self._check, key, lane)

    def _check(self, key: K, lane: _Lane) -> None:
        lane.timer = None
        if self._lanes.get(key) is not lane:
            return
        late = asyncio.get_running_loop().time() - lane.due
        if late > self._patience(lane) / 2:  # our own loop stood still: nobody listened
            lane.excused = self._clock()
        if self._last_move(lane) > lane.armed_at_move:  # they moved meanwhile: wait on
            self._arm(key, lane)
            return
        staying: deque[_Waiter] = deque()
        for waiter in lane.waiters:
            if not waiter.may_leave:
                staying.append(waiter)
                continue
            _count(lane.sources, waiter.progress, -1)
            if not waiter.future.done():
                waiter.future.set_result(None)
        lane.waiters = staying
        self._settle(key, lane)

    def _settle(self, key: K, lane: _Lane) -> None:
        if lane.waiters:
            self._arm(key, lane)
            return
        if lane.timer is not None:
            lane.timer.cancel()
            lane.timer = None
        self._forget_if_idle(key, lane)

    def _forget_if_idle(self, key: K, lane: _Lane) -> None:
        if not lane.holders and not lane.waiters:
            self._lanes.pop(key, None)


def _count(sources: dict[Progress, int], progress: Progress | None, change: int) -> None:
    if progress is None:
        return
    left = sources.get(progress, 0) + change
    if left > 0:
        sources[progress] = left
    else:
        sources.pop(progress, None)
