"""GET /v1/health's rule (shared/service/readiness.py), without HTTP: healthy when the app's
services open and its storage answers; `Unavailable` with a fixed text otherwise, the reason
in the log only."""

from __future__ import annotations

import logging

import pytest

from shared.errors import Unavailable
from shared.service import readiness
from shared.services import Services, get_services
from shared.settings import Settings


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
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A stand-in opener: a real refused port costs the Storage SDK's retries (tens of
    # seconds); this raises what the SDK raises once they are spent.
    async def refused() -> Services:
        raise ConnectionRefusedError("connect to 10.1.2.3:10002 refused")

    with caplog.at_level(logging.WARNING), pytest.raises(Unavailable) as raised:
        await readiness.check(refused)
    assert str(raised.value) == "the app's storage does not answer"
    assert "ConnectionRefusedError" in caplog.text and "10.1.2.3" not in caplog.text
