"""The one decorator for API endpoints: auth, body and query parsing, problem+json errors.

It registers the route on a blueprint and records what the OpenAPI document says of it, so
routes are defined once. Models are named, not imported, here: pydantic and the models load
on the first request rather than when the Functions worker indexes the app (cold start).
"""

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

import azure.functions as func

from shared.api.guard import (
    CONNECTION_ROUTE_NAMES,
    check_account_wide,
    check_connections,
    run_audited,
)
from shared.errors import (
    Conflict,
    ConsentNotGranted,
    Forbidden,
    Invalid,
    InvalidField,
    LimitReached,
    NotFound,
    OverBudget,
    Unavailable,
    VerificationFailed,
)

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError

    from shared.api.ratelimit import RateLimiter
    from shared.models.access import Scope
    from shared.services import Services
    from shared.settings import Settings
    from shared.storage.apikeys import Grant

log = logging.getLogger("shared.api")

JSON_TYPES = ("application/json", "application/json-patch+json")
# The portal's session cookie (HttpOnly) and the header that must echo the session's CSRF
# token on every state-changing call made with it.
SESSION_COOKIE = "sbd_portal"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def model(name: str) -> "type[BaseModel]":
    """A model of shared.models by name."""
    from shared.models import (
        apikeys,
        audit,
        connection,
        connectioninput,
        events,
        meta,
        records,
        replays,
    )

    modules = (apikeys, audit, connection, connectioninput, events, meta, records, replays)
    found: type[BaseModel] = next(getattr(m, name) for m in modules if hasattr(m, name))
    return found


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        errors: dict[str, list[str]] | None = None,
        extensions: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or title)
        self.status, self.title, self.detail, self.errors = status, title, detail, errors
        self.extensions, self.headers = extensions or {}, headers or {}

    def response(self, headers: dict[str, str] | None = None) -> func.HttpResponse:
        problem = model("Problem")(
            status=self.status, title=self.title, detail=self.detail, errors=self.errors
        )
        body = {**problem.model_dump(mode="json", exclude_none=True), **self.extensions}
        return func.HttpResponse(
            json.dumps(body, separators=(",", ":")),
            status_code=self.status,
            mimetype="application/problem+json",
            headers={**self.headers, **(headers or {})},
        )


def validation_error(error: "ValidationError") -> ApiError:
    from shared.models.base import error_map

    for item in error.errors(include_url=False):
        if item["type"] == "json_invalid":
            return ApiError(400, "Malformed JSON", f"the body is not valid JSON: {item['msg']}")
    return ApiError(
        400, "Validation failed", "one or more properties are invalid", error_map(error)
    )


