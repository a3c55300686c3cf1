"""The connections API over real HTTP through the local host (CONTRACT section 2)."""

import json
import uuid

import aiohttp
import pytest

from shared.services import Services
from tests.factories import PATH, SB, STORAGE, UNVERIFIED, body
from tests.plugins.app import Api


async def test_create_get_list_replace_delete(api: Api) -> None:
    status, created = await api.call("POST", UNVERIFIED, body())
    assert status == 200
    uid = created["Uid"]
    assert uuid.UUID(uid)
    assert created["Active"] is True and created["QueueName"] == "platform-events"
    assert created["EnabledEvents"] == ["Employee.Created", "Order.*"]
    assert created["ServiceBusConnectionString"].endswith("SharedAccessKey=***")
    assert "AccountKey=***" in created["BlobContainerConnectionString"]

    assert await api.call("GET", f"{PATH}/{uid}") == (200, created)
    assert await api.call("GET", PATH) == (200, [created])

    status, replaced = await api.call(
        "PUT", UNVERIFIED, {**created, "Title": "Renamed", "Active": False}
    )
    assert status == 200 and replaced["Title"] == "Renamed" and replaced["Active"] is False

    status, text = await api.call("DELETE", f"{PATH}/{uid}")
    assert (status, text) == (200, "")
    assert (await api.call("GET", f"{PATH}/{uid}"))[0] == 404
    assert (await api.call("DELETE", f"{PATH}/{uid}"))[0] == 404
    assert await api.call("GET", PATH) == (200, [])


async def test_secrets_never_come_back_and_a_masked_put_keeps_them(
    api: Api, services: Services, account: str
) -> None:
    status, created = await api.call("POST", UNVERIFIED, body())
    everything = str(created) + str(await api.call("GET", PATH))
    assert "S3CRET" not in everything and "QUNDT1VOVEtFWQ" not in everything
    status, _ = await api.call("PUT", UNVERIFIED, {**created, "QueueName": "renamed"})
    assert status == 200
    stored = await services.connections.get(account, uuid.UUID(created["Uid"]))
    assert stored.connection.service_bus_connection_string == SB
    assert stored.connection.blob_container_connection_string == STORAGE
    assert stored.connection.queue_name == "renamed"


async def test_post_with_a_given_uid_and_a_duplicate_is_a_conflict(api: Api) -> None:
    uid = str(uuid.uuid4())
    status, created = await api.call("POST", UNVERIFIED, body(Uid=uid))
    assert status == 200 and created["Uid"] == uid
    status, problem = await api.call("POST", UNVERIFIED, body(Uid=uid))
    assert status == 409 and problem["status"] == 409


async def test_put_needs_a_known_uid(api: Api) -> None:
    status, problem = await api.call("PUT", UNVERIFIED, body())
    assert status == 400 and "Uid" in problem["errors"]
    status, _ = await api.call("PUT", UNVERIFIED, body(Uid=str(uuid.uuid4())))
    assert status == 404


async def test_post_refuses_the_mask_as_a_secret(api: Api) -> None:
    status, problem = await api.call(
        "POST", UNVERIFIED, body(ServiceBusConnectionString=SB.replace("S3CRET=", "***"))
    )
    assert status == 400 and "ServiceBusConnectionString" in problem["errors"]


async def test_another_accounts_connection_is_not_found(
    api: Api, api_host: str, services: Services
) -> None:
    _, created = await api.call("POST", UNVERIFIED, body())
    other_key, _ = await services.api_keys.create("other-account", services.clock())
    async with aiohttp.ClientSession(api_host, headers={"Authorization": other_key}) as s:
        other = Api(s)
        assert (await other.call("GET", f"{PATH}/{created['Uid']}"))[0] == 404
        assert (await other.call("DELETE", f"{PATH}/{created['Uid']}"))[0] == 404
        assert (await other.call("PUT", UNVERIFIED, {**created, "Title": "x"}))[0] == 404
        assert (await other.call("POST", UNVERIFIED, body(Uid=created["Uid"])))[0] == 200  # its own
        assert created["Uid"] not in str((await other.call("GET", PATH))[1][0]["Title"])
        assert (await other.call("GET", f"{PATH}/{created['Uid']}/messages"))[0] == 200


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": ""}, {"Authorization": "sbd_unknown"}, {"Authorization": "Bearer"}],
)
async def test_missing_or_unknown_keys_are_401(api_host: str, headers: dict[str, str]) -> None:
    async with aiohttp.ClientSession(api_host, headers=headers) as session:
        for method, path in [
            ("GET", PATH),
            ("POST", PATH),
            ("GET", "/v1/events"),
            ("GET", f"{PATH}/{uuid.uuid4()}/messages"),
        ]:
            async with session.request(method, path, json=body()) as response:
                assert response.status == 401
                assert response.content_type == "application/problem+json"


