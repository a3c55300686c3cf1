"""Proof of ownership for Entra ID connections (shared/service/ownership.py): the admin-consent link
with a signed state, Entra ID's redirect after consent, and the confirmation code; plus what
saving a connection asks of its owner."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import azure.functions as func

from shared.api.http import ApiError, Call, endpoint, parse_uid
from shared.services import get_services

if TYPE_CHECKING:
    from shared.models import Connection, ConsentLink, TenantConsented

bp = func.Blueprint()
COLLECTION = "v1/azureservicebusconnections"


@endpoint(
    bp,
    "POST",
    COLLECTION + "/{uid}/confirm",
    body="ConfirmRequest",
    returns="Connection",
    errors=(400, 404),
)
async def confirm_connection(call: Call) -> Connection:
    """Confirm an Entra ID connection with the one-time code of its verification message:
    deliveries start (those kept meanwhile can be replayed). A connection that needs no code,
    or is confirmed already, is answered as it is."""
    from shared.service.connections import confirm

    uid = parse_uid(call.route["uid"], "connection")
    return await confirm(call.services, call.account, uid, call.body.code)


@endpoint(
    bp, "GET", "v1/entra/consent", query="ConsentQuery", returns="ConsentLink", errors=(400, 404)
)
async def consent_link(call: Call) -> ConsentLink:
    """The link an administrator of the tenant opens to grant the app's Entra ID application
    consent; its signed state binds the tenant to this account once consent is granted."""
    from shared.dispatch.entra import APP_CLIENT_ID_SETTING
    from shared.models import ConsentLink
    from shared.portal import base_url
    from shared.service.ownership import CONSENT_PATH, STATE_LIFETIME, consent_url

    client_id = os.environ.get(APP_CLIENT_ID_SETTING)
    if not client_id:  # this deployment offers no Entra ID connections
        raise ApiError(404, "Not found", "this service has no Entra ID application")
    services = call.services
    now, tenant = services.clock(), str(call.query.tenant_id)
    state = services.consent_states.sign(call.account, tenant, now)
    url = consent_url(tenant, client_id, f"{base_url()}/{CONSENT_PATH}", state)
    return ConsentLink(consent_url=url, expires_at=now + STATE_LIFETIME)


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
    from uuid import UUID

    from shared.models import TenantConsented
    from shared.service.ownership import InvalidState

    services = await get_services()
    sent = call.query
    if sent.error or (sent.admin_consent or "").lower() != "true" or not sent.tenant:
        detail = "the administrator did not grant consent"
        raise ApiError(400, "Consent not granted", detail, {"admin_consent": [detail]})
    try:
        tenant = UUID(sent.tenant)
        account = services.consent_states.read(sent.state or "", str(tenant), services.clock())
    except (InvalidState, ValueError) as e:
        reason = str(e) if isinstance(e, InvalidState) else "not a tenant id"
        raise ApiError(400, "Validation failed", reason, {"state": [reason]}) from None
    await services.ownership.bind_tenant(account, str(tenant), services.clock())
    return TenantConsented(tenant_id=tenant, account=account)
