"""A client generated from `/v1/openapi.json` by openapi-python-client imports and works.

The generator is the one a Python user reaches for first; it writes broken code (an undefined
`Unset`) when a request body lists two media types with the same schema, so the document lists
one and names the other in words. The client talks to the app over real HTTP.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import pytest

PACKAGE = "generated_sb_client"
SB = (
    "Endpoint=sb://contoso.servicebus.windows.net/;SharedAccessKeyName=send;"
    "SharedAccessKey=S3CRETKEY="
)


def generate(document: dict[str, object], into: Path) -> None:
    spec, config = into / "openapi.json", into / "config.json"
    spec.write_text(json.dumps(document))
    # No post hooks: they run ruff on the output, which only restyles it.
    config.write_text(json.dumps({"package_name_override": PACKAGE, "post_hooks": []}))
    generator = Path(sys.executable).with_name("openapi-python-client")
    options = ("--config", config, "--meta", "none", "--output-path", into / PACKAGE)
    result = subprocess.run(
        [generator, "generate", "--path", spec, *options],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Warning" not in result.stdout + result.stderr, result.stdout + result.stderr


@pytest.fixture
def client_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """Where the generated package goes; importable from there, forgotten afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
        del sys.modules[name]


async def openapi_document(api_host: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession(api_host) as anonymous,
        anonymous.get("/v1/openapi.json") as response,
    ):
        document: dict[str, Any] = await response.json()
        return document


def load(module: str) -> ModuleType:
    return importlib.import_module(f"{PACKAGE}.{module}")


async def test_a_generated_client_lists_creates_replaces_and_deletes_a_connection(
    api_host: str, api_key: str, client_package: Path
) -> None:
    document = await openapi_document(api_host)
    post = document["paths"]["/v1/azureservicebusconnections"]["post"]
    assert "application/json-patch+json" in post["requestBody"]["description"]
    generate(document, client_package)

    client = load("client").AuthenticatedClient(base_url=api_host, token=api_key)
    names = ("list_connections", "create_connection", "replace_connection", "get_connection")
    ops = {
        name.split("_")[0]: load(f"api.default.{name}") for name in (*names, "delete_connection")
    }
    connection_input = load("models").ConnectionInput
    uid = uuid.uuid4()
    async with client:
        assert await ops["list"].asyncio(client=client) == []

        body = {"Uid": str(uid), "ServiceBusConnectionString": SB, "QueueName": "orders"}
        created = await ops["create"].asyncio(  # nothing listens at SB's host: no verification
            client=client,
            body=connection_input.from_dict(body | {"EnabledEvents": ["Order.*"]}),
            verify=False,
        )
        assert created.uid == uid and created.enabled_events == ["Order.*"]
        assert created.service_bus_connection_string.endswith("SharedAccessKey=***")

        replaced = await ops["replace"].asyncio(
            client=client,
            body=connection_input.from_dict(body | {"Title": "Renamed"}),
            verify=False,
        )
        assert replaced.title == "Renamed" and replaced.enabled_events == []
        resumed = await load("api.default.resume_connection").asyncio(uid, client=client)
        assert resumed.health.status == "Healthy" and resumed.health.last_success_at is None
        [listed] = await ops["list"].asyncio(client=client)
        assert listed.to_dict() == replaced.to_dict()

        deleted = await ops["delete"].asyncio_detailed(uid, client=client)
        assert deleted.status_code == 200
        missing = await ops["get"].asyncio(uid, client=client)
        assert missing.status == 404  # the Problem model, parsed from problem+json
        assert await ops["list"].asyncio(client=client) == []


async def test_a_generated_client_starts_a_replay_and_reads_its_progress(
    api_host: str, api_key: str, client_package: Path
) -> None:
    generate(await openapi_document(api_host), client_package)
    client = load("client").AuthenticatedClient(base_url=api_host, token=api_key)
    models = load("models")
    uid = uuid.uuid4()
    async with client:
        body = {"Uid": str(uid), "ServiceBusConnectionString": SB, "QueueName": "orders"}
        create = load("api.default.create_connection")
        connection = models.ConnectionInput.from_dict(body)
        await create.asyncio(client=client, body=connection, verify=False)  # nothing listens
        since = datetime.now(UTC) - timedelta(hours=1)
        started = await load("api.default.replay_messages").asyncio(
            uid, client=client, body=models.ReplayRequest(since=since, event_keys=["Order.*"])
        )
        assert started.matched == 0  # nothing logged yet: done at once
        replay = await load("api.default.get_replay").asyncio(uid, started.replay_id, client=client)
        assert (replay.done, replay.sent, replay.failed) == (True, 0, 0)
        assert replay.only_failed and replay.event_keys == ["Order.*"]
        assert replay.since.startswith(since.strftime("%Y-%m-%dT%H:%M:%S"))  # text, in ms
