"""API key scopes over real HTTP (issue 26), and `POST /v1/events` for publishers outside
Azure (issue 27): each route refuses a key without its scope, and takes one that holds it."""

from __future__ import annotations

import re
import uuid
from typing import Any

import aiohttp
import pytest

import function_app  # noqa: F401  (registers every route)
from local.servicebus.emulator import Emulator
from shared.api.http import ENDPOINTS, Endpoint
from shared.models.access import EVERY_SCOPE, Scope
from shared.models.events import MOST_EVENTS_PER_REQUEST
from shared.services import Services
from tests.factories import cli
from tests.plugins.app import Api
from tests.servicebus_helpers import receive
from tests.test_api_messages import create

GUARDED = sorted((e for e in ENDPOINTS.values() if not e.public), key=lambda e: e.name)


def path_of(spec: Endpoint) -> str:
    """The route with a made-up value for each of its parameters."""
    return "/" + re.sub(r"\{[^}]+\}", str(uuid.uuid4()), spec.route)


async def answer(api_host: str, key: str, spec: Endpoint) -> tuple[int, Any]:
    async with aiohttp.ClientSession(api_host, headers={"Authorization": key}) as session:
        return await Api(session).call(spec.method, path_of(spec), {} if spec.body else None)


def test_every_route_but_the_public_ones_names_a_scope() -> None:
    assert GUARDED and all(e.scope in EVERY_SCOPE for e in GUARDED)
    assert {e.scope for e in GUARDED} == EVERY_SCOPE
    with pytest.raises(TypeError, match="scope"):
        from shared.api.http import endpoint

        endpoint(None, "GET", "v1/nothing")  # type: ignore[arg-type]


@pytest.mark.parametrize("spec", GUARDED, ids=[e.name for e in GUARDED])
async def test_a_route_refuses_a_key_without_its_scope_and_takes_one_with_it(
    spec: Endpoint, api_host: str, services: Services, account: str
) -> None:
    assert spec.scope is not None
    lacking, _ = await services.api_keys.create(
        account, services.clock(), EVERY_SCOPE - {spec.scope}
    )
    status, problem = await answer(api_host, lacking, spec)
    assert status == 403, problem
    assert problem["scope"] == spec.scope and spec.scope in problem["detail"]

    holding, _ = await services.api_keys.create(account, services.clock(), frozenset({spec.scope}))
    status, answered = await answer(api_host, holding, spec)
    assert status not in (401, 403), answered  # 400/404 for made-up values: it got past the key


async def test_published_events_are_delivered_to_the_keys_account_only(
    api: Api,
    api_host: str,
    services: Services,
    account: str,
    servicebus_emulator: Emulator,
    unique_queue: str,
) -> None:
    cs = servicebus_emulator.connection_string
    await create(api, cs, unique_queue, EnabledEvents=["Order.*"])
    publisher, _ = await services.api_keys.create(
        account, services.clock(), frozenset({Scope.EVENTS_PUBLISH})
    )
    sent = {
        "Events": [
            {"EventKey": "order.shipped", "Subject": "orders/7", "Data": {"OrderId": 7}},
            {"EventKey": "Order.Shipped", "EventId": "order-8-shipped"},
            {"EventKey": "Employee.Created"},  # not enabled: queued, not delivered here
        ]
    }
    async with aiohttp.ClientSession(api_host, headers={"Authorization": publisher}) as session:
        as_publisher = Api(session)
        status, accepted = await as_publisher.call("POST", "/v1/events", sent)
        assert status == 202, accepted
        assert len(accepted["EventIds"]) == 3 and accepted["EventIds"][1] == "order-8-shipped"
        # a publishing key reads nothing else
        status, _ = await as_publisher.call("GET", "/v1/azureservicebusconnections")
        assert status == 403
    got = await receive(cs, unique_queue, 2)
    assert sorted(m.correlation_id for m in got) == sorted(accepted["EventIds"][:2])
    assert {m.application_properties[b"AccountId"].decode() for m in got} == {account}


@pytest.mark.parametrize(
    ("sent", "field"),
    [
        ({"Events": []}, "Events"),
        ({"Events": [{"EventKey": "Order.Shipped"}] * (MOST_EVENTS_PER_REQUEST + 1)}, "Events"),
        (
            {"Events": [{"EventKey": "Order.Shipped"}, {"EventKey": "No.Such"}]},
            "Events[1].EventKey",
        ),
        ({"Events": [{"EventKey": "Order.*"}]}, "Events[0].EventKey"),
        ({"Events": [{"EventKey": "Order.Shipped", "AccountId": "someone-else"}]}, "AccountId"),
        ({"Events": [{"EventKey": "Order.Shipped", "EventId": "a/b"}]}, "EventId"),
        ({"EventKey": "Order.Shipped"}, "EventKey"),
        (
            {"Events": [{"EventKey": "Order.Shipped", "EventTimestamp": "2020-01-01T00:00:00Z"}]},
            "Events[0].EventTimestamp",
        ),
    ],
)
async def test_a_bad_batch_is_a_400_naming_the_field_and_queues_nothing(
    sent: dict[str, Any], field: str, api_host: str, services: Services, account: str
) -> None:
    publisher, _ = await services.api_keys.create(
        account, services.clock(), frozenset({Scope.EVENTS_PUBLISH})
    )
    async with aiohttp.ClientSession(api_host, headers={"Authorization": publisher}) as session:
        status, problem = await Api(session).call("POST", "/v1/events", sent)
    assert status == 400, problem
    assert any(field in name for name in problem["errors"]), problem


async def test_publishing_has_its_own_body_limit_above_one_largest_event(
    api_host: str, services: Services, account: str
) -> None:
    """LIMIT_BODY_BYTES (64 KB) would refuse an event of up to LIMIT_EVENT_BYTES (1 MiB):
    POST /v1/events is bounded by LIMIT_PUBLISH_BYTES instead, named in its 413."""
    limits = services.settings.limits
    assert limits.body_bytes < limits.event_bytes < limits.publish_bytes
    publisher, _ = await services.api_keys.create(
        account, services.clock(), frozenset({Scope.EVENTS_PUBLISH})
    )
    large = {"EventKey": "Order.Shipped", "Data": "x" * (limits.event_bytes - 1000)}
    async with aiohttp.ClientSession(api_host, headers={"Authorization": publisher}) as session:
        status, answered = await Api(session).call("POST", "/v1/events", {"Events": [large]})
        assert status == 202, answered  # one event near its own limit: taken
        many = {"Events": [large] * (limits.publish_bytes // limits.event_bytes + 1)}
        status, problem = await Api(session).call("POST", "/v1/events", many)
    assert status == 413, problem
    assert (
        problem["limit"] == "LIMIT_PUBLISH_BYTES" and str(limits.publish_bytes) in problem["detail"]
    )


async def test_the_command_line_makes_a_key_that_may_only_publish(
    app_environment: dict[str, str], api_host: str, account: str
) -> None:
    making = ("apikey", "create", "--account", account, "--scope")
    made = cli(app_environment, *making, "events:publish")
    assert made.returncode == 0, made.stderr
    key = made.stdout.splitlines()[-1]
    listed = cli(app_environment, "apikey", "list", "--account", account)
    assert "events:publish" in listed.stdout and key not in listed.stdout
    async with aiohttp.ClientSession(api_host, headers={"Authorization": key}) as session:
        status, problem = await Api(session).call("GET", "/v1/azureservicebusconnections")
    assert (status, problem["scope"]) == (403, "connections:read")
    refused = cli(app_environment, *making, "all")
    assert refused.returncode == 2 and "--scope" in refused.stderr
