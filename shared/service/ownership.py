"""Proof that an Entra ID connection's namespace belongs to the account that saved it.

With Entra ID the app's own identity holds the right to send, so saving a connection proves
nothing about who owns the namespace: any account could point one at another's queue (a
confused deputy). Two proofs close it, as the anchors do:

- **The tenant** (as AWS binds a cross-account role to an external id): an administrator of
  the Entra tenant grants consent through a link that the account asked for. The link's
  `state` is signed and names the account and the tenant; Entra's redirect after consent
  brings it back, and only then is the tenant bound to the account. An Entra ID connection
  can name only a tenant bound to its account.
- **The queue** (as SNS confirms a subscription with a token sent to it): the verification
  message carries a one-time code; the connection is saved with `Confirmed` false and
  delivers nothing (its events are kept, as for a suspended connection) until the owner
  posts the code back. The confirmation holds for the destination it was given for.

Connection-string connections need neither: holding a Send key is the proof.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from shared.models.connection import Connection

if TYPE_CHECKING:
    from shared.models.connection import ConsentCallbackQuery, ConsentLink, TenantConsented
    from shared.services import Services

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O or 1/I to misread
CODE_LENGTH = 10  # 50 bits, shown as XXXXX-XXXXX
CODE_LIFETIME = timedelta(hours=24)
CODE_TRIES = 5
STATE_LIFETIME = timedelta(hours=1)
CONSENT_PATH = "v1/entra/consented"


def new_code() -> str:
    raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
    return f"{raw[:5]}-{raw[5:]}"


def normalized(code: str) -> str:
    """A code as typed (any case, with or without its dash or spaces), as it was issued."""
    return "".join(code.split()).replace("-", "").upper()


def destination(c: Connection) -> str:
    """What a confirmation holds for: where the connection sends, and with whose identity."""
    where = [
        c.authentication,
        c.fully_qualified_namespace or "",
        str(c.tenant_id or ""),
        c.queue_name,
        c.blob_service_uri or "",
        c.blob_container_name or "",
    ]
    return hashlib.sha256("\n".join(where).lower().encode()).hexdigest()


def needs_code(c: Connection) -> bool:
    return c.authentication == "EntraId" and not c.confirmed


def confirmed_after_change(stored: Connection, sent: Connection) -> bool:
    """Whether a replaced connection is still confirmed: only where it still sends."""
    if sent.authentication != "EntraId":
        return True
    return stored.confirmed and destination(stored) == destination(sent)


class InvalidState(ValueError):
    """A consent `state` that was not signed by us, has expired, or names another tenant."""


class ConsentStates:
    """The signed `state` of an admin-consent link: which account asked, for which tenant."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def sign(self, account: str, tenant: str, now: datetime) -> str:
        claims = {"a": account, "t": tenant, "e": int((now + STATE_LIFETIME).timestamp())}
        body = _b64(json.dumps(claims, separators=(",", ":")).encode())
        return f"{body}.{_b64(self._mac(body))}"

    def read(self, state: str, tenant: str, now: datetime) -> str:
        """The account that asked for the consent `state` belongs to, for `tenant`."""
        body, _, mac = state.partition(".")
        try:
            good = hmac.compare_digest(base64.urlsafe_b64decode(mac + "=="), self._mac(body))
            claims = json.loads(base64.urlsafe_b64decode(body + "==")) if good else {}
        except ValueError:
            claims = {}
        if not isinstance(claims, dict) or not {"a", "t", "e"} <= set(claims):
            raise InvalidState("the consent link was not issued by this service")
        if claims["e"] < now.timestamp():
            raise InvalidState("the consent link has expired: ask for a new one")
        if str(claims["t"]).lower() != tenant.lower():
            raise InvalidState("consent was granted in another tenant than the link names")
        return str(claims["a"])

    def _mac(self, body: str) -> bytes:
        return hmac.digest(self._key, body.encode(), "sha256")


def consent_url(tenant: str, client_id: str, redirect_uri: str, state: str) -> str:
    """Entra ID's admin-consent endpoint for the app's multi-tenant application."""
    query = urlencode({"client_id": client_id, "redirect_uri": redirect_uri, "state": state})
    return f"https://login.microsoftonline.com/{tenant}/adminconsent?{query}"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def consent_link(services: Services, account: str, tenant: str) -> ConsentLink:
    """The link an administrator of `tenant` opens to grant the app consent; its signed state
    binds the tenant to `account` once granted. NotFound without an Entra ID application."""
    import os

    from shared.dispatch.entra import APP_CLIENT_ID_SETTING
    from shared.errors import NotFound
    from shared.models.connection import ConsentLink
    from shared.portal import base_url

    client_id = os.environ.get(APP_CLIENT_ID_SETTING)
    if not client_id:  # this deployment offers no Entra ID connections
        raise NotFound("this service has no Entra ID application")
    now = services.clock()
    state = services.consent_states.sign(account, tenant, now)
    url = consent_url(tenant, client_id, f"{base_url()}/{CONSENT_PATH}", state)
    return ConsentLink(consent_url=url, expires_at=now + STATE_LIFETIME)


async def grant_consent(services: Services, sent: ConsentCallbackQuery) -> TenantConsented:
    """Entra ID's redirect after an administrator's consent: the link's signed state, checked,
    binds the tenant to the account that asked. ConsentNotGranted when the administrator did
    not grant it; Invalid naming `state` when the state is not ours, has expired, or is for
    another tenant, or the tenant is not a tenant id."""
    from uuid import UUID

    from shared.errors import ConsentNotGranted, Invalid
    from shared.models.connection import TenantConsented

    if sent.error or (sent.admin_consent or "").lower() != "true" or not sent.tenant:
        raise ConsentNotGranted("admin_consent", "the administrator did not grant consent")
    try:
        tenant = UUID(sent.tenant)
        account = services.consent_states.read(sent.state or "", str(tenant), services.clock())
    except (InvalidState, ValueError) as e:  # InvalidState is a ValueError too
        reason = str(e) if isinstance(e, InvalidState) else "not a tenant id"
        raise Invalid(reason, {"state": [reason]}) from None
    await services.ownership.bind_tenant(account, str(tenant), services.clock())
    return TenantConsented(tenant_id=tenant, account=account)
