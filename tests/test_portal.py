"""The portal's sessions and files over real HTTP (local host, Azurite): one-time links,
the session cookie in place of the API key, CSRF on changes, sign-out, and its headers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import aiohttp
import pytest

from shared.api import http as api_http
from shared.api.http import SESSION_COOKIE
from shared.api.ratelimit import RateLimiter
from shared.models.access import Scope
from shared.services import Services
from shared.settings import Limits
from shared.storage.apikeys import NewKey
from tests.factories import body, cli

PATH = "/v1/azureservicebusconnections"
LINKS = "/v1/portal/links"


@pytest.fixture
async def http(api_host: str) -> AsyncIterator[aiohttp.ClientSession]:
    # No cookie jar: each test sends the cookie it means to send (and the jar skips IP hosts).
    async with aiohttp.ClientSession(api_host, cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


async def redeem(http: aiohttp.ClientSession, code: str) -> aiohttp.ClientResponse:
    async with http.post("/portal/session", json={"Code": code}) as response:
        await response.read()
        return response


def cookie_of(response: aiohttp.ClientResponse) -> dict[str, str]:
    morsel = response.cookies[SESSION_COOKIE]
    return {"Cookie": f"{SESSION_COOKIE}={morsel.value}"}


async def signed_in(
    http: aiohttp.ClientSession, services: Services, account: str
) -> tuple[dict[str, str], str]:
    code = await services.portal_sessions.new_code(account, 5, services.clock())
    async with http.post("/portal/session", json={"Code": code}) as response:
        assert response.status == 200
        info = await response.json()
        return cookie_of(response), info["CsrfToken"]


async def test_the_cli_link_signs_in_once_with_a_strict_httponly_cookie(
    http: aiohttp.ClientSession, app_environment: dict[str, str], account: str
) -> None:
    done = cli(app_environment, "portal", "link", "--account", account, "--minutes", "5")
    assert done.returncode == 0, done.stderr
    link = done.stdout.strip().splitlines()[-1]
    assert link.startswith("http://127.0.0.1:7071/portal/#signin=")
    code = link.split("#signin=")[1]

    first = await redeem(http, code)
    assert first.status == 200
    set_cookie = first.headers["Set-Cookie"]
    for attribute in ("HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=3600"):
        assert attribute in set_cookie
    assert "Secure" not in set_cookie  # plain http locally; https adds it (below)
    async with http.get(PATH, headers=cookie_of(first)) as listing:
        assert listing.status == 200
    async with http.get("/portal/session", headers=cookie_of(first)) as info:
        assert (await info.json())["Account"] == account

    again = await redeem(http, code)
    assert again.status == 401  # single use


async def test_a_link_past_its_minutes_and_unknown_codes_are_refused(
    http: aiohttp.ClientSession, services: Services, account: str
) -> None:
    earlier = services.clock() - timedelta(minutes=6)
    code = await services.portal_sessions.new_code(account, 5, earlier)
    assert (await redeem(http, code)).status == 401
    assert (await redeem(http, "sbdc_" + "x" * 43)).status == 401
    async with http.post("/portal/session", json={"Code": ""}) as bad:
        assert bad.status == 400
        assert "Code" in (await bad.json())["errors"]
    with pytest.raises(ValueError, match="minutes"):
        await services.portal_sessions.new_code(account, 0, services.clock())


async def test_an_expired_session_is_refused_and_removed(services: Services, account: str) -> None:
    long_ago = services.clock() - timedelta(hours=2)
    session = await services.portal_sessions.start(account, long_ago)
    assert await services.portal_sessions.get(session.token, long_ago) is not None
    assert await services.portal_sessions.get(session.token, services.clock()) is None
    # ...and its row went with it: not even a clock set back finds it again
    assert await services.portal_sessions.get(session.token, long_ago) is None


async def test_changes_made_with_the_cookie_need_the_csrf_token(
    http: aiohttp.ClientSession, services: Services, account: str, servicebus_connection_string: str
) -> None:
    cookie, csrf = await signed_in(http, services, account)
    body = {"ServiceBusConnectionString": servicebus_connection_string, "QueueName": "q1"}
    async with http.post(PATH, json=body, headers=cookie) as refused:
        assert refused.status == 403
        assert "X-CSRF-Token" in (await refused.json())["detail"]
    async with http.post(PATH, json=body, headers={**cookie, "X-CSRF-Token": "0" * 32}) as wrong:
        assert wrong.status == 403
    async with http.post(PATH, json=body, headers={**cookie, "X-CSRF-Token": csrf}) as made:
        assert made.status == 200
        created = await made.json()
    assert "SAS_KEY_VALUE" not in str(created)
    async with http.get(f"{PATH}/{created['Uid']}", headers=cookie) as got:
        assert got.status == 200


async def test_a_session_sees_only_its_own_account(
    http: aiohttp.ClientSession,
    services: Services,
    account: str,
    api_key: str,
    servicebus_connection_string: str,
) -> None:
    body = {"ServiceBusConnectionString": servicebus_connection_string, "QueueName": "q1"}
    async with http.post(PATH, json=body, headers={"Authorization": api_key}) as made:
        uid = (await made.json())["Uid"]
    other, _ = await signed_in(http, services, account + "-other")
    async with http.get(f"{PATH}/{uid}", headers=other) as hidden:
        assert hidden.status == 404
    async with http.get(PATH, headers=other) as listing:
        assert await listing.json() == []


async def test_sign_out_ends_the_session_on_the_server(
    http: aiohttp.ClientSession, services: Services, account: str
) -> None:
    cookie, csrf = await signed_in(http, services, account)
    async with http.delete("/portal/session", headers=cookie) as no_token:
        assert no_token.status == 403
    async with http.delete("/portal/session", headers={**cookie, "X-CSRF-Token": csrf}) as out:
        assert out.status == 204
        assert "Max-Age=0" in out.headers["Set-Cookie"]
    async with http.get(PATH, headers=cookie) as after:  # the old cookie, replayed
        assert after.status == 401


async def test_an_api_key_starts_a_session_and_a_wrong_one_does_not(
    http: aiohttp.ClientSession, api_key: str, account: str
) -> None:
    async with http.post("/portal/session", headers={"Authorization": api_key}) as good:
        assert good.status == 200
        assert (await good.json())["Account"] == account
        cookie = cookie_of(good)
    async with http.get(PATH, headers=cookie) as listing:
        assert listing.status == 200
    async with http.post("/portal/session", headers={"Authorization": "sbd_nope"}) as bad:
        assert bad.status == 401
    https = {"Authorization": api_key, "X-Forwarded-Proto": "https"}
    async with http.post("/portal/session", headers=https) as secure:
        assert "; Secure" in secure.headers["Set-Cookie"]


async def test_portal_files_are_served_with_a_strict_policy_and_nothing_else(
    http: aiohttp.ClientSession,
) -> None:
    for path, kind in (
        ("/portal", "text/html"),
        ("/portal/", "text/html"),
        ("/portal/app.js", "text/javascript"),
        ("/portal/style.css", "text/css"),
    ):
        async with http.get(path) as response:
            assert response.status == 200, path
            assert response.headers["Content-Type"].startswith(kind)
            policy = response.headers["Content-Security-Policy"]
            assert "script-src 'self'" in policy and "default-src 'none'" in policy
            assert "unsafe-inline" not in policy
            assert response.headers["X-Content-Type-Options"] == "nosniff"
    for path in ("/portal/nope.js", "/portal/..%2Ffunction_app.py", "/portal/static/app.js"):
        async with http.get(path) as missing:
            assert missing.status == 404, path
    async with http.get("/v1/openapi.json") as doc:
        assert not [p for p in (await doc.json())["paths"] if p.startswith("/portal")]


async def test_the_page_has_no_inline_script_or_style() -> None:
    from shared.portal import STATIC

    page = (STATIC / "index.html").read_text(encoding="utf-8")
    assert "<script>" not in page and "<style" not in page and " style=" not in page
    assert '<script type="module" src="/portal/app.js">' in page


async def test_rate_limits_apply_to_a_session_and_to_wrong_codes(
    http: aiohttp.ClientSession, services: Services, account: str
) -> None:
    cookie, _ = await signed_in(http, services, account)
    limits = Limits(requests_per_second=1, request_burst=2, failed_keys_per_minute=2)
    saved = api_http.rate_limiter
    api_http.rate_limiter = RateLimiter(limits, lambda: 1000.0)  # time stands still
    try:
        statuses = []
        for _ in range(3):
            async with http.get(PATH, headers=cookie) as response:
                statuses.append(response.status)
        assert statuses == [200, 200, 429]
        wrong = [(await redeem(http, f"sbdc_{n}")).status for n in range(3)]
        assert wrong == [401, 401, 429]
    finally:
        api_http.rate_limiter = saved


def test_the_portal_files_are_deployed() -> None:
    """`func azure functionapp publish` leaves out what .funcignore names: never these."""
    from fnmatch import fnmatch

    from shared.portal import STATIC

    root = STATIC.parents[2]
    lines = (root / ".funcignore").read_text(encoding="utf-8").splitlines()
    patterns = [line.strip().rstrip("/") for line in lines if line.strip()]
    files = [p.relative_to(root) for p in STATIC.iterdir()]
    assert {f.name for f in files} >= {"index.html", "app.js", "style.css"}
    for path in files:
        names = [str(path), *path.parts]
        assert not [p for p in patterns if any(fnmatch(n, p) for n in names)], path


async def test_a_link_issued_through_the_api_opens_a_session_with_no_more_than_the_key(
    http: aiohttp.ClientSession, api_key: str, services: Services, account: str
) -> None:
    owner = {"Authorization": api_key}
    uids = []
    for _ in range(2):
        async with http.post(PATH + "?verify=false", json=body(), headers=owner) as made:
            assert made.status == 200
            uids.append((await made.json())["Uid"])
    mine, other = uids
    expires = services.clock() + timedelta(minutes=10)
    scopes = frozenset({Scope.CONNECTIONS_READ, Scope.KEYS_MANAGE})
    key, info = await services.api_keys.create(
        account, services.clock(), NewKey(scopes, "r", frozenset({uuid.UUID(mine)}), expires)
    )
    issuer = {"Authorization": key}
    async with http.post(LINKS, json={"Minutes": 60}, headers=issuer) as issued:
        assert issued.status == 201
        link = await issued.json()
    assert link["Url"].split("#signin=")[0].endswith("/portal/")
    ends = datetime.fromisoformat(link["ExpiresAt"])  # not past the key's expiry (ms shown)
    assert abs(ends - expires) < timedelta(milliseconds=1)

    opened = await redeem(http, link["Url"].split("#signin=")[1])
    assert opened.status == 200
    max_age = int(opened.headers["Set-Cookie"].split("Max-Age=")[1].split(";")[0])
    assert 0 < max_age <= 600  # the session ends by the key's expiry too
    cookie = cookie_of(opened)
    async with http.get(PATH, headers=cookie) as listed:
        assert [c["Uid"] for c in await listed.json()] == [mine]  # its connections only
    async with http.get(f"{PATH}/{other}", headers=cookie) as refused:
        assert refused.status == 403
    async with http.delete(f"{PATH}/{mine}", headers=cookie) as refused:
        assert refused.status == 403  # not a scope the key holds (before CSRF is looked at)
    async with http.get("/v1/audit", headers=cookie) as refused:
        assert refused.status == 403  # account-wide: not for a restricted key's session

    async with http.get("/v1/audit", headers=owner) as audited:
        entries = (await audited.json())["Entries"]
    assert (entries[0]["Action"], entries[0]["KeyId"]) == ("portal.link", info.key_id)


async def test_a_portal_link_request_is_checked_and_needs_keys_manage(
    http: aiohttp.ClientSession, api_key: str, services: Services, account: str
) -> None:
    for minutes in (0, 1441, "60"):
        async with http.post(
            LINKS, json={"Minutes": minutes}, headers={"Authorization": api_key}
        ) as bad:
            assert bad.status == 400 and "Minutes" in (await bad.json())["errors"]
    reader, _ = await services.api_keys.create(
        account, services.clock(), frozenset({Scope.CONNECTIONS_READ})
    )
    async with http.post(LINKS, json={}, headers={"Authorization": reader}) as refused:
        assert refused.status == 403 and (await refused.json())["scope"] == "keys:manage"


async def test_a_session_signed_in_with_a_key_holds_that_keys_scopes_only(
    http: aiohttp.ClientSession, services: Services, account: str
) -> None:
    reader, _ = await services.api_keys.create(
        account, services.clock(), frozenset({Scope.MESSAGES_READ})
    )
    async with http.post("/portal/session", headers={"Authorization": reader}) as signed:
        assert signed.status == 200
        cookie = cookie_of(signed)
    async with http.get(PATH, headers=cookie) as refused:
        assert refused.status == 403 and (await refused.json())["scope"] == "connections:read"
