"""Another account's ids are a 404 on every route that takes a connection or message id
(issue 13). The routes come from the app's own OpenAPI document, so a new route is covered
the day it is added."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
import pytest

import function_app  # noqa: F401  (registers every route)
from shared.api import openapi
from shared.services import Services
from tests.factories import PATH, UNVERIFIED, body
from tests.plugins.app import Api

IDS = re.compile(r"{(\w+)}")


def routes_taking_ids() -> list[tuple[str, str]]:
    found = []
    for path, operations in openapi.document()["paths"].items():
        for method, operation in operations.items():
            # A PUT names its connection in the body; a POST with a Uid makes one of the
            # caller's own (Uids are per account), so it takes no other account's id.
            replaces = method == "put" and "ConnectionInput" in str(operation.get("requestBody"))
            if IDS.search(path) or replaces:
                found.append((method.upper(), path))
    return found


ROUTES = routes_taking_ids()


def test_the_document_lists_the_known_routes() -> None:
    assert ("GET", "/v1/azureservicebusconnections/{uid}") in ROUTES
    assert ("PUT", "/v1/azureservicebusconnections") in ROUTES
    assert len(ROUTES) >= 7


@pytest.fixture
async def owner(
    api_host: str, services: Services, servicebus_connection_string: str, unique_queue: str
) -> AsyncIterator[tuple[Api, dict[str, str], dict[str, Any]]]:
    """Another account, with a connection and one message record of its own."""
    account = f"owner-{uuid.uuid4().hex[:8]}"
    key, _ = await services.api_keys.create(account, services.clock())
    _, spare = await services.api_keys.create(account, services.clock())  # for /v1/apikeys/{id}
    async with aiohttp.ClientSession(api_host, headers={"Authorization": key}) as session:
        other = Api(session)
        sent = body(ServiceBusConnectionString=servicebus_connection_string, QueueName=unique_queue)
        status, connection = await other.call("POST", UNVERIFIED, sent)
        assert status == 200
        status, record = await other.call("POST", f"{PATH}/{connection['Uid']}/test")
        assert status == 200
        ids = {"uid": connection["Uid"], "connectionUid": connection["Uid"]}
        ids["messageUid"] = record["Uid"]
        ids["messageId"] = json.loads(record["RequestMetadata"])["MessageId"]
        replay = f"{PATH}/{connection['Uid']}/messages/replay"
        status, started = await other.call("POST", replay, replay_body(services))
        assert status == 202, started
        ids["replayId"] = started["ReplayId"]
        ids["keyId"] = spare.key_id
        yield other, ids, {**sent, "Uid": connection["Uid"]}


def replay_body(services: Services) -> dict[str, str]:
    return {"Since": (services.clock() - timedelta(hours=1)).isoformat()}


@pytest.mark.parametrize(("method", "route"), ROUTES)
async def test_another_accounts_ids_are_not_found(
    api: Api,
    services: Services,
    owner: tuple[Api, dict[str, str], dict[str, Any]],
    method: str,
    route: str,
) -> None:
    other, ids, connection = owner
    path = IDS.sub(lambda m: ids[m.group(1)], route)
    posted = {"replay": replay_body(services), "confirm": {"Code": "ABCDE-FGHJK"}, "rotate": {}}
    bodies = {"PUT": connection, "POST": posted.get(route.rsplit("/", 1)[-1])}
    sent = bodies.get(method)
    status, problem = await api.call(method, path, sent)
    assert status == 404, problem
    assert (await other.call(method, path, sent))[0] != 404  # the ids are real for their owner
