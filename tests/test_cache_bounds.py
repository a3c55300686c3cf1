"""The dispatch path's bounded caches (issue 25): each keeps at most its bound, drops the least
recently used (closing what it held), and counts its hits and misses for the stats line; and
what one namespace sees of the sender pool's AMQP connections."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from local.servicebus.emulator import Emulator
from shared.dispatch import outgoing
from shared.dispatch.claimcheck import ClaimCheckStore
from shared.dispatch.isolation import Deadline
from shared.dispatch.servicebus import QueueSender, SenderPool
from shared.endpoints import ConnectGuard
from tests.factories import an_event

LOCAL = ConnectGuard(allow_local=True)  # the emulator and Azurite listen on loopback
NAMESPACE = "Endpoint=sb://127.0.0.1:{}/;SharedAccessKeyName=k;SharedAccessKey=a"


class ClosingSender(QueueSender):
    """A real sender that also says when it was closed (it never connects here)."""

    closed: list[str] = []

    async def close(self) -> None:
        ClosingSender.closed.append(self._queue_name)
        await super().close()

    @property
    def _queue_name(self) -> str:
        return self._queue


async def test_the_sender_pool_closes_the_least_recently_used_beyond_its_bound() -> None:
    ClosingSender.closed = []
    pool = SenderPool(max_senders=2, make=ClosingSender)
    first = pool.get(NAMESPACE.format(1), "a")
    pool.get(NAMESPACE.format(1), "b")
    assert pool.get(NAMESPACE.format(1), "a") is first  # a is now the most recently used
    pool.get(NAMESPACE.format(1), "c")  # over the bound: b goes, and is closed
    await asyncio.sleep(0)  # the close runs as a task
    assert ClosingSender.closed == ["b"]
    assert len(pool) == 2 and pool.get(NAMESPACE.format(1), "a") is first
    assert pool.stats()["hits"] == 2 and pool.stats()["misses"] == 0  # reset by the first call
    await pool.close()


async def test_the_claim_check_store_keeps_at_most_its_bound(
    storage_connection_string: str,
) -> None:
    """Real uploads to Azurite; an evicted container's client is made again when asked."""
    store = ClaimCheckStore(LOCAL, max_containers=2)
    names = [f"cap{uuid.uuid4().hex[:12]}" for _ in range(3)]
    for name in names:
        await store.upload(storage_connection_string, name, "a.json", b"{}")
    await store.upload(storage_connection_string, names[2], "b.json", b"{}")  # kept: a hit
    await store.upload(storage_connection_string, names[0], "b.json", b"{}")  # evicted: a miss
    assert store.stats() == {"size": 2, "capacity": 2, "hits": 1, "misses": 4}
    assert store.stats() == {"size": 2, "capacity": 2, "hits": 0, "misses": 0}
    await store.close()


async def test_each_sender_is_one_amqp_connection_to_its_namespace(
    servicebus_emulator_factory: Any,
) -> None:
    """The pinned SDK cannot share one AMQP connection between the senders of a namespace (its
    sharing switch is off, and forced on it fails): two queues of one namespace are two
    connections at the namespace, and the stats line says so. If a new SDK shares them, this
    fails: then share them (one client per namespace) and change docs/CAPACITY.md."""
    emulator: Emulator = servicebus_emulator_factory(queues=["q1", "q2"])
    pool = SenderPool(guard=LOCAL)
    event = an_event("acct", "Employee.Created")
    for queue in ("q1", "q2"):
        message = outgoing.build(event, uuid.uuid4(), "Full", is_retry=False)
        await pool.get(emulator.connection_string, queue).send(message, Deadline(20))
    assert emulator.message_count("q1") == emulator.message_count("q2") == 1
    assert emulator.connections_accepted == 2
    stats = pool.stats()
    assert stats["amqpConnections"] == 2 and stats["busiestNamespace"] == 2
    await pool.close()
