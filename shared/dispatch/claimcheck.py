"""Claim check: the full body goes to the subscriber's own blob container.

The upload runs under the delivery attempt's deadline (the dispatcher's); the clients get
short timeouts and one SDK retry, since our own retry schedule is the retry. A client whose
upload failed or was cut off is thrown away, never reused half-way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from typing import Any

from shared.dispatch.isolation import close_in_background

MAX_CACHED_CONTAINERS = 200
CONNECTION_TIMEOUT_SECONDS = 5  # the SDK's defaults (20 s, 60 s, 10 retries) took 327 s
RETRIES = 1
CLOSE_SECONDS = 10.0


class ClaimCheckStore:
    """Container clients by connection string and name, made once; containers made if missing."""

    def __init__(self, read_timeout: float = 30.0) -> None:
        self._containers: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._read_timeout = read_timeout

    async def upload(self, connection_string: str, container: str, name: str, body: bytes) -> None:
        try:
            await self._upload(connection_string, container, name, body)
        except BaseException:  # timed out, cancelled or failed: this client is not reused
            self._forget((connection_string, container))
            raise

    def _forget(self, key: tuple[str, str]) -> None:
        client = self._containers.pop(key, None)
        if client is not None:
            close_in_background(client.close, CLOSE_SECONDS)

    async def _upload(self, connection_string: str, container: str, name: str, body: bytes) -> None:
        from azure.core.exceptions import ResourceNotFoundError
        from azure.storage.blob import ContentSettings

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
            client = self._containers[key] = ContainerClient.from_connection_string(
                connection_string,
                container,
                connection_timeout=CONNECTION_TIMEOUT_SECONDS,
                read_timeout=self._read_timeout,
                retry_total=RETRIES,
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