async def test_bearer_keys_are_accepted(api_host: str, api_key: str) -> None:
    headers = {"Authorization": f"Bearer {api_key}"}
    async with aiohttp.ClientSession(api_host, headers=headers) as s, s.get(PATH) as response:
        assert response.status == 200


async def test_property_names_ignore_case_and_both_content_types_are_accepted(api: Api) -> None:
    lower = {k.lower(): v for k, v in body().items()}
    status, created = await api.call(
        "POST",
        UNVERIFIED,
        data=json.dumps(lower),
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert status == 200 and created["QueueName"] == "platform-events"


@pytest.mark.parametrize(
    ("data", "content_type", "status", "field"),
    [
        ("{not json", "application/json", 400, None),
        ("[1, 2]", "application/json", 400, "$"),
        ('"text"', "application/json", 400, "$"),
        ("", "application/json", 400, None),
        ('{"QueueName": 5}', "application/json", 400, "QueueName"),
        ('{"Colour": "blue"}', "application/json", 400, "Colour"),
        ("{}", "text/plain", 415, None),
    ],
)
async def test_bad_bodies_get_problem_details(
    api: Api, data: str, content_type: str, status: int, field: str | None
) -> None:
    got, problem = await api.call(
        "POST", UNVERIFIED, data=data, headers={"Content-Type": content_type}
    )
    assert got == status
    assert problem["status"] == status and problem["title"] and "type" in problem
    if field:
        assert field in problem["errors"]


async def test_validation_errors_name_each_field(api: Api) -> None:
    status, problem = await api.call(
        "POST",
        UNVERIFIED,
        body(
            QueueName="/bad",
            BlobContainerName="Bad_Name",
            EnabledEvents=["Nope.Created"],
            ServiceBusConnectionString="Endpoint=http://x",
        ),
    )
    assert status == 400
    assert {"QueueName", "BlobContainerName", "EnabledEvents", "ServiceBusConnectionString"} <= set(
        problem["errors"]
    )
    assert "[0]" in str(problem["errors"]["EnabledEvents"])  # by position: input never echoed


async def test_a_uid_that_is_not_a_uuid_is_not_found(api: Api) -> None:
    status, problem = await api.call("GET", f"{PATH}/not-a-uuid")
    assert status == 404 and problem["status"] == 404


async def test_catalog_openapi_and_health(api: Api, api_host: str) -> None:
    status, events = await api.call("GET", "/v1/events")
    keys = [e["EventKey"] for e in events]
    assert status == 200 and "System.Test" in keys and "Employee.Created" in keys
    assert all(e["Description"] for e in events)
    async with aiohttp.ClientSession(api_host) as anonymous:
        async with anonymous.get("/v1/openapi.json") as response:
            document = await response.json()
            assert response.status == 200 and document["openapi"].startswith("3.")
        async with anonymous.get("/v1/health") as response:
            health = await response.json()
            assert response.status == 200 and health["Status"] == "Healthy"
            assert "AccountKey" not in str(health) and "devstoreaccount1" not in str(health)


def test_openapi_covers_every_http_function_of_the_app() -> None:
    import function_app
    from local.host.config import indexed_functions
    from shared.api import openapi
    from shared.api.http import ENDPOINTS

    paths = openapi.document()["paths"]
    # Only the portal's own routes (a page and its session) stay out of the document.
    unlisted = {e.route for e in ENDPOINTS.values() if not e.listed}
    assert unlisted and all(route.startswith("portal") for route in unlisted)
    for function in indexed_functions(function_app.app):
        trigger = function.get_trigger().get_dict_repr()
        if trigger["type"] == "httpTrigger" and trigger["route"] not in unlisted:
            for method in trigger["methods"]:
                assert str(method).split(".")[-1].lower() in paths["/" + trigger["route"]]


def test_openapi_names_integer_enum_values() -> None:
    # Without names a client generator writes MessageStatus.VALUE_1 / VALUE_2 (issue 26).
    import function_app  # noqa: F401  (registers the routes the document describes)
    from shared.api import openapi

    status = openapi.document()["components"]["schemas"]["MessageStatus"]
    assert status["enum"] == [1, 2]
    assert status["x-enum-varnames"] == ["SUCCEEDED", "FAILED"]
