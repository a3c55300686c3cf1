"""A small function app for the local host's tests: HTTP routes and a queue trigger.

The queue name comes from an app setting (`%SAMPLE_QUEUE%`) so each test host can use its
own queue. What the functions saw is kept in `seen`, for tests that run the host in the
same process. Queue message bodies steer the function: `fail...` raises, `slow...` takes
0.3 s, `hang...` never ends.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import defaultdict
from typing import Any

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
bp = func.Blueprint()

# Function name -> what it was called with (appended from the host's loop or its threads).
seen: defaultdict[str, list[Any]] = defaultdict(list)
_active = {"now": 0, "max": 0}


def _json(value: Any, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(value), status_code=status, mimetype="application/json")


# Registered before the literal route below: precedence, not order, must pick the literal.
@bp.route(route="items/{name}", methods=["GET"])
async def item_by_name(req: func.HttpRequest) -> func.HttpResponse:
    return _json({"route": "name", "values": dict(req.route_params)})


@bp.route(route="items/{id:int}", methods=["GET"])
async def item_by_int(req: func.HttpRequest) -> func.HttpResponse:
    return _json({"route": "int", "values": dict(req.route_params)})


@bp.route(route="items/{id:guid}", methods=["GET"])
async def item_by_guid(req: func.HttpRequest) -> func.HttpResponse:
    return _json({"route": "guid", "values": dict(req.route_params)})


@bp.route(route="items/special", methods=["GET"])
async def item_special(req: func.HttpRequest) -> func.HttpResponse:
    return _json({"route": "special", "values": dict(req.route_params)})


@bp.route(route="echo/{first}/{second?}", methods=["POST", "PUT"])
async def echo(req: func.HttpRequest) -> func.HttpResponse:
    return _json(
        {
            "method": req.method,
            "url": req.url,
            "route": dict(req.route_params),
            "query": dict(req.params),
            "header": req.headers.get("x-sample"),
            "body": req.get_body().decode(),
        }
    )


@bp.route(route="sync", methods=["GET"])
def sync_function(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    # A plain function runs in a worker thread, not on the host's event loop.
    return _json(
        {
            "thread": threading.current_thread().name,
            "function_name": context.function_name,
            "invocation_id": context.invocation_id,
        }
    )


@bp.route(route="slow", methods=["GET"])
async def slow(req: func.HttpRequest) -> func.HttpResponse:
    await asyncio.sleep(float(req.params.get("seconds", "1")))
    return func.HttpResponse("done")


@bp.route(route="boom", methods=["GET"])
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("secret detail that must not leak")


@bp.route(route="respond", methods=["GET"])
async def respond(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(
        "créé", status_code=201, headers={"X-Answer": "42"}, mimetype="text/html", charset="utf-8"
    )


@bp.queue_trigger(arg_name="msg", queue_name="%SAMPLE_QUEUE%", connection="AzureWebJobsStorage")
async def on_message(msg: func.QueueMessage) -> None:
    body = msg.get_body()
    seen["on_message"].append((body, msg.dequeue_count))
    _active["now"] += 1
    _active["max"] = max(_active["max"], _active["now"])
    try:
        if body.startswith(b"slow"):
            await asyncio.sleep(0.3)
        if body.startswith(b"hang"):
            await asyncio.sleep(3600)
        if body.startswith(b"fail"):
            raise ValueError("this message always fails")
    finally:
        _active["now"] -= 1


def max_concurrent_messages() -> int:
    return _active["max"]


def reset_concurrency() -> None:
    _active["max"] = 0


app.register_functions(bp)
