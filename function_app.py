"""The Azure Functions app: builds the FunctionApp and registers the blueprints."""

import azure.functions as func

from shared import triggers
from shared.api import apikeys, connections, messages, meta, ownership, portal
from shared.settings import refuse_unresolved_references

# An unresolved Key Vault reference stops the app at start, naming the setting: no function
# runs (events wait in their queue) rather than each one failing on a value that is not one.
refuse_unresolved_references()
app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
for module in (apikeys, connections, messages, meta, ownership, portal, triggers):
    app.register_functions(module.bp)  # each module's blueprint
