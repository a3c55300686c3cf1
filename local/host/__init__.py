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

The package itself imports nothing: each caller imports the module it needs, so that
importing one part never runs the others (tests/test_code_shape.py: no import cycle).
"""
