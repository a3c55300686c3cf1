"""The one decorator for API endpoints: auth, body and query parsing, problem+json errors.

It registers the route on a blueprint and records what the OpenAPI document says of it, so
routes are defined once. Models are named, not imported, here: pydantic and the models load
on the first request rather than when the Functions worker indexes the app (cold start).
"""

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

import azure.functions as func

from shared.errors import Conflict, InvalidField, NotFound

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError

log = logging.getLogger("shared.api")

JSON_TYPES = ("application/json", "application/json-patch+json")


def model(name: str) -> "type[BaseModel]":
    """A model of shared.models by name."""
    from shared import models

    found: type[BaseModel] = getattr(models, name)
    return found


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        errors: dict[str, list[str]] | None = None,
    ) -> None:
        super().__init__(detail or title)
        self.status, self.title, self.detail, self.errors = status, title, detail, errors

    def response(self, headers: dict[str, str] | None = None) -> func.HttpResponse:
        problem = model("Problem")(
            status=self.status, title=self.title, detail=self.detail, errors=self.errors
        )
        return func.HttpResponse(
            problem.model_dump_json(exclude_none=True),
            status_code=self.status,
            mimetype="application/problem+json",
            headers=headers,
        )


def validation_error(error: "ValidationError") -> ApiError:
    from shared.models import error_map

    for item in error.errors(include_url=False):
        if item["type"] == "json_invalid":
            return ApiError(400, "Malformed JSON", f"the body is not valid JSON: {item['msg']}")
    return ApiError(
        400, "Validation failed", "one or more properties are invalid", error_map(error)
    )


def parse_body(req: func.HttpRequest, name: str) -> Any:
    from pydantic import ValidationError

    content_type = (req.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type not in JSON_TYPES:
        raise ApiError(415, "Unsupported media type", f"send one of: {', '.join(JSON_TYPES)}")
    try:
        return model(name).model_validate_json(req.get_body() or b"", strict=True)
    except ValidationError as e:
        raise validation_error(e) from None


def parse_query(req: func.HttpRequest, name: str) -> Any:
    from pydantic import ValidationError

    try:
        return model(name).model_validate(dict(req.params))  # lax: query values are text
    except ValidationError as e:
        raise validation_error(e) from None


def parse_uid(value: str, what: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise ApiError(404, "Not found", f"no {what} {value!r}") from None


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
    body: str | None  # model names in shared.models
    query: str | None
    returns: str | None
    many: bool  # returns a JSON array of `returns`
    public: bool
    errors: tuple[int, ...] = field(default=())


ENDPOINTS: dict[str, Endpoint] = {}

Handler = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class Call:
    """What a handler gets: the caller's account, the route values, parsed body and query."""

    account: str
    route: dict[str, str]
    body: Any = None
    query: Any = None


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
) -> Callable[[Handler], Handler]:
    """Register `handler(call) -> model | list | None` as `METHOD /route` on the blueprint.

    `body`, `query` and `returns` name models of shared.models.
    """

    def register(handler: Handler) -> Handler:
        async def run(req: func.HttpRequest) -> func.HttpResponse:
            try:
                return await invoke(handler, req, body, query, public)
            except ApiError as e:
                return e.response()
            except Exception:  # never a 500 with a trace; the log has it
                log.exception("unhandled error in %s %s", method, route)
                return ApiError(500, "Internal error").response()

        run.__name__ = run.__qualname__ = handler.__name__
        bp.route(route=route, methods=[method], auth_level=func.AuthLevel.ANONYMOUS)(run)
        ENDPOINTS[handler.__name__] = Endpoint(
            handler.__name__,
            method,
            route,
            (handler.__doc__ or "").strip(),
            body,
            query,
            returns,
            many,
            public,
            errors,
        )
        return handler

    return register


async def invoke(
    handler: Handler,
    req: func.HttpRequest,
    body: str | None,
    query: str | None,
    public: bool,
) -> func.HttpResponse:
    account = ""
    if not public:
        from shared.services import get_services

        services = await get_services()
        found = await services.api_keys.account_of(req.headers.get("authorization"))
        if found is None:
            unauthorized = ApiError(401, "Unauthorized", "send header Authorization: <api key>")
            return unauthorized.response({"WWW-Authenticate": "Bearer"})
        account = found
    call = Call(
        account=account,
        route=dict(req.route_params),
        body=parse_body(req, body) if body else None,
        query=parse_query(req, query) if query else None,
    )
    try:
        result = await handler(call)
    except NotFound as e:
        raise ApiError(404, "Not found", str(e) or None) from None
    except Conflict as e:
        raise ApiError(409, "Conflict", str(e) or None) from None
    except InvalidField as e:
        raise ApiError(400, "Validation failed", str(e), {e.field: [e.message]}) from None
    if isinstance(result, func.HttpResponse):
        return result
    if result is None:
        return func.HttpResponse(status_code=200)
    return func.HttpResponse(json.dumps(to_json(result)), mimetype="application/json")
