"""The app wired to the test session's Azurite: settings, services, accounts and keys."""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from local.azurite import start_azurite
from shared.crypto import KeyRing
from shared.services import Services, get_services
from shared.settings import Settings, StorageTarget


@pytest.fixture(scope="session")
def app_environment(storage_connection_string: str) -> Iterator[dict[str, str]]:
    """The app's settings in os.environ, as the Functions host would set them."""
    values = {
        "AzureWebJobsStorage": storage_connection_string,
        "ENCRYPTION_KEYS": KeyRing.new_key_spec("test"),
        "DELIVERY_RETRY_DELAYS": "1,1,1,1,1",
        # The emulator and Azurite listen on loopback; tests/test_limits.py checks the
        # production rule with settings of its own.
        "ALLOW_LOCAL_ENDPOINTS": "true",
        # Azurite has no lifecycle management: the purge deletes bodies (as under `make run`);
        # tests/test_retention.py checks the Azure behaviour with settings of its own.
        "PURGE_DELETES_BODIES": "true",
        # One key and one address send every test's requests: rate limits well above them
        # (tests/test_limits.py checks the limits with a clock and limits of its own).
        "LIMIT_REQUEST_BURST": "1000000",
        "LIMIT_SEND_BURST": "1000000",
        "LIMIT_FAILED_KEYS_PER_MINUTE": "1000000",
        "DELIVERY_ATTEMPT_TIMEOUT_SECONDS": "5",  # a black hole answers within seconds
    }
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    yield values
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
async def own_storage(app_environment: dict[str, str]) -> AsyncIterator[tuple[str, Services]]:
    """An Azurite of the test's own (its connection string, and Services on it), so that no
    other host in the session takes its events."""
    azurite = start_azurite()
    settings = dataclasses.replace(
        Settings.from_environment(), storage=StorageTarget(azurite.connection_string)
    )
    services = await Services.open(settings)
    yield azurite.connection_string, services
    await services.close()
    azurite.stop()


@pytest.fixture(scope="session")
async def services(app_environment: dict[str, str]) -> AsyncIterator[Services]:
    """The same Services object the functions use in this process."""
    yield await get_services()


@pytest.fixture
def account() -> str:
    """A fresh account per test, so tests never see each other's data."""
    return f"acct-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def api_key(services: Services, account: str) -> str:
    key, _ = await services.api_keys.create(account, services.clock())
    return key


@pytest.fixture(scope="session")
def api_host(app_environment: dict[str, str], storage_connection_string: str) -> Iterator[str]:
    """function_app served over real HTTP by the local host, triggers and all; its URL."""
    import function_app
    from local.host.config import load_host_json
    from tests.plugins.localhost import ROOT, start_threaded_host

    host = start_threaded_host(
        function_app.app, storage_connection_string, host_json=load_host_json(ROOT / "host.json")
    )
    yield host.url
    host.stop()


class Api:
    """A client of the API over HTTP, with an account's key."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def call(
        self, method: str, path: str, body: Any = None, **kwargs: Any
    ) -> tuple[int, Any]:
        if body is not None:
            kwargs["json"] = body
        async with self.session.request(method, path, **kwargs) as response:
            text = await response.text()
            content_type = response.headers.get("Content-Type", "")
            return response.status, json.loads(text) if "json" in content_type and text else text


@pytest.fixture
async def api(api_host: str, api_key: str) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession(api_host, headers={"Authorization": api_key}) as session:
        yield Api(session)
