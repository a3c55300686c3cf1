"""The Azure Functions app: builds the FunctionApp and registers the blueprints."""

import azure.functions as func

from shared import triggers
from shared.api import connections, messages, meta, ownership, portal

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
for blueprint in (connections.bp, messages.bp, meta.bp, ownership.bp, portal.bp, triggers.bp):
    app.register_functions(blueprint)
