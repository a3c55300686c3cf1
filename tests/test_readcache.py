"""The shared-reads cache stays within its bound and counts its hits (issue 25)."""

from __future__ import annotations

import asyncio

from shared.dispatch.readcache import SharedReads
from shared.dispatch.servicebus import SenderPool


def test_keeps_at_most_max_keys_dropping_the_least_recently_used() -> None:
    reads: list[int] = []

    async def read(key: int) -> int:
        reads.append(key)
        return key * 10

    async def scenario() -> None:
        cache: SharedReads[int, int] = SharedReads(read, seconds=60, max_keys=3)
        for key in (1, 2, 3):
            assert await cache.get(key) == key * 10
        assert await cache.get(1) == 10  # 1 is now the most recently used
        assert await cache.get(4) == 40  # over the bound: 2, the least recently used, goes
        assert len(cache) == 3
        assert await cache.get(1) == 10 and await cache.get(3) == 30  # still kept
        assert await cache.get(2) == 20  # read again
        assert reads == [1, 2, 3, 4, 2]
        assert cache.stats() == {"size": 3, "capacity": 3, "hits": 3, "misses": 5}
        assert cache.stats() == {"size": 3, "capacity": 3, "hits": 0, "misses": 0}  # reset

    asyncio.run(scenario())


def test_a_caller_waiting_on_an_evicted_read_still_gets_its_answer() -> None:
    async def scenario() -> None:
        opened = asyncio.Event()

        async def read(key: int) -> int:
            if key == 1:
                await opened.wait()
            return key

        cache: SharedReads[int, int] = SharedReads(read, seconds=60, max_keys=1)
        waiting = asyncio.ensure_future(cache.get(1))
        await asyncio.sleep(0)
        assert await cache.get(2) == 2  # evicts key 1 while its read is under way
        opened.set()
        assert await waiting == 1

    asyncio.run(scenario())


async def test_the_sender_pool_keeps_at_most_its_cap_and_counts_hits() -> None:
    """Senders are made, not connected, until they send: no Service Bus is needed here."""
    pool = SenderPool(max_senders=2)
    first = pool.get("Endpoint=sb://127.0.0.1:1/;SharedAccessKeyName=k;SharedAccessKey=a", "q")
    assert (
        pool.get("Endpoint=sb://127.0.0.1:1/;SharedAccessKeyName=k;SharedAccessKey=a", "q") is first
    )
    for n in range(2, 5):
        pool.get(f"Endpoint=sb://127.0.0.1:{n}/;SharedAccessKeyName=k;SharedAccessKey=a", "q")
    assert len(pool) == 2
    counted = {"size": 2, "capacity": 2, "hits": 1, "misses": 4}
    assert pool.stats() == {**counted, "amqpConnections": 0, "busiestNamespace": 0}
    assert pool.stats()["hits"] == pool.stats()["misses"] == 0
    await pool.close()
