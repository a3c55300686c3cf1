"""The event catalog, the OpenAPI document and the health check."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import azure.functions as func

from shared import catalog
from shared.api.http import Call, endpoint
from shared.models.access import Scope
from shared.service import events, readiness
from shared.services import get_services

if TYPE_CHECKING:
    from shared.models.events import CatalogEntry, PublishedEvents
    from shared.models.meta import Health

bp = func.Blueprint()


@endpoint(bp, "GET", "v1/events", returns="CatalogEntry", many=True, scope=Scope.CONNECTIONS_READ)
async def list_events(call: Call) -> list[CatalogEntry]:
    """The event catalog: the keys a connection can enable."""
    from shared.models.events import CatalogEntry

    return [CatalogEntry(event_key=k, description=d) for k, d in catalog.catalog().items()]


@endpoint(
    bp,
    "POST",
    "v1/events",
    body="EventsToPublish",
    returns="PublishedEvents",
    status=202,
    errors=(400, 413, 503),
    scope=Scope.EVENTS_PUBLISH,
    restricted_keys=False,
    body_limit="publish_bytes",
)
async def publish_events(call: Call) -> PublishedEvents:
    """Send system events in, for the key's account (publishers outside Azure): queued at
    once, delivered to the account's connections as the platform's own events are."""
    return await events.publish(call.services, call.account, call.body)


@endpoint(bp, "GET", "v1/openapi.json", public=True)
async def openapi_document(call: Call) -> func.HttpResponse:
    """This API as an OpenAPI 3 document (no API key needed)."""
    from shared.api import openapi

    return func.HttpResponse(json.dumps(openapi.document()), mimetype="application/json")


@endpoint(bp, "GET", "v1/health", returns="Health", public=True, errors=(503,))
async def health(call: Call) -> Health:
    """200 when the app's storage answers (no API key needed)."""
    from shared.api import openapi
    from shared.models.meta import Health

    await readiness.check(get_services)
    return Health(status="Healthy", storage="Ok", version=openapi.VERSION)
