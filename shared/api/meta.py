"""The event catalog, the OpenAPI document and the health check."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import azure.functions as func

from shared import catalog
from shared.api.http import ApiError, Call, endpoint
from shared.services import get_services
from shared.settings import SettingsError

if TYPE_CHECKING:
    from shared.models.events import CatalogEntry
    from shared.models.meta import Health

bp = func.Blueprint()
log = logging.getLogger("shared.api")


@endpoint(bp, "GET", "v1/events", returns="CatalogEntry", many=True)
async def list_events(call: Call) -> list[CatalogEntry]:
    """The event catalog: the keys a connection can enable."""
    from shared.models.events import CatalogEntry

    return [CatalogEntry(event_key=k, description=d) for k, d in catalog.catalog().items()]


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

    try:
        services = await get_services()
        await services.storage.tables.get_service_properties()
    except SettingsError as e:  # names the setting, never its value: for the log
        log.error("health check: %s", e)
        raise ApiError(503, "Unhealthy", "the app's settings are incomplete") from None
    except Exception as e:  # the reason goes to the log only: it may name hosts or settings
        log.warning("health check: storage does not answer: %s", type(e).__name__)
        raise ApiError(503, "Unhealthy", "the app's storage does not answer") from None
    return Health(status="Healthy", storage="Ok", version=openapi.VERSION)
