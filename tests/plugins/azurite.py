"""Azurite for the whole test session: in memory, on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from local.azurite import start_azurite


@pytest.fixture(scope="session")
def storage_connection_string() -> Iterator[str]:
    azurite = start_azurite()
    try:
        yield azurite.connection_string
    finally:
        azurite.stop()
