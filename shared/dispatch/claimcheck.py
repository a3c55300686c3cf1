"""Claim check: the full body goes to the subscriber's own blob container."""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from typing import Any

from shared import connstrings
from shared.endpoints import DEFAULT_GUARD, ConnectGuard

MAX_CACHED_CONTAINERS = 200


class ClaimCheckStore:
    """Container clients by connection string and name, made once; containers made if missing."""

    def __init__(self, guard: ConnectGuard = DEFAULT_GUARD) -> None:
        self._containers: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._guard = guard

    async def upload(self, connection_string: str, container: str, name: str, body: bytes) -> None:
        from azure.core.exceptions import ResourceNotFoundError
        from azure.storage.blob import ContentSettings

        await self._guard.check_blob(connection_string)
        client = self._container(connection_string, container)
        settings = ContentSettings(content_type="application/json")
        try:
            await client.upload_blob(name, body, overwrite=True, content_settings=settings)
        except ResourceNotFoundError:  # the container does not exist yet
            from azure.core.exceptions import ResourceExistsError

            with contextlib.suppress(ResourceExistsError):  # made meanwhile by another delivery
                await client.create_container()
            await client.upload_blob(name, body, overwrite=True, content_settings=settings)

    def _container(self, connection_string: str, container: str) -> Any:
        from azure.storage.blob.aio import ContainerClient

        key = (connection_string, container)
        client = self._containers.get(key)
        if client is None:
            connstrings.check_storage(connection_string)  # refused: the customer's to fix
            client = self._containers[key] = ContainerClient.from_connection_string(
                connection_string, container
            )
            if len(self._containers) > MAX_CACHED_CONTAINERS:
                _, oldest = self._containers.popitem(last=False)
                asyncio.get_running_loop().create_task(oldest.close())
        self._containers.move_to_end(key)
        return client

    async def close(self) -> None:
        clients, self._containers = list(self._containers.values()), OrderedDict()
        for client in clients:
            await client.close()
