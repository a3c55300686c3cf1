"""The local Service Bus emulator for tests: in process, on a free loopback port.

- `servicebus_emulator`: one non-strict emulator for the whole session; give each test
  its own queue names (`unique_queue`) since the emulator is shared.
- `servicebus_emulator_factory`: `factory(strict=True, queues=[...], ...)` starts an
  emulator with other settings (any `Emulator` argument); all are stopped at teardown.
  Use it for fault injection, so that faults never reach other tests.
- `servicebus_connection_string`: the session emulator's, or the value of the
  environment variable SERVICEBUS_CONNECTION_STRING to run against a real namespace or
  Microsoft's emulator instead (tests that inject faults need the local emulator).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from local.servicebus.emulator import Emulator

CONNECTION_STRING_VARIABLE = "SERVICEBUS_CONNECTION_STRING"


@pytest.fixture(scope="session")
def servicebus_emulator() -> Iterator[Emulator]:
    with Emulator() as emulator:
        yield emulator


@pytest.fixture
def servicebus_emulator_factory() -> Iterator[Callable[..., Emulator]]:
    started: list[Emulator] = []

    def factory(**settings: Any) -> Emulator:
        emulator = Emulator(**settings).start()
        started.append(emulator)
        return emulator

    yield factory
    for emulator in started:
        emulator.stop()


@pytest.fixture(scope="session")
def servicebus_connection_string(request: pytest.FixtureRequest) -> str:
    configured = os.environ.get(CONNECTION_STRING_VARIABLE)
    if configured:
        return configured
    emulator: Emulator = request.getfixturevalue("servicebus_emulator")
    return emulator.connection_string


@pytest.fixture(scope="session")
def issuer_key() -> Any:
    """The signing key of a test token issuer (Entra ID's stand-in): emulators made with
    `jwt_issuer_key=issuer_key.public_key()` accept tokens it signed (tests/entra.py)."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def unique_queue() -> str:
    """A queue name no other test uses (the session emulator creates it on first use)."""
    return f"test-{uuid.uuid4().hex[:12]}"
