"""The Azure Functions app: builds the FunctionApp and registers the blueprints."""

import azure.functions as func

from shared import triggers
from shared.api import connections, messages, meta, ownership, portal
from shared.settings import refuse_unresolved_references

# An unresolved Key Vault reference stops the app at start, naming the setting: no function
# runs (events wait in their queue) rather than each one failing on a value that is not one.
refuse_unresolved_references()
app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
for blueprint in (connections.bp, messages.bp, meta.bp, ownership.bp, portal.bp, triggers.bp):
    app.register_functions(blueprint)
