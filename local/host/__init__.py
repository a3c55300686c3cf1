"""Local Functions host: runs a v2-model FunctionApp's HTTP routes, queue triggers and timers.

Azure Functions Core Tools cannot be installed everywhere we work, so this host runs the same
functions from their own decorators (`app.get_functions()`), with the Functions host's
semantics where our code relies on them: ASP.NET-style routes and precedence, base64 queue
messages, `maxDequeueCount` then `<queue>-poison`, NCRONTAB timers. It never lists a route,
queue or schedule itself.

    python -m local.host [--app function_app:app] [--host 127.0.0.1] [--port 7071] [--no-triggers]

One module per part: `config` (host.json, app settings, loading the app), `invoke` (calling a
function), `routes` (route templates and order), `http` (requests and responses), `queues`
(queue triggers), `timers`, `server` (the LocalHost that ties them together) and `runner`
(the command line).
"""

from local.host.config import (
    DEFAULT_STORAGE_SETTING,
    QueueOptions,
    indexed_functions,
    load_app,
    load_host_json,
    resolve_setting_references,
    route_prefix,
)
from local.host.invoke import FunctionInvoker, InvocationContext
from local.host.queues import DEFAULT_MESSAGE_LEASE, QueueListener
from local.host.routes import Route, Router, RouteTemplate, compare_routes, route_constraint
from local.host.runner import main
from local.host.server import LocalHost, serve
from local.host.timers import TimerTrigger

__all__ = [
    "DEFAULT_MESSAGE_LEASE",
    "DEFAULT_STORAGE_SETTING",
    "FunctionInvoker",
    "InvocationContext",
    "LocalHost",
    "QueueListener",
    "QueueOptions",
    "Route",
    "RouteTemplate",
    "Router",
    "TimerTrigger",
    "compare_routes",
    "indexed_functions",
    "load_app",
    "load_host_json",
    "main",
    "resolve_setting_references",
    "route_constraint",
    "route_prefix",
    "serve",
]
