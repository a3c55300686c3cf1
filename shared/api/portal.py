"""The tenant portal: its static files under /portal and its session (sign-in, sign-out).

Every page reads and changes data through the same /v1 routes as any API client; the
session cookie only stands in for the API key there (see `authenticate` in http.py).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import azure.functions as func

from shared.api.http import (
    SESSION_COOKIE,
    ApiError,
    Call,
    client_of,
    cookie_of,
    endpoint,
    limiter_of,
    parse_body,
    too_many,
    unauthorized,
)
from shared.models.access import Scope
from shared.portal import STATIC
from shared.services import Services, get_services

if TYPE_CHECKING:
    from shared.models.meta import PortalLink, PortalSessionInfo
    from shared.storage.portalsessions import PortalSession

bp = func.Blueprint()

TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
# Only the page's own files: no inline script or style, nothing from elsewhere.
POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}
# Listed once at start-up: a request can only name one of these (no path traversal).
FILES = {p.name: p for p in STATIC.iterdir() if p.suffix in TYPES}


def static_file(name: str) -> func.HttpResponse:
    path = FILES.get(name)
    if path is None:
        return ApiError(404, "Not found", f"no portal file {name!r}").response(SECURITY_HEADERS)
    return func.HttpResponse(
        path.read_bytes(),
        mimetype=TYPES[path.suffix],
        charset="utf-8",
        headers=SECURITY_HEADERS,
    )


@endpoint(bp, "GET", "portal", public=True, listed=False)
async def portal_page(call: Call) -> func.HttpResponse:
    """The portal's page."""
    return static_file("index.html")


@endpoint(bp, "GET", "portal/{*path}", public=True, listed=False)
async def portal_file(call: Call) -> func.HttpResponse:
    """One of the portal's static files."""
    return static_file(call.route.get("path") or "index.html")


def over_https(req: func.HttpRequest) -> bool:
    forwarded = (req.headers.get("x-forwarded-proto") or "").lower()
    return req.url.lower().startswith("https:") or forwarded == "https"


def session_cookie(req: func.HttpRequest, value: str, max_age: int) -> str:
    secure = "; Secure" if over_https(req) else ""
    return f"{SESSION_COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"


def session_response(info: PortalSessionInfo, cookie: str) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(info.to_json()),
        mimetype="application/json",
        headers={**SECURITY_HEADERS, "Set-Cookie": cookie},
    )


def info_of(session: PortalSession) -> PortalSessionInfo:
    from shared.models.meta import PortalSessionInfo

    return PortalSessionInfo(
        account=session.account, expires_at=session.expires_at, csrf_token=session.csrf_token
    )


async def proven_session(req: func.HttpRequest, services: Services) -> PortalSession | None:
    """A new session with the rights of an API key in the Authorization header, else of a
    one-time code (the rights of the key that issued it): never more than the key's."""
    now = services.clock()
    if authorization := req.headers.get("authorization"):
        grant = await services.api_keys.grant_of(authorization)
        return await services.portal_sessions.start(grant.account, now, grant) if grant else None
    sign_in = parse_body(req, "PortalSignIn", services.settings)
    return await services.portal_sessions.redeem(sign_in.code, now)


@endpoint(bp, "POST", "portal/session", public=True, listed=False)
async def sign_in(call: Call) -> func.HttpResponse:
    """Start a portal session from a one-time code (body) or an API key (header)."""
    assert call.request is not None
    req, services = call.request, await get_services()
    limiter, client = limiter_of(services.settings), client_of(req, services.settings)
    if wait := limiter.failed_keys.waiting(client):
        return too_many(wait)
    session = await proven_session(req, services)
    if session is None:
        limiter.failed_keys.take(client)
        return unauthorized()
    max_age = max(0, round((session.expires_at - services.clock()).total_seconds()))
    return session_response(info_of(session), session_cookie(req, session.token, max_age))


@endpoint(
    bp,
    "GET",
    "portal/session",
    returns="PortalSessionInfo",
    listed=False,
    scope=Scope.CONNECTIONS_READ,
)
async def session_info(call: Call) -> PortalSessionInfo:
    """The caller's account and, with the session cookie, the session's CSRF token."""
    from shared.models.meta import PortalSessionInfo

    assert call.request is not None
    services = call.services
    token = cookie_of(call.request, SESSION_COOKIE)
    session = await services.portal_sessions.get(token, services.clock())
    if session and not call.request.headers.get("authorization"):
        return info_of(session)
    return PortalSessionInfo(account=call.account, expires_at=None, csrf_token=None)


@endpoint(bp, "DELETE", "portal/session", listed=False, scope=Scope.CONNECTIONS_READ)
async def sign_out(call: Call) -> func.HttpResponse:
    """End the portal session at once, server-side, and clear its cookie."""
    assert call.request is not None
    services = call.services
    if token := cookie_of(call.request, SESSION_COOKIE):
        await services.portal_sessions.end(token)
    return func.HttpResponse(
        status_code=204,
        headers={**SECURITY_HEADERS, "Set-Cookie": session_cookie(call.request, "", 0)},
    )


@endpoint(
    bp,
    "POST",
    "v1/portal/links",
    body="PortalLinkRequest",
    returns="PortalLink",
    errors=(400,),
    status=201,
    scope=Scope.KEYS_MANAGE,
    audit="portal.link",
)
async def create_portal_link(call: Call) -> PortalLink:
    """A one-time portal sign-in link for the caller's account, valid Minutes (default 60).
    Its session holds at most the calling key's scopes and connections, and ends by the
    key's expiry; the link itself works until ExpiresAt. Open it once; it is shown once."""
    from shared.models.meta import PortalLink
    from shared.portal import issue_link

    url, expires = await issue_link(call.services, call.grant, call.body.minutes)
    return PortalLink(url=url, expires_at=expires)
