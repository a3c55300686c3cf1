"""The Coalescer: concurrent submits gathered into flushes, one flush at a time."""

import asyncio
from collections.abc import Sequence

import pytest

from shared.dispatch.coalesce import Coalescer


class Recorder:
    def __init__(self, failing: frozenset[int] = frozenset()) -> None:
        self.flushes: list[list[int]] = []
        self.failing = failing
        self.running = 0

    async def flush(self, items: Sequence[int]) -> list[BaseException | None]:
        self.running += 1
        assert self.running == 1, "two flushes at once"
        self.flushes.append(list(items))
        await asyncio.sleep(0.01)
        self.running -= 1
        if self.failing & set(items):
            raise RuntimeError("flush failed")
        return [None] * len(items)


async def test_concurrent_submits_go_out_together_one_flush_at_a_time() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.flush)
    await asyncio.wait_for(asyncio.gather(*(coalescer.submit(i) for i in range(7))), 5)
    assert recorder.flushes == [list(range(7))]
    assert coalescer.idle


async def test_a_flush_takes_at_most_most_and_the_rest_follow() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.flush, most=3)
    await asyncio.wait_for(asyncio.gather(*(coalescer.submit(i) for i in range(7))), 5)
    assert recorder.flushes == [[0, 1, 2], [3, 4, 5], [6]]


async def test_a_failed_flush_fails_its_items_only() -> None:
    recorder = Recorder(failing=frozenset({4}))
    coalescer = Coalescer(recorder.flush, most=3)
    outcomes = await asyncio.gather(
        *(coalescer.submit(i) for i in range(7)), return_exceptions=True
    )
    assert [i for i, o in enumerate(outcomes) if isinstance(o, RuntimeError)] == [3, 4, 5]
    assert outcomes[6] is None
    with pytest.raises(RuntimeError):
        await coalescer.submit(4)


async def test_an_item_whose_caller_gave_up_before_its_flush_is_never_sent() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.flush, most=1)
    first = asyncio.create_task(coalescer.submit(1))
    second = asyncio.create_task(coalescer.submit(2))  # waits behind the first flush
    third = asyncio.create_task(coalescer.submit(3))
    await asyncio.sleep(0)
    second.cancel()  # its deadline passed while it waited
    await asyncio.wait_for(asyncio.gather(first, third), 5)
    assert second.cancelled()
    assert recorder.flushes == [[1], [3]]
