"""API keys as an API (issue 26) over real HTTP: made with scopes, connections and expiry by
a key that holds them (no escalation), the secret shown once, rotation with an overlap, and
one account's keys out of another's reach. Expiry and overlap run on an injected clock."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

import function_app  # noqa: F401  (registers every route)
from shared.api.http import ENDPOINTS, Endpoint
from shared.models.access import EVERY_SCOPE, Scope
from shared.services import Services
from shared.storage import clients
from shared.storage.apikeys import ApiKeyRepository, NewKey
from tests.factories import PATH, UNVERIFIED, body
from tests.plugins.app import Api

KEYS = "/v1/apikeys"


async def as_key(api_host: str, key: str, method: str, path: str, body: Any = None) -> Any:
    async with aiohttp.ClientSession(api_host, headers={"Authorization": key}) as session:
        return await Api(session).call(method, path, body)


async def test_a_key_is_made_listed_read_and_deleted_and_its_secret_shown_once(
    api: Api, api_host: str
) -> None:
    expires = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    status, made = await api.call(
        "POST",
        KEYS,
        {"Name": "ci publisher", "Scopes": ["events:publish"], "ExpiresAt": expires},
    )
    assert status == 201, made
    secret, key_id = made["Key"], made["KeyId"]
    assert made["Scopes"] == ["events:publish"] and made["Name"] == "ci publisher"
    assert made["ExpiresAt"] and made["ConnectionUids"] is None

    status, listed = await api.call("GET", KEYS)
    assert status == 200 and key_id in [k["KeyId"] for k in listed]
    status, one = await api.call("GET", f"{KEYS}/{key_id}")
    assert status == 200 and one["Name"] == "ci publisher"
    assert secret not in str(listed) + str(one) and "Key" not in one  # shown once only

    status, problem = await as_key(api_host, secret, "GET", "/v1/azureservicebusconnections")
    assert status == 403 and problem["scope"] == "connections:read"  # holds only its scope

    assert (await api.call("DELETE", f"{KEYS}/{key_id}"))[0] == 204
    assert (await api.call("GET", f"{KEYS}/{key_id}"))[0] == 404
    assert (await as_key(api_host, secret, "GET", "/v1/events"))[0] == 401


@pytest.mark.parametrize(
    ("asked", "field"),
    [
        ({"Name": "x", "Scopes": ["keys:everything"]}, "Scopes[0]"),
        ({"Name": "x", "Scopes": []}, "Scopes"),
        ({"Scopes": ["events:publish"]}, "Name"),
        (
            {"Name": "x", "Scopes": ["events:publish"], "ExpiresAt": "2001-01-01T00:00:00Z"},
            "ExpiresAt",
        ),
        ({"Name": "x", "Scopes": ["events:publish"], "Secret": "mine"}, "Secret"),
    ],
)
async def test_a_bad_key_request_is_a_400_naming_the_field(
    api: Api, asked: dict[str, Any], field: str
) -> None:
    status, problem = await api.call("POST", KEYS, asked)
    assert status == 400, problem
    assert field in problem["errors"]


async def test_a_key_grants_only_what_it_holds(
    api_host: str, services: Services, account: str
) -> None:
    uid = uuid.uuid4()
    soon = services.clock() + timedelta(days=1)
    maker, _ = await services.api_keys.create(
        account,
        services.clock(),
        NewKey(frozenset({Scope.KEYS_MANAGE, Scope.MESSAGES_READ}), "m", frozenset({uid}), soon),
    )
    later = (soon + timedelta(days=1)).isoformat()
    within = (soon - timedelta(hours=1)).isoformat()
    refused = [
        ({"Name": "x", "Scopes": ["connections:write"]}, "Scopes"),
        ({"Name": "x", "Scopes": ["messages:read"], "ExpiresAt": within}, "ConnectionUids"),
        (
            {"Name": "x", "Scopes": ["messages:read"], "ConnectionUids": [str(uuid.uuid4())]},
            "ConnectionUids",
        ),
        ({"Name": "x", "Scopes": ["messages:read"], "ConnectionUids": [str(uid)]}, "ExpiresAt"),
        (
            {
                "Name": "x",
                "Scopes": ["messages:read"],
                "ConnectionUids": [str(uid)],
                "ExpiresAt": later,
            },
            "ExpiresAt",
        ),
    ]
    for asked, field in refused:
        status, problem = await as_key(api_host, maker, "POST", KEYS, asked)
        assert status == 400 and field in problem["errors"], (asked, problem)
    allowed = {
        "Name": "x",
        "Scopes": ["messages:read"],
        "ConnectionUids": [str(uid)],
        "ExpiresAt": within,
    }
    status, made = await as_key(api_host, maker, "POST", KEYS, allowed)
    assert status == 201, made
    assert made["ConnectionUids"] == [str(uid)]


async def test_a_key_restricted_to_connections_is_refused_others(
    api: Api, api_host: str, services: Services, account: str
) -> None:
    made = [(await api.call("POST", UNVERIFIED, body()))[1]["Uid"] for _ in range(2)]
    mine, other = made
    scopes = frozenset({Scope.CONNECTIONS_READ, Scope.CONNECTIONS_WRITE})
    key, _ = await services.api_keys.create(
        account, services.clock(), NewKey(scopes, "r", frozenset({uuid.UUID(mine)}))
    )
    status, listed = await as_key(api_host, key, "GET", PATH)
    assert status == 200 and [c["Uid"] for c in listed] == [mine]
    assert (await as_key(api_host, key, "GET", f"{PATH}/{mine}"))[0] == 200
    status, problem = await as_key(api_host, key, "GET", f"{PATH}/{other}")
    assert status == 403 and "uid" in problem["errors"]
    status, problem = await as_key(api_host, key, "PUT", UNVERIFIED, body(Uid=other))
    assert status == 403 and "Uid" in problem["errors"]
    status, problem = await as_key(api_host, key, "POST", UNVERIFIED, body())  # a new uid
    assert status == 403 and "Uid" in problem["errors"]
    assert (await as_key(api_host, key, "PUT", UNVERIFIED, body(Uid=mine)))[0] == 200


async def test_one_account_cannot_see_rotate_or_delete_anothers_keys(
    api: Api, api_host: str, services: Services
) -> None:
    other, _ = await services.api_keys.create(f"acct-{uuid.uuid4().hex[:12]}", services.clock())
    theirs = (
        await as_key(api_host, other, "POST", KEYS, {"Name": "b", "Scopes": ["keys:manage"]})
    )[1]["KeyId"]
    assert theirs not in [k["KeyId"] for k in (await api.call("GET", KEYS))[1]]
    assert (await api.call("GET", f"{KEYS}/{theirs}"))[0] == 404
    assert (await api.call("POST", f"{KEYS}/{theirs}/rotate", {}))[0] == 404
    assert (await api.call("DELETE", f"{KEYS}/{theirs}"))[0] == 404
    assert (await as_key(api_host, other, "GET", f"{KEYS}/{theirs}"))[0] == 200


async def test_rotation_over_http_returns_a_new_secret_and_bounds_the_overlap(
    api: Api, api_host: str
) -> None:
    made = (await api.call("POST", KEYS, {"Name": "r", "Scopes": ["connections:read"]}))[1]
    path = f"{KEYS}/{made['KeyId']}/rotate"
    status, problem = await api.call("POST", path, {"OverlapSeconds": 8 * 24 * 3600})
    assert status == 400 and "OverlapSeconds" in problem["errors"]

    status, rotated = await api.call("POST", path, {"OverlapSeconds": 3600})
    assert status == 200, rotated
    assert rotated["Key"] != made["Key"] and rotated["KeyId"] == made["KeyId"]
    assert rotated["PreviousKeyExpiresAt"]
    for secret in (made["Key"], rotated["Key"]):  # within the overlap: both work
        assert (await as_key(api_host, secret, "GET", "/v1/events"))[0] == 200
    assert len([k for k in (await api.call("GET", KEYS))[1] if k["KeyId"] == made["KeyId"]]) == 1

    status, again = await api.call("POST", path, {"OverlapSeconds": 0})
    assert status == 200
    for secret in (made["Key"], rotated["Key"]):  # no overlap: the old secrets stop at once
        assert (await as_key(api_host, secret, "GET", "/v1/events"))[0] == 401
    assert (await as_key(api_host, again["Key"], "GET", "/v1/events"))[0] == 200


async def test_expiry_and_the_rotation_overlap_follow_the_clock(
    services: Services, account: str
) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    clock = [now]
    table = await services.storage.table(clients.API_KEYS_TABLE)
    keys = ApiKeyRepository(table, cache_seconds=60, clock=lambda: clock[0])
    expiring, _ = await keys.create(
        account, now, NewKey(EVERY_SCOPE, "e", None, now + timedelta(days=1))
    )
    old, info = await keys.create(account, now)
    assert await keys.grant_of(expiring) and await keys.grant_of(old)  # both cached now

    new, _, old_ends = await keys.rotate(info.key_id, account, timedelta(hours=2))
    assert old_ends == now + timedelta(hours=2)
    clock[0] = now + timedelta(hours=1)
    assert await keys.grant_of(old) and await keys.grant_of(new)
    clock[0] = now + timedelta(hours=2)
    assert await keys.grant_of(old) is None and await keys.grant_of(new)
    assert await keys.grant_of(expiring)
    clock[0] = now + timedelta(days=1)
    assert await keys.grant_of(expiring) is None  # even from the cache
    assert [k.key_id for k in await keys.for_account(account)] == [info.key_id]


ACCOUNT_WIDE = sorted(
    (e for e in ENDPOINTS.values() if not e.public and not e.restricted_keys), key=lambda e: e.name
)


def test_the_account_wide_routes_are_the_audit_log_publishing_and_consent() -> None:
    assert {e.name for e in ACCOUNT_WIDE} == {"list_audit", "publish_events", "consent_link"}


@pytest.mark.parametrize("spec", ACCOUNT_WIDE, ids=[e.name for e in ACCOUNT_WIDE])
async def test_a_key_restricted_to_connections_is_refused_account_wide_routes(
    spec: Endpoint, api: Api, api_host: str, services: Services, account: str
) -> None:
    """Each reaches past the key's connections (every connection's changes, events for all
    of them, a tenant bound to the whole account): 403, whatever scopes the key holds."""
    mine = (await api.call("POST", UNVERIFIED, body()))[1]["Uid"]
    key, _ = await services.api_keys.create(
        account, services.clock(), NewKey(EVERY_SCOPE, "r", frozenset({uuid.UUID(mine)}))
    )
    path = "/" + spec.route
    status, problem = await as_key(api_host, key, spec.method, path, {} if spec.body else None)
    assert status == 403 and "account-wide" in problem["detail"], problem


async def test_a_restricted_key_manages_only_keys_within_its_connections(
    api: Api, api_host: str, services: Services, account: str
) -> None:
    """Filtered, not refused: rotating a wider key would hand a restricted key its secret."""
    mine = uuid.UUID((await api.call("POST", UNVERIFIED, body()))[1]["Uid"])
    manager, made = await services.api_keys.create(
        account, services.clock(), NewKey(EVERY_SCOPE, "m", frozenset({mine}))
    )
    status, narrow = await as_key(
        api_host,
        manager,
        "POST",
        KEYS,
        {"Name": "n", "Scopes": ["messages:read"], "ConnectionUids": [str(mine)]},
    )
    assert status == 201, narrow
    wide = (await api.call("POST", KEYS, {"Name": "w", "Scopes": ["messages:read"]}))[1]
    status, listed = await as_key(api_host, manager, "GET", KEYS)
    assert status == 200 and {k["KeyId"] for k in listed} == {made.key_id, narrow["KeyId"]}
    for method, suffix, sent in (("GET", "", None), ("POST", "/rotate", {}), ("DELETE", "", None)):
        path = f"{KEYS}/{wide['KeyId']}{suffix}"
        assert (await as_key(api_host, manager, method, path, sent))[0] == 404, path
    assert (await as_key(api_host, manager, "POST", f"{KEYS}/{narrow['KeyId']}/rotate", {}))[
        0
    ] == 200
    assert (await as_key(api_host, wide["Key"], "GET", f"{PATH}/{mine}/messages"))[0] == 200
