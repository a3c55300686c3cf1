"""Entra ID for tests: a credential minting tokens (Entra ID itself cannot run here), calls of
an API handler in this process with a dispatcher of the test's own (one that gets its tokens
from that credential), and an account's tenant bound by the consent routes over HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import azure.functions as func
import jwt
from azure.core.credentials import AccessToken
from cryptography.hazmat.primitives.asymmetric import rsa

from shared.api import http
from shared.dispatch.dispatcher import Dispatcher
from shared.services import Services
from tests.plugins.app import Api


class MintingCredential:
    """Entra ID's stand-in (nothing real can run here): an async token credential that mints
    RS256 JWTs signed by a test issuer's key, for `audience` or the scope's resource."""

    def __init__(self, key: rsa.RSAPrivateKey, audience: str | None = None) -> None:
        self.key, self.audience = key, audience
        self.tenants: list[str] = []

    def for_tenant(self, tenant_id: str) -> MintingCredential:
        self.tenants.append(tenant_id)
        return self

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        now = int(time.time())
        audience = self.audience or scopes[0].removesuffix(".default").rstrip("/")
        tenant = self.tenants[-1]
        claims = {
            "aud": audience,
            "iss": f"https://sts.windows.net/{tenant}/",
            "tid": tenant,
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
        }
        return AccessToken(jwt.encode(claims, self.key, algorithm="RS256"), now + 3600)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> MintingCredential:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


@asynccontextmanager
async def app_dispatcher(services: Services, dispatcher: Dispatcher) -> AsyncIterator[None]:
    """The app's dispatcher in this process is `dispatcher` meanwhile (its handlers then
    verify with the test's credential)."""
    saved, services._dispatcher = services._dispatcher, dispatcher
    try:
        yield
    finally:
        services._dispatcher = saved


async def in_process(
    handler: Callable[..., Awaitable[Any]],
    key: str,
    body: Any = None,
    params: dict[str, str] | None = None,
    route: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """A handler called as the host calls it (auth, parsing, problem+json), in this process."""
    spec = http.ENDPOINTS[handler.__name__]
    request = func.HttpRequest(
        spec.method,
        "http://127.0.0.1/" + spec.route,
        headers={"authorization": key, "content-type": "application/json"},
        params=params or {},
        route_params=route or {},
        body=json.dumps(body).encode() if body is not None else b"",
    )
    try:
        response = await http.invoke(handler, request, spec)
    except http.ApiError as e:
        response = e.response()
    text = response.get_body().decode()
    return response.status_code, json.loads(text) if text else None


async def consent(api: Api, tenant: str) -> dict[str, Any]:
    """The account's link for `tenant` opened and consented to, as Entra ID redirects back
    (ENTRA_APP_CLIENT_ID must be set); the callback's answer."""
    status, link = await api.call("GET", "/v1/entra/consent", params={"tenantId": tenant})
    assert status == 200, link
    state = parse_qs(urlsplit(link["ConsentUrl"]).query)["state"][0]
    query = {"admin_consent": "True", "tenant": tenant, "state": state}
    async with api.session.get("/v1/entra/consented", params=query, headers={}) as response:
        assert response.status == 200, await response.text()
        return dict(await response.json())