def parse_body(
    req: func.HttpRequest, name: str, settings: "Settings", limit_name: str = "body_bytes"
) -> Any:
    """The body as the model `name`; 413 past the limit `limit_name` of settings.limits."""
    content_type = (req.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type not in JSON_TYPES:
        raise ApiError(415, "Unsupported media type", f"send one of: {', '.join(JSON_TYPES)}")
    limit: int = getattr(settings.limits, limit_name)
    setting = f"LIMIT_{limit_name.upper()}"
    detail = f"a request body here holds at most {limit} bytes ({setting})"
    too_large = ApiError(413, "Content too large", detail, extensions={"limit": setting})
    declared = req.headers.get("content-length") or "0"
    if not declared.isdigit() or int(declared) > limit:  # before the body is looked at
        raise too_large
    raw = req.get_body() or b""
    if len(raw) > limit:
        raise too_large
    return parse_json(raw, name, settings)


def parse_json(raw: bytes, name: str, settings: "Settings") -> Any:
    """A body as the model `name`, strictly; duplicate property names are refused, and
    connection strings are checked against the endpoint rule of `settings`."""
    from pydantic import ValidationError

    from shared.endpoints import EndpointRule

    if duplicate := _duplicate_name(raw):
        raise ApiError(
            400, "Malformed JSON", "a property appears twice", {duplicate: ["appears twice"]}
        )
    try:
        return model(name).model_validate_json(
            raw, strict=True, context={"endpoints": EndpointRule.of(settings)}
        )
    except ValidationError as e:
        raise validation_error(e) from None


class _Duplicate(ValueError):
    pass


def _duplicate_name(raw: bytes) -> str | None:
    """The first property name given twice in one JSON object (pydantic keeps the last)."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        names = [k for k, _ in items]
        if len(set(names)) != len(names):
            raise _Duplicate(next(k for k in names if names.count(k) > 1))
        return dict(items)

    try:
        json.loads(raw, object_pairs_hook=pairs)
    except _Duplicate as e:
        return str(e)[:100]
    except ValueError:  # not JSON: pydantic says so, with its own message
        return None
    return None


def parse_query(req: func.HttpRequest, name: str) -> Any:
    from pydantic import ValidationError

    try:
        return model(name).model_validate(dict(req.params))  # lax: query values are text
    except ValidationError as e:
        raise validation_error(e) from None


def over_budget(e: OverBudget) -> ApiError:
    from shared.api.ratelimit import retry_after

    headers = {"Retry-After": retry_after(e.retry_after)}
    return ApiError(429, "Too many requests", str(e), headers=headers)


# The one table from a domain error (shared/errors.py) to its problem+json answer.
PROBLEMS: dict[type[Exception], Callable[[Any], ApiError]] = {
    NotFound: lambda e: ApiError(404, "Not found", str(e) or None),
    Conflict: lambda e: ApiError(
        409, "Conflict", str(e) or None, extensions={k: str(v) for k, v in e.extensions.items()}
    ),
    OverBudget: over_budget,
    LimitReached: lambda e: ApiError(409, "Limit reached", str(e)),
    Invalid: lambda e: ApiError(400, "Validation failed", str(e), e.errors),
    InvalidField: lambda e: ApiError(400, "Validation failed", str(e), {e.field: [e.message]}),
    ConsentNotGranted: lambda e: ApiError(
        400, "Consent not granted", e.message, {e.field: [e.message]}
    ),
    Forbidden: lambda e: ApiError(
        403, "Forbidden", str(e), {e.field: [str(e)]} if e.field else None
    ),
    Unavailable: lambda e: ApiError(503, "Unhealthy", str(e)),
    VerificationFailed: lambda e: ApiError(
        400, "Verification failed", str(e), {e.names: [e.reason]}
    ),
}
DOMAIN_ERRORS = tuple(PROBLEMS)


def problem_of(error: Exception) -> ApiError:
    """The problem answer of a domain error: the entry of its class or nearest base."""
    kind = next(k for k in type(error).__mro__ if k in PROBLEMS)
    return PROBLEMS[kind](error)


def parse_uid(value: str, what: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise ApiError(404, "Not found", f"no {what} {value!r}") from None


def connection_uid(call: "Call") -> UUID:
    """The connection's id in the route, whichever public name the route gives it."""
    name = next(n for n in CONNECTION_ROUTE_NAMES if n in call.route)
    return parse_uid(call.route[name], "connection")


def to_json(result: Any) -> Any:
    if isinstance(result, list):
        return [to_json(item) for item in result]
    return result.to_json()


@dataclass(frozen=True)
class Endpoint:
    """What the OpenAPI document says of one route."""

    name: str
    method: str
    route: str
    summary: str
    body: str | None  # model names in shared.models.*
    query: str | None
    returns: str | None
    many: bool  # returns a JSON array of `returns`
    public: bool
    errors: tuple[int, ...] = field(default=())
    sends: bool = False  # sends a message: the stricter rate limit
    listed: bool = True  # in the OpenAPI document (the portal's own routes are not)
    status: int = 200  # of a success (202: accepted, done later)
    scope: "Scope | None" = None  # what a key must hold to call it (None: public)
    audit: str | None = None  # the audit log's action of a change it makes (e.g. apikey.create)
    restricted_keys: bool = True  # False: account-wide, a key restricted to connections is refused
    body_limit: str = "body_bytes"  # the field of Limits that bounds its body


ENDPOINTS: dict[str, Endpoint] = {}

Handler = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class Call:
    """What a handler gets: the caller's account, the route values, parsed body and query."""

    account: str
    route: dict[str, str]
    body: Any = None
    query: Any = None
    request: func.HttpRequest | None = None  # for the few handlers that read headers
    services: "Services" = None  # type: ignore[assignment]  # injected; None on public routes
    grant: "Grant" = None  # type: ignore[assignment]  # what the caller's key may; None if public


def endpoint(
    bp: func.Blueprint,
    method: str,
    route: str,
    *,
    body: str | None = None,
    query: str | None = None,
    returns: str | None = None,
    many: bool = False,
    public: bool = False,
    errors: tuple[int, ...] = (),
    sends: bool = False,
    listed: bool = True,
    status: int = 200,
    scope: "Scope | None" = None,
    audit: str | None = None,
    restricted_keys: bool = True,
    body_limit: str = "body_bytes",
) -> Callable[[Handler], Handler]:
    """Register `handler(call) -> model | list | None` as `METHOD /route` on the blueprint.

    `body`, `query` and `returns` name models of shared.models; `sends` marks a route that
    sends a message (a stricter rate limit); `listed=False` keeps it out of the OpenAPI
    document; `status` is a success's status code; `scope` is what a caller's key must hold
    (every route that is not public names one); `audit` names the change the route makes, and
    the call is audited as that (shared/service/audit.audited); `restricted_keys=False` marks
    an account-wide route that a key restricted to connections may not call; `body_limit`
    names the field of Limits that bounds its body (LIMIT_BODY_BYTES unless it says).
    """
    if (scope is None) != public:
        raise TypeError(f"{method} {route}: a route is public or names a scope, not both")

    def register(handler: Handler) -> Handler:
        async def run(req: func.HttpRequest) -> func.HttpResponse:
            try:
                return await invoke(handler, req, ENDPOINTS[handler.__name__])
            except ApiError as e:
                return e.response()
            except Exception:  # never a 500 with a trace; the log has it
                log.exception("unhandled error in %s %s", method, route)
                return ApiError(500, "Internal error").response()

        run.__name__ = run.__qualname__ = handler.__name__
        bp.route(route=route, methods=[method], auth_level=func.AuthLevel.ANONYMOUS)(run)
        ENDPOINTS[handler.__name__] = Endpoint(
            handler.__name__, method, route, (handler.__doc__ or "").strip(), body, query,
            returns, many, public, errors, sends, listed, status, scope, audit, restricted_keys,
            body_limit,
        )  # fmt: skip
        return handler

    return register


# Per process; tests put one with their own clock and limits here.
rate_limiter: "RateLimiter | None" = None


def limiter_of(settings: "Settings") -> "RateLimiter":
    global rate_limiter
    if rate_limiter is None:
        from shared.api.ratelimit import RateLimiter

        rate_limiter = RateLimiter(settings.limits)
    return rate_limiter


def client_of(req: func.HttpRequest, settings: "Settings") -> str:
    """The caller's address, as the platform's front end saw it, or as trusted proxies
    (TRUSTED_PROXIES) in front of it vouch (shared/api/ratelimit.py)."""
    from shared.api.ratelimit import client_address

    forwarded = req.headers.get("x-forwarded-for") or ""
    return client_address(forwarded, settings.trusted_proxies, req.headers.get("client-ip"))


def too_many(wait: float) -> func.HttpResponse:
    from shared.api.ratelimit import retry_after

    problem = ApiError(429, "Too many requests", "slow down; try again after Retry-After seconds")
    return problem.response({"Retry-After": retry_after(wait)})


def cookie_of(req: func.HttpRequest, name: str) -> str | None:
    from http.cookies import CookieError, SimpleCookie

    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(req.headers.get("cookie") or "")
    except CookieError:
        return None
    morsel = jar.get(name)
    return morsel.value if morsel else None


def unauthorized() -> func.HttpResponse:
    problem = ApiError(401, "Unauthorized", "send header Authorization: <api key>")
    return problem.response({"WWW-Authenticate": "Bearer"})


async def authenticate(
    req: func.HttpRequest, services: "Services", spec: Endpoint
) -> "Grant | func.HttpResponse":
    """The caller's account and scopes, or the 401/403/429 response to send instead.

    The Authorization header wins; without it, the portal's session cookie is accepted, and
    a state-changing call with the cookie must echo the session's CSRF token in a header
    (a synchronizer token: another site can send the cookie but cannot read the token).
    """

    limiter = limiter_of(services.settings)
    client = client_of(req, services.settings)
    if wait := limiter.failed_keys.waiting(client):  # no table read for a known offender
        return too_many(wait)
    authorization = req.headers.get("authorization")
    token = None if authorization else cookie_of(req, SESSION_COOKIE)
    if token:
        session = await services.portal_sessions.get(token, services.clock())
        grant, caller = (session.grant, token) if session else (None, "")
        if session and req.method.upper() not in SAFE_METHODS:
            sent = req.headers.get(CSRF_HEADER) or ""
            if not hmac.compare_digest(sent.encode(), session.csrf_token.encode()):
                detail = f"a change made with the portal's cookie needs header {CSRF_HEADER}"
                return ApiError(403, "Forbidden", detail).response()
    else:
        grant, caller = await services.api_keys.grant_of(authorization), authorization
    if grant is None:
        limiter.failed_keys.take(client)
        return unauthorized()
    if wait := limiter.request(services.api_keys.digest_of(caller), spec.sends):
        return too_many(wait)
    return grant


async def invoke(handler: Handler, req: func.HttpRequest, spec: Endpoint) -> func.HttpResponse:
    try:
        if spec.public:  # public routes take no body
            query = parse_query(req, spec.query) if spec.query else None
            result = await handler(
                Call(account="", route=dict(req.route_params), query=query, request=req)
            )
        else:
            call = await _authorized_call(req, spec)
            if isinstance(call, func.HttpResponse):
                return call
            if spec.audit:  # a handler's own 4xx (e.g. a malformed id) changed nothing either
                result = await run_audited(handler, call, spec.audit, (ApiError,))
            else:
                result = await handler(call)
    except DOMAIN_ERRORS as e:
        raise problem_of(e) from None
    return _answer(result, spec)


async def _authorized_call(req: func.HttpRequest, spec: Endpoint) -> "Call | func.HttpResponse":
    """The call of an authenticated caller allowed the route, or the response refusing it."""
    from shared.services import get_services

    services = await get_services()
    grant = await authenticate(req, services, spec)
    if isinstance(grant, func.HttpResponse):
        return grant
    if spec.scope not in grant.scopes:
        detail = f"this API key does not hold the scope {spec.scope}"
        return ApiError(403, "Forbidden", detail, extensions={"scope": spec.scope}).response()
    check_account_wide(grant, spec.restricted_keys)
    call = Call(
        account=grant.account,
        route=dict(req.route_params),
        body=parse_body(req, spec.body, services.settings, spec.body_limit) if spec.body else None,
        query=parse_query(req, spec.query) if spec.query else None,
        request=req,
        services=services,
        grant=grant,
    )
    check_connections(grant, call.route, call.body)
    return call


def _answer(result: Any, spec: Endpoint) -> func.HttpResponse:
    if isinstance(result, func.HttpResponse):
        return result
    if result is None:
        return func.HttpResponse(status_code=spec.status)
    return func.HttpResponse(
        json.dumps(to_json(result)), status_code=spec.status, mimetype="application/json"
    )
