"""Proof of ownership for Entra ID connections (shared/service/ownership.py): the admin-consent link
with a signed state, Entra ID's redirect after consent, and the confirmation code; plus what
saving a connection asks of its owner."""

from __future__ import annotations

from typing import TYPE_CHECKING

import azure.functions as func

from shared.api.http import Call, connection_uid, endpoint
from shared.models.access import Scope
from shared.service import ownership
from shared.services import get_services

if TYPE_CHECKING:
    from shared.models.connection import Connection, ConsentLink, TenantConsented

bp = func.Blueprint()
COLLECTION = "v1/azureservicebusconnections"


@endpoint(
    bp,
    "POST",
    COLLECTION + "/{uid}/confirm",
    body="ConfirmRequest",
    returns="Connection",
    errors=(400, 404),
    scope=Scope.CONNECTIONS_WRITE,
    audit="connection.confirm",
)
async def confirm_connection(call: Call) -> Connection:
    """Confirm an Entra ID connection with the one-time code of its verification message:
    deliveries start (those kept meanwhile can be replayed). A connection that needs no code,
    or is confirmed already, is answered as it is."""
    from shared.service.connections import confirm

    return await confirm(call.services, call.account, connection_uid(call), call.body.code)


@endpoint(
    bp,
    "GET",
    "v1/entra/consent",
    query="ConsentQuery",
    returns="ConsentLink",
    errors=(400, 404),
    scope=Scope.CONNECTIONS_WRITE,
    restricted_keys=False,
)
async def consent_link(call: Call) -> ConsentLink:
    """The link an administrator of the tenant opens to grant the app's Entra ID application
    consent; its signed state binds the tenant to this account once consent is granted."""
    return ownership.consent_link(call.services, call.account, str(call.query.tenant_id))


@endpoint(
    bp,
    "GET",
    "v1/entra/consented",
    query="ConsentCallbackQuery",
    returns="TenantConsented",
    public=True,
    errors=(400,),
)
async def consent_granted(call: Call) -> TenantConsented:
    """Where Entra ID sends the administrator after consent: the link's state, checked,
    binds the tenant to the account that asked (no API key: the state is the proof)."""
    return await ownership.grant_consent(await get_services(), call.query)
