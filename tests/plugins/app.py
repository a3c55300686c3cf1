"""The app wired to the test session's Azurite: settings, services, accounts and keys."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from shared.crypto import KeyRing
from shared.services import Services, get_services


@pytest.fixture(scope="session")
def app_environment(storage_connection_string: str) -> Iterator[dict[str, str]]:
    """The app's settings in os.environ, as the Functions host would set them."""
    values = {
        "AzureWebJobsStorage": storage_connection_string,
        "ENCRYPTION_KEYS": KeyRing.new_key_spec("test"),
        "DELIVERY_RETRY_DELAYS": "1,1,1,1,1",
    }
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    yield values
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


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
