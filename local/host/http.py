"""HTTP between aiohttp and azure.functions: requests in, a function's return value out."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import azure.functions as func
from aiohttp import web
from multidict import CIMultiDict


def _join_repeated(pairs: Iterable[tuple[str, str]], lower: bool = False) -> dict[str, str]:
    """Repeated names joined with a comma, as the Functions host hands them to the worker."""
    joined: dict[str, str] = {}
    for name, value in pairs:
        if lower:
            name = name.lower()
        joined[name] = f"{joined[name]},{value}" if name in joined else value
    return joined


def _forwarded_for(request: web.BaseRequest) -> list[tuple[str, str]]:
    """The request's headers as a front end passes them on: the connection's address in
    `Client-IP` (whatever the client sent there, as App Service's front end overwrites it)
    and appended to `X-Forwarded-For` (shared/api/ratelimit.py reads them)."""
    sent = [(k, v) for k, v in request.headers.items() if k.lower() != "client-ip"]
    peer = request.remote or ""
    return [*sent, ("X-Forwarded-For", peer), ("Client-IP", peer)]


async def to_function_request(
    request: web.BaseRequest, route_params: dict[str, str]
) -> func.HttpRequest:
    """What an HTTP function receives for an aiohttp request."""
    return func.HttpRequest(
        method=request.method,
        url=str(request.url),
        headers=_join_repeated(_forwarded_for(request), lower=True),
        params=_join_repeated(request.query.items()),
        route_params=route_params,
        body=await request.read(),
    )


# aiohttp sets these from the body it sends.
_HOP_BY_HOP = frozenset({"content-length", "transfer-encoding", "connection"})


def to_web_response(result: Any) -> web.Response:
    """An HTTP function's return value as an aiohttp response (the worker's conversion)."""
    if result is None:
        return web.Response(status=204)
    if isinstance(result, str):
        return web.Response(
            status=200,
            body=result.encode("utf-8"),
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )
    if not isinstance(result, func.HttpResponse):
        raise TypeError(f"an HTTP function returned {type(result).__name__}")
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in result.headers.items():
        if name.lower() not in _HOP_BY_HOP:
            headers.add(name, value)
    if "Content-Type" not in headers:
        mimetype = result.mimetype
        headers["Content-Type"] = (
            f"{mimetype}; charset={result.charset}" if mimetype.startswith("text/") else mimetype
        )
    return web.Response(status=result.status_code, body=result.get_body(), headers=headers)
