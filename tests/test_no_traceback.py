"""No response carries a traceback, ever (issue 23, finding 4): every route of the OpenAPI
document is swept with hostile input over real HTTP, and every HTTP function of the app is
called while the app's own storage fails in the middle of a request."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import azure.functions as func
import pytest

from shared.api.http import ENDPOINTS

LEAKS = re.compile(r'Traceback|File "|\.py\b|line \d+, in |Error\(', re.IGNORECASE)
PATH_VALUES = ["x", str(uuid.uuid4()), "00000000-0000-0000-0000-000000000000", "%00", "..%2F.."]
BODIES = [b"{", b"[]", b"null", b'{"Uid": 1}', b'{"Since": "0001-01-01T00:00:00Z"}', b"\xff\xfe"]
QUERIES = [
    {},
    {"since": "0001-01-01T00:00:00Z", "until": "9999-12-31T23:59:59Z"},
    {"page": "-1", "pageSize": "x", "onlyFailed": "maybe", "verify": "perhaps"},
    {"since": "\u0000", "tenantId": "not-a-tenant"},
]


def filled(path: str, value: str) -> str:
    return re.sub(r"\{[^}]+\}", value, path)


def requests_for(path: str, method: str) -> Iterator[dict[str, Any]]:
    for value in PATH_VALUES:
        for query in QUERIES:
            yield {"url": filled(path, value), "params": query}
    if method in ("post", "put"):
        for raw in BODIES:
            yield {
                "url": filled(path, PATH_VALUES[1]),
                "data": raw,
                "headers": {"Content-Type": "application/json"},
            }


async def test_no_route_of_the_openapi_document_answers_with_a_traceback(
    api_host: str, api_key: str
) -> None:
    async with aiohttp.ClientSession(api_host) as session:
        async with session.get("/v1/openapi.json") as response:
            document = await response.json()
        swept = 0
        for path, operations in document["paths"].items():
            for method in operations:
                for keyed in ({"Authorization": api_key}, {"Authorization": "Bearer x"}, {}):
                    for request in requests_for(path, method):
                        headers = {**keyed, **request.pop("headers", {})}
                        async with session.request(method, headers=headers, **request) as answer:
                            text = await answer.text()
                        assert answer.status < 500, (method, path, request, text)
                        assert not LEAKS.search(text), (method, path, request, text)
                        swept += 1
    assert swept > 500


class Boom(RuntimeError):
    """What a bug of ours raises; its text looks like a traceback on purpose."""


@pytest.fixture
def failing_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    """The app's services fail to open, mid-request, with a traceback-like message."""

    async def broken() -> Any:
        raise Boom('Traceback (most recent call last):\n  File "/app/shared/x.py", line 1')

    monkeypatch.setattr("shared.services.get_services", broken)


async def test_every_http_function_answers_a_bug_with_a_bare_problem(
    failing_storage: None,
) -> None:
    import function_app
    from local.host.config import indexed_functions

    functions = [
        f for f in indexed_functions(function_app.app) if f.get_trigger().type == "httpTrigger"
    ]
    assert {f.get_function_name() for f in functions} == set(ENDPOINTS)  # all through @endpoint
    failed = 0
    for function in functions:
        spec = ENDPOINTS[function.get_function_name()]
        names = re.findall(r"\{([^}]+)\}", spec.route)
        request = func.HttpRequest(
            spec.method,
            "http://127.0.0.1/" + spec.route,
            headers={"authorization": "sbd_x", "content-type": "application/json"},
            route_params={name: str(uuid.uuid4()) for name in names},
            body=b"{}",
        )
        response = await function.get_user_function()(request)
        body = response.get_body().decode()
        assert not LEAKS.search(body), (spec.name, body)
        if response.status_code == 500:
            assert body == '{"type":"about:blank","title":"Internal error","status":500}'
            failed += 1
    assert failed >= sum(1 for spec in ENDPOINTS.values() if not spec.public)
