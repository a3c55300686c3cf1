"""Limits on what one tenant can make the app store or do (issue 13): each one a step past
its bound gets a 4xx problem+json and nothing is stored."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import azure.functions as func
import pytest

from shared.api import http
from shared.api.ratelimit import Buckets, RateLimiter
from shared.events import EventStore, EventTooLarge, MalformedEvent, new_event
from shared.models.connection import Connection
from shared.services import Services
from shared.settings import Limits
from shared.storage.apikeys import Grant
from tests.factories import NOW, PATH, UNVERIFIED, body, cli
from tests.plugins.app import Api


async def nothing_stored(api: Api) -> bool:
    return await api.call("GET", PATH) == (200, [])


async def test_a_body_over_the_limit_is_413_before_it_is_parsed(api: Api) -> None:
    limit = Limits().body_bytes
    padded = json.dumps(body(Title="t")).encode()
    padded = padded[:-1] + b" " * (limit + 1 - len(padded)) + b"}"
    assert len(padded) == limit + 1
    headers = {"Content-Type": "application/json"}
    status, problem = await api.call("POST", UNVERIFIED, data=padded, headers=headers)
    assert status == 413 and problem["status"] == 413
    status, _ = await api.call("POST", UNVERIFIED, data=padded[: limit - 1] + b"}", headers=headers)
    assert status == 200  # at the limit: taken
    await api.call("DELETE", f"{PATH}/{(await api.call('GET', PATH))[1][0]['Uid']}")
    assert await nothing_stored(api)


@pytest.mark.parametrize(
    "raw",
    [
        '{"Title": "a", "Title": "b", "QueueName": "q"}',
        '{"Title": "a", "QueueName": "q", "AdvancedSettings": {"X": {}, "X": {}}}',
    ],
)
async def test_duplicate_property_names_are_refused(api: Api, raw: str) -> None:
    document = json.loads(raw)
    sent = raw.replace('"QueueName": "q"', json.dumps(body(**document))[1:-1])
    status, problem = await api.call(
        "POST", UNVERIFIED, data=sent, headers={"Content-Type": "application/json"}
    )
    assert status == 400 and "appears twice" in str(problem["errors"])
    assert await nothing_stored(api)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"EnabledEvents": ["*"] * 101}, "EnabledEvents"),
        ({"AdvancedSettings": {f"K{i}": {} for i in range(101)}}, "AdvancedSettings"),
        ({"Title": "t" * 201}, "Title"),
        ({"QueueName": "q" * 261}, "QueueName"),
        ({"BlobContainerName": "c" * 64}, "BlobContainerName"),
        ({"ServiceBusConnectionString": "Endpoint=sb://x/;" + "a" * 2048}, "ServiceBus"),
    ],
)
async def test_lists_and_strings_one_past_their_bound(
    api: Api, changes: dict[str, Any], field: str
) -> None:
    status, problem = await api.call("POST", UNVERIFIED, body(**changes))
    assert status == 400 and any(k.startswith(field) for k in problem["errors"])
    assert await nothing_stored(api)


async def test_connections_per_account(api: Api, services: Services, account: str) -> None:
    most = Limits().connections_per_account
    template = Connection.model_validate({**body(), "Uid": str(uuid.uuid4())})
    await asyncio.gather(
        *(
            services.connections.add(
                account, template.model_copy(update={"uid": uuid.uuid4()}), NOW
            )
            for _ in range(most)
        )
    )
    status, problem = await api.call("POST", UNVERIFIED, body())
    assert status == 409 and str(most) in problem["detail"]
    assert await services.connections.count(account) == most


async def test_a_listing_cannot_reach_deeper_than_the_bound(api: Api) -> None:
    uid = (await api.call("POST", UNVERIFIED, body()))[1]["Uid"]
    messages = f"{PATH}/{uid}/messages"
    assert (await api.call("GET", messages, params={"Page": "100", "PageSize": "500"}))[0] == 200
    status, problem = await api.call("GET", messages, params={"Page": "101", "PageSize": "500"})
    assert status == 400 and list(problem["errors"]) == ["PageSize"]


# ------------------------------------------------------------------------ events


async def test_an_event_over_the_limit_is_refused_before_it_is_queued(services: Services) -> None:
    store = EventStore(services.events.bodies, max_bytes=1000)
    small = new_event("acct", "Employee.Created", NOW, data="x" * 800)
    assert await store.to_payload(small)
    large = new_event("acct", "Employee.Created", NOW, data="x" * 1000)
    with pytest.raises(EventTooLarge):
        await store.to_payload(large)


async def test_a_stored_event_over_the_limit_is_malformed(services: Services) -> None:
    large = new_event("acct", "Employee.Created", NOW, data="x" * 60_000)
    pointer = await services.events.to_payload(large)  # over 48 KB: stored as a blob
    assert set(pointer) == {"EventBlob"}
    assert (await services.events.from_payload(pointer)).event_id == large.event_id
    with pytest.raises(MalformedEvent):
        await EventStore(services.events.bodies, max_bytes=50_000).from_payload(pointer)


def test_event_publish_refuses_an_event_over_the_limit(
    app_environment: dict[str, str], account: str
) -> None:
    data = json.dumps("x" * 2000)
    env = {**app_environment, "LIMIT_EVENT_BYTES": "1000"}
    result = cli(
        env, "event", "publish", "--account", account, "--key", "Order.Created", "--data", data
    )
    assert result.returncode == 2 and "at most 1000" in result.stderr


# ------------------------------------------------------------------------- rates


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Iterator[Clock]:
    """The API's rate limiter with small limits and this clock, for the test's duration."""
    clock = Clock()
    limits = Limits(
        requests_per_second=1,
        request_burst=3,
        sends_per_second=0.1,
        send_burst=1,
        failed_keys_per_minute=2,
    )
    saved, http.rate_limiter = http.rate_limiter, RateLimiter(limits, clock)
    yield clock
    http.rate_limiter = saved


async def test_requests_per_key_get_429_with_retry_after(api: Api, clock: Clock) -> None:
    for _ in range(3):
        assert (await api.call("GET", PATH))[0] == 200
    async with api.session.get(PATH) as response:
        assert response.status == 429 and response.headers["Retry-After"] == "1"
        assert response.content_type == "application/problem+json"
    clock.now += 1
    assert (await api.call("GET", PATH))[0] == 200


async def test_test_deliveries_have_a_stricter_rate(
    api: Api, clock: Clock, servicebus_connection_string: str, unique_queue: str
) -> None:
    sb = servicebus_connection_string
    uid = (
        await api.call(
            "POST", UNVERIFIED, body(ServiceBusConnectionString=sb, QueueName=unique_queue)
        )
    )[1]["Uid"]
    assert (await api.call("POST", f"{PATH}/{uid}/test"))[0] == 200
    async with api.session.post(f"{PATH}/{uid}/test") as response:
        assert response.status == 429 and response.headers["Retry-After"] == "10"
    clock.now += 5  # the requests' own bucket refills; the sends' does not yet
    status, page = await api.call("GET", f"{PATH}/{uid}/messages")
    assert status == 200 and page["TotalHits"] == 1  # the refused test sent nothing


async def test_unknown_keys_are_limited_per_client_without_reading_the_table(
    services: Services, api_key: str
) -> None:
    reads: list[str | None] = []

    class CountingKeys:
        digest_of = staticmethod(services.api_keys.digest_of)

        async def grant_of(self, authorization: str | None) -> Grant | None:
            reads.append(authorization)
            return await services.api_keys.grant_of(authorization)

    fake_services: Any = SimpleNamespace(
        settings=services.settings, api_keys=CountingKeys()
    )  # the real key table behind a call counter
    clock = Clock()
    saved = http.rate_limiter
    http.rate_limiter = RateLimiter(Limits(failed_keys_per_minute=3), clock)
    import function_app  # noqa: F401  (registers the routes, when this test runs alone)

    spec = http.ENDPOINTS["list_connections"]
    try:
        outcomes = []
        for _ in range(50):
            request = func.HttpRequest(
                "GET",
                "/",
                headers={"Authorization": f"sbd_{uuid.uuid4().hex}", "X-Forwarded-For": "1.2.3.4"},
                body=b"",
            )
            found = await http.authenticate(request, fake_services, spec)
            assert isinstance(found, func.HttpResponse)
            outcomes.append(found.status_code)
        assert outcomes == [401] * 3 + [429] * 47 and len(reads) == 3
        other = func.HttpRequest("GET", "/", headers={"Authorization": api_key}, body=b"")
        assert isinstance(await http.authenticate(other, fake_services, spec), Grant)
        clock.now += 20  # a minute's share of 3: one more try
        refused = await http.authenticate(request, fake_services, spec)
        assert isinstance(refused, func.HttpResponse) and refused.status_code == 401
    finally:
        http.rate_limiter = saved


def test_buckets_forget_the_least_recent_beyond_their_bound() -> None:
    buckets = Buckets(rate=1, burst=1, clock=Clock(), most=100)
    for n in range(20_000):
        assert buckets.take(f"client-{n}") == 0
    assert len(buckets) == 100
    assert buckets.take("client-19999") > 0 and buckets.waiting("client-0") == 0


async def test_only_known_keys_are_cached_and_never_more_than_the_bound(
    services: Services, account: str
) -> None:
    from shared.storage.apikeys import ApiKeyRepository

    keys = ApiKeyRepository(services.api_keys._table)
    keys.CACHE_MOST = 2
    for _ in range(20):
        assert await keys.account_of(f"sbd_{uuid.uuid4().hex}") is None
    assert len(keys._cache) == 0
    made = [(await keys.create(account, NOW))[0] for _ in range(3)]
    for key in made:
        assert await keys.account_of(f"Bearer {key}") == account
    assert len(keys._cache) == 2
