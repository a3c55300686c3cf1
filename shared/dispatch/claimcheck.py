"""Claim check: the full body goes to the subscriber's own blob container.

The upload runs under the delivery attempt's deadline (the dispatcher's); the clients get
short timeouts and one SDK retry, since our own retry schedule is the retry. A client whose
upload failed or was cut off is thrown away, never reused half-way. Clients are built from
our parser's parts (URL and credential), and their HTTP connections resolve through the
guard: aiohttp connects only to addresses it checked, keeping the name for TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from shared import connstrings
from shared.dispatch.cachecounts import CacheCounts
from shared.dispatch.isolation import close_in_background
from shared.endpoints import DEFAULT_GUARD, ConnectGuard

MAX_CACHED_CONTAINERS = 200
CONNECTION_TIMEOUT_SECONDS = 5  # the SDK's defaults (20 s, 60 s, 10 retries) took 327 s
RETRIES = 1
CLOSE_SECONDS = 10.0
# Options of the HTTP transport (ours, built with the guard's resolver), not of the client.
_TRANSPORT_OPTIONS = frozenset({"connection_timeout", "read_timeout", "connection_verify"})


@dataclass(frozen=True)
class BlobIdentity:
    """A blob endpoint reached with an Entra ID token of the customer's tenant (no secret)."""

    account_url: str
    tenant_id: str
    credential: Any

    @property
    def key(self) -> str:
        return f"{self.tenant_id} {self.account_url}"


class ClaimCheckStore:
    """Container clients by connection string (or blob endpoint and tenant) and name, made
    once, at most `max_containers` (the least recently used is closed); containers made if
    missing. `client_options` go to every client (tests: a CA)."""

    def __init__(
        self,
        guard: ConnectGuard = DEFAULT_GUARD,
        client_options: dict[str, Any] | None = None,
        read_timeout: float = 30.0,
        max_containers: int = MAX_CACHED_CONTAINERS,
    ) -> None:
        self._containers: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self.counts = CacheCounts(max_containers)
        self._guard = guard
        self._options = {
            "connection_timeout": CONNECTION_TIMEOUT_SECONDS,
            "read_timeout": read_timeout,
            "retry_total": RETRIES,
            **(client_options or {}),
        }

    async def upload(
        self,
        connection_string: str | None,
        container: str,
        name: str,
        body: bytes,
        identity: BlobIdentity | None = None,
    ) -> None:
        """Upload with the connection string, or with `identity` when it is given."""
        try:
            await self._upload(connection_string or "", container, name, body, identity)
        except BaseException:  # timed out, cancelled or failed: this client is not reused
            client = self._containers.pop(_key(connection_string or "", container, identity), None)
            if client is not None:
                close_in_background(client.close, CLOSE_SECONDS)
            raise

    async def _upload(
        self,
        connection_string: str,
        container: str,
        name: str,
        body: bytes,
        identity: BlobIdentity | None,
    ) -> None:
        from azure.core.exceptions import ResourceNotFoundError
        from azure.storage.blob import ContentSettings

        client = self._container(connection_string, container, identity)
        settings = ContentSettings(content_type="application/json")
        try:
            await client.upload_blob(name, body, overwrite=True, content_settings=settings)
        except ResourceNotFoundError:  # the container does not exist yet
            from azure.core.exceptions import ResourceExistsError

            with contextlib.suppress(ResourceExistsError):  # made meanwhile by another delivery
                await client.create_container()
            await client.upload_blob(name, body, overwrite=True, content_settings=settings)

    async def probe(
        self, connection_string: str | None, container: str, identity: BlobIdentity | None = None
    ) -> None:
        """Upload and delete a small blob: the container takes claim checks (verification)."""
        name = f"verification/{uuid.uuid4()}.json"
        await self.upload(connection_string, container, name, b"{}", identity)
        await self._container(connection_string or "", container, identity).delete_blob(name)

    def _container(
        self, connection_string: str, container: str, identity: BlobIdentity | None
    ) -> Any:
        from azure.storage.blob.aio import ContainerClient

        key = _key(connection_string, container, identity)
        client = self._containers.get(key)
        if client is not None:
            self.counts.hit()
        else:
            self.counts.miss()
            if identity is not None:
                url, credential = identity.account_url, identity.credential
            else:  # our parser's parts; a string it refuses is the customer's to fix
                parsed = connstrings.storage(connection_string)
                url, credential = parsed.blob_url, parsed.credential
            self._guard.check_literal(connstrings.url_host(url)[0])
            client = self._containers[key] = ContainerClient(
                url, container, credential=credential, **self._client_options()
            )
            if len(self._containers) > self.counts.capacity:
                _, oldest = self._containers.popitem(last=False)
                asyncio.get_running_loop().create_task(oldest.close())
        self._containers.move_to_end(key)
        return client

    def _client_options(self) -> dict[str, Any]:
        """The client's options, with a transport whose connections go through the guard."""
        import aiohttp
        from azure.core.pipeline.transport import AioHttpTransport

        options = {k: v for k, v in self._options.items() if k not in _TRANSPORT_OPTIONS}
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(resolver=self._guard.http_resolver()),
            auto_decompress=False,  # as azure-core makes its own sessions
        )
        transport_options = {k: v for k, v in self._options.items() if k in _TRANSPORT_OPTIONS}
        return {
            **options,
            "transport": AioHttpTransport(session=session, session_owner=True, **transport_options),
        }

    def stats(self) -> dict[str, int]:
        """Size, bound and counts since the last call, for the summary's stats line."""
        return self.counts.take(len(self._containers))

    async def close(self) -> None:
        clients, self._containers = list(self._containers.values()), OrderedDict()
        for client in clients:
            await client.close()


def _key(connection_string: str, container: str, identity: BlobIdentity | None) -> tuple[str, str]:
    return (identity.key if identity else connection_string, container)
