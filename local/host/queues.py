"""Queue triggers with the WebJobs queue listener's semantics."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.functions.queue import QueueMessage
from azure.storage.queue import QueueMessage as StorageQueueMessage
from azure.storage.queue.aio import QueueClient

from local.host.config import MIN_POLLING_INTERVAL, QueueOptions
from local.host.invoke import FunctionInvoker
from shared.failpoints import failpoint

log = logging.getLogger("local.host")

# How long a received message stays invisible while its function runs (the WebJobs SDK's
# 10 minutes); renewed while the function is still running.
DEFAULT_MESSAGE_LEASE = 600.0


@dataclass(eq=False)  # identity: the same message can be received again after its lease
class _Lease:
    """A received message's pop receipt, renewed while its function runs."""

    message_id: str
    pop_receipt: str
    leased_at: float
    settling: bool = False
    renewal: asyncio.Task[None] | None = None


class QueueListener:
    """One queue trigger, with the WebJobs queue listener's semantics.

    Receives up to `batchSize` messages when no more than `newBatchThreshold` are in
    flight; polls again at once while there is work and backs off exponentially (100 ms up
    to `maxPollingInterval`) while the queue is empty. A success deletes the message; a
    failure makes it visible again after `visibilityTimeout`, or moves it to
    `<queue>-poison` once it has been dequeued `maxDequeueCount` times.
    """

    def __init__(
        self,
        invoker: FunctionInvoker,
        queue: QueueClient,
        poison: QueueClient,
        options: QueueOptions,
        lease: float = DEFAULT_MESSAGE_LEASE,
    ) -> None:
        self.invoker = invoker
        self.queue = queue
        self.poison = poison
        self.options = options
        self._lease = max(1, math.ceil(lease))
        self._tasks: set[asyncio.Task[None]] = set()
        self._leases: set[_Lease] = set()
        self._capacity = asyncio.Event()
        self._wake = asyncio.Event()
        self._stopping = False
        self._poison_exists = False
        self._poller: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def start(self) -> None:
        with contextlib.suppress(ResourceExistsError):
            await self.queue.create_queue()
        self._poller = asyncio.create_task(self._poll(), name=f"poll {self.queue.queue_name}")
        self._keeper = asyncio.create_task(self._keep_leases())

    def stop_polling(self) -> None:
        self._stopping = True
        if self._poller is not None:
            # A receive in progress is safe to abandon: its messages reappear after the lease.
            self._poller.cancel()

    async def drain(self, grace: float) -> None:
        """Wait (bounded) for invocations in flight, then close the clients."""
        self.stop_polling()
        if self._poller is not None:
            await asyncio.wait([self._poller])
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in late:
                log.warning("%s: abandoning a running invocation at stop", self.invoker.name)
                task.cancel()
            if late:
                await asyncio.wait(late)
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.wait([self._keeper])
        await self.queue.close()
        await self.poison.close()

    async def _poll(self) -> None:
        delay = MIN_POLLING_INTERVAL
        while not self._stopping:
            if len(self._tasks) > self.options.new_batch_threshold:
                self._capacity.clear()
                await self._capacity.wait()
                continue
            # Cleared before receiving, so a release during the receive still wakes us.
            self._wake.clear()
            try:
                messages = await self._receive()
            except Exception:
                log.warning(
                    "%s: receive failed; what it may have taken stays hidden until its lease "
                    "ends (%d s); retrying",
                    self.invoker.name,
                    self._lease,
                    exc_info=True,
                )
                messages = []
            if messages:
                delay = MIN_POLLING_INTERVAL
                for message in messages:
                    task = asyncio.create_task(self._process(message))
                    self._tasks.add(task)
                    task.add_done_callback(self._finished)
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
                delay = MIN_POLLING_INTERVAL  # a released message is visible again
            except TimeoutError:
                delay = min(delay * 2, self.options.max_polling_interval)

    async def _receive(self) -> list[StorageQueueMessage]:
        # No SDK retry once the request is sent (retry_read=0): a dequeue whose answer was
        # lost, e.g. to a read timeout while storage stalls, has already hidden its messages
        # for the lease; a silent second dequeue would hide them with no trace (the
        # failure is logged instead, and the poll loop asks again).
        pages = self.queue.receive_messages(
            messages_per_page=self.options.batch_size,
            visibility_timeout=self._lease,
            retry_read=0,
        ).by_page()
        async for page in pages:
            return [message async for message in page]
        return []

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if len(self._tasks) <= self.options.new_batch_threshold:
            self._capacity.set()

    async def _process(self, message: StorageQueueMessage) -> None:
        lease = _Lease(message.id, message.pop_receipt or "", time.monotonic())
        self._leases.add(lease)
        try:
            await self._handle(message, lease)
        except Exception:
            # Settling failed (storage down, lease lost): the message comes back by itself.
            log.warning(
                "%s: could not settle message %s", self.invoker.name, message.id, exc_info=True
            )
        finally:
            self._leases.discard(lease)

    def _decode(self, content: Any) -> bytes:
        text = "" if content is None else str(content)
        if self.options.message_encoding == "base64":
            return base64.b64decode(text, validate=True)
        return text.encode("utf-8")

    async def _handle(self, message: StorageQueueMessage, lease: _Lease) -> None:
        limit = self.options.max_dequeue_count
        if message.dequeue_count is not None and message.dequeue_count > limit:
            # Left over from a host that stopped before it could move it.
            await self._move_to_poison(
                message, lease, f"it was dequeued {message.dequeue_count} times"
            )
            return
        try:
            body = self._decode(message.content)
        except ValueError:
            await self._move_to_poison(message, lease, "its content is not valid base64")
            return
        argument = QueueMessage(
            id=message.id,
            body=body,
            dequeue_count=message.dequeue_count,
            expiration_time=message.expires_on,
            insertion_time=message.inserted_on,
            time_next_visible=message.next_visible_on,
            pop_receipt=message.pop_receipt,
        )
        try:
            await self.invoker(argument)
        except Exception:
            log.exception(
                "%s failed on message %s (dequeue count %s)",
                self.invoker.name,
                message.id,
                message.dequeue_count,
            )
            if (message.dequeue_count or 0) >= limit:
                await self._move_to_poison(message, lease, f"it failed {limit} times")
            else:
                await self._release(lease)
            return
        failpoint("before-complete")
        await self._settle(lease)
        await self.queue.delete_message(lease.message_id, lease.pop_receipt)

    async def _settle(self, lease: _Lease) -> None:
        """Stop renewing the lease; wait for a renewal in progress so its receipt is current."""
        lease.settling = True
        if lease.renewal is not None:
            await asyncio.wait([lease.renewal])

    async def _release(self, lease: _Lease) -> None:
        await self._settle(lease)
        delay = math.ceil(self.options.visibility_timeout)
        await self.queue.update_message(
            lease.message_id, pop_receipt=lease.pop_receipt, visibility_timeout=delay
        )
        # Poll again when it is visible, rather than after the empty-queue back-off.
        asyncio.get_running_loop().call_later(delay, self._wake.set)

    async def _move_to_poison(self, message: StorageQueueMessage, lease: _Lease, why: str) -> None:
        if not self._poison_exists:
            with contextlib.suppress(ResourceExistsError):
                await self.poison.create_queue()
            self._poison_exists = True
        await self.poison.send_message(message.content)
        await self._settle(lease)
        await self.queue.delete_message(lease.message_id, lease.pop_receipt)
        log.error(
            "%s: message %s moved to queue %r because %s",
            self.invoker.name,
            message.id,
            self.poison.queue_name,
            why,
        )

    async def _keep_leases(self) -> None:
        # Each lease is renewed between a quarter and half of its length after it was taken.
        period = self._lease / 4
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for lease in list(self._leases):
                due = now - lease.leased_at >= period
                if due and not lease.settling and lease.renewal is None:
                    lease.renewal = asyncio.create_task(self._renew(lease))

    async def _renew(self, lease: _Lease) -> None:
        try:
            receipt = await self.queue.update_message(
                lease.message_id, pop_receipt=lease.pop_receipt, visibility_timeout=self._lease
            )
            lease.pop_receipt = receipt.pop_receipt or lease.pop_receipt
            lease.leased_at = time.monotonic()
        except Exception:
            log.warning("could not renew message %s", lease.message_id, exc_info=True)
        finally:
            lease.renewal = None
