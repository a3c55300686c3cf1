"""Async clients for the app's own storage account, made once per event loop and reused."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from shared.settings import StorageTarget

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient, TableServiceClient
    from azure.storage.blob.aio import BlobServiceClient, ContainerClient
    from azure.storage.queue.aio import QueueClient, QueueServiceClient

# Names of what the app keeps in its own account (infra/ provisions the same names).
CONNECTIONS_TABLE = "connections"
API_KEYS_TABLE = "apikeys"
PORTAL_SESSIONS_TABLE = "portalsessions"
MESSAGES_TABLE = "messages"
SYSTEM_EVENTS_QUEUE = "system-events"
RETRY_QUEUE = "delivery-retries"
REPLAYS_TABLE = "replays"
AUDIT_TABLE = "audit"  # who changed what, by day (issue 26)
OWNERSHIP_TABLE = "ownership"  # Entra ID confirmation codes and consented tenants (issue 23)
REPLAY_QUEUE = "replays"
POISON_SUFFIX = "-poison"  # where the Functions host moves what keeps failing
BODIES_CONTAINER = "message-bodies"
KEEPALIVE_SECONDS = 3.0


class StorageClients:
    """Tables, queues and blobs of one account; each table/queue/container is created once."""

    def __init__(self, target: StorageTarget) -> None:
        # The SDKs are imported here, not at module import, to keep cold start short.
        import aiohttp
        from azure.core.pipeline.transport import AioHttpTransport
        from azure.data.tables.aio import TableServiceClient
        from azure.storage.blob.aio import BlobServiceClient
        from azure.storage.queue.aio import QueueServiceClient

        self.target = target
        self._credential: Any = None
        # Close idle connections before the server does: Node-based servers such as Azurite
        # drop them after 5 s, and a POST on a dropped one fails without a retry.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(keepalive_timeout=KEEPALIVE_SECONDS, limit=200)
        )
        transport = {"transport": AioHttpTransport(session=self._session, session_owner=False)}
        self.tables: TableServiceClient
        self.queues: QueueServiceClient
        self.blobs: BlobServiceClient
        if target.connection_string:
            cs = target.connection_string
            self.tables = TableServiceClient.from_connection_string(cs, **transport)
            self.queues = QueueServiceClient.from_connection_string(cs, **transport)
            self.blobs = BlobServiceClient.from_connection_string(cs, **transport)
        else:
            from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential

            self._credential = (
                ManagedIdentityCredential(client_id=target.client_id)
                if target.client_id
                else DefaultAzureCredential()
            )
            credential = {"credential": self._credential, **transport}
            self.tables = TableServiceClient(target.endpoint("table"), **credential)
            self.queues = QueueServiceClient(target.endpoint("queue"), **credential)
            self.blobs = BlobServiceClient(target.endpoint("blob"), **credential)
        self._ready: set[str] = set()  # what exists already, so it is created once

    async def _create_once(self, key: str, create: Callable[[], Awaitable[Any]]) -> None:
        from azure.core.exceptions import ResourceExistsError

        if key not in self._ready:
            with contextlib.suppress(ResourceExistsError):
                await create()
            self._ready.add(key)

    async def table(self, name: str) -> TableClient:
        await self._create_once(f"table/{name}", lambda: self.tables.create_table(name))
        return self.tables.get_table_client(name)

    async def queue(self, name: str) -> QueueClient:
        client = self.queues.get_queue_client(name)
        await self._create_once(f"queue/{name}", client.create_queue)
        return client

    async def container(self, name: str) -> ContainerClient:
        client = self.blobs.get_container_client(name)
        await self._create_once(f"blob/{name}", client.create_container)
        return client

    async def close(self) -> None:
        await self.tables.close()
        await self.queues.close()
        await self.blobs.close()
        if self._credential is not None:
            await self._credential.close()
        await self._session.close()
