"""GET /v1/health's rule (shared/service/readiness.py), without HTTP: healthy when the app's
services open and its storage answers; `Unavailable` with a fixed text otherwise, the reason
in the log only."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from local.azurite import start_azurite
from shared.errors import Unavailable
from shared.service import readiness
from shared.services import Services, get_services
from shared.settings import Settings, StorageTarget


async def test_healthy_when_storage_answers(app_environment: dict[str, str]) -> None:
    await readiness.check(get_services)  # the session's Azurite: no error


async def test_incomplete_settings_are_unavailable_and_named_in_the_log_only(
    app_environment: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delenv("ENCRYPTION_KEYS")

    async def open_services() -> Services:  # as get_services opens them on a cold start
        return await Services.open(Settings.from_environment())

    with caplog.at_level(logging.ERROR), pytest.raises(Unavailable) as raised:
        await readiness.check(open_services)
    assert str(raised.value) == "the app's settings are incomplete"
    assert "ENCRYPTION_KEYS" in caplog.text and "ENCRYPTION_KEYS" not in str(raised.value)


async def test_storage_that_does_not_answer_is_unavailable_without_its_address(
    app_environment: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """An Azurite of the test's own, stopped: the SDK's retries end in about 5 s."""
    azurite = start_azurite()
    settings = dataclasses.replace(
        Settings.from_environment(), storage=StorageTarget(azurite.connection_string)
    )
    services = await Services.open(settings)
    azurite.stop()

    async def open_services() -> Services:
        return services

    try:
        with caplog.at_level(logging.WARNING), pytest.raises(Unavailable) as raised:
            await readiness.check(open_services)
    finally:
        await services.close()
    assert str(raised.value) == "the app's storage does not answer"
    assert "does not answer" in caplog.text and "127.0.0.1" not in caplog.text
