"""Which system-events queue an event goes to: `SYSTEM_EVENT_QUEUE_COUNT` queues, one account
always on the same one.

A Storage queue takes about 2,000 messages a second (Azure's scalability targets), so one
queue caps ingestion near 7 million events an hour for every account together. With N queues
the publisher puts each event on the queue its account hashes to, and each queue has its own
trigger running the same code (shared/triggers.py). One account's events stay on one queue,
so they are taken in the order one queue gives, as with a single queue (docs/DESIGN.md,
"Ingestion over N queues").

Queue 0 keeps the name `system-events` (N=1 is the single queue as before: nothing to migrate);
queue k is `system-events-k`. The hash is jump consistent hashing (Lamping and Veach, 2014)
of the account's SHA-256: stable across processes and versions (Python's `hash` is not), even,
and going from N to N+1 queues moves only 1/(N+1) of the accounts.

Imports nothing heavy: the triggers read it while the app is indexed (cold start).
"""

from __future__ import annotations

import hashlib

from shared.storage.clients import SYSTEM_EVENTS_QUEUE

DISPATCH_FUNCTION = "dispatch_system_event"  # the function of queue 0 (its name from before)
_JUMP_MULTIPLIER = 2862933555777941757  # the paper's linear congruential generator
_UINT64 = (1 << 64) - 1


def queue_name(shard: int) -> str:
    """The queue of shard `shard` (0-based)."""
    return SYSTEM_EVENTS_QUEUE if shard == 0 else f"{SYSTEM_EVENTS_QUEUE}-{shard}"


def system_event_queues(count: int) -> tuple[str, ...]:
    """Every queue events are published to when there are `count` (infra/modules/storage.bicep
    makes the same names)."""
    return tuple(queue_name(shard) for shard in range(count))


def dispatch_function_name(shard: int) -> str:
    """The name of the function draining shard `shard` (AzureWebJobs.<name>.Disabled pauses it)."""
    return DISPATCH_FUNCTION if shard == 0 else f"{DISPATCH_FUNCTION}_{shard}"


def is_system_event_queue(name: str) -> bool:
    """`system-events` or `system-events-<k>` (not a poison queue)."""
    if name == SYSTEM_EVENTS_QUEUE:
        return True
    prefix, _, shard = name.rpartition("-")
    return prefix == SYSTEM_EVENTS_QUEUE and shard.isdigit() and shard == str(int(shard))


def shard_of(account_id: str, count: int) -> int:
    """The shard (0 to count-1) of an account: the same for the same account and count."""
    if count < 1:
        raise ValueError("at least one queue")
    key = int.from_bytes(hashlib.sha256(account_id.encode()).digest()[:8], "big")
    bucket, jump = -1, 0
    while jump < count:
        bucket = jump
        key = (key * _JUMP_MULTIPLIER + 1) & _UINT64
        jump = int((bucket + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return bucket


def queue_of(account_id: str, count: int) -> str:
    """The queue an account's events go to when there are `count` queues."""
    return queue_name(shard_of(account_id, count))
