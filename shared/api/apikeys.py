"""API keys as an API (issue 26): a key with `keys:manage` makes, lists, rotates and deletes
the keys of its account; the secret is shown once. The command line makes the first key."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import azure.functions as func

from shared.api.http import ApiError, Call, endpoint
from shared.models.access import Scope

if TYPE_CHECKING:
    from shared.models.apikeys import ApiKey, ApiKeyWithSecret
    from shared.models.audit import AuditPage

bp = func.Blueprint()
COLLECTION = "v1/apikeys"
KEY_ID = re.compile(r"^[0-9a-f]{8}$")


def key_id(call: Call) -> str:
    value = call.route["keyId"]
    if not KEY_ID.match(value):
        raise ApiError(404, "Not found", f"no API key {value!r}")
    return value


@endpoint(
    bp,
    "POST",
    COLLECTION,
    body="ApiKeyToCreate",
    returns="ApiKeyWithSecret",
    errors=(400,),
    status=201,
    scope=Scope.KEYS_MANAGE,
    audit="apikey.create",
)
async def create_api_key(call: Call) -> ApiKeyWithSecret:
    """Make a key for the caller's account, with scopes (and connections, lifetime) the
    caller's key holds itself. The answer holds the secret: it is never shown again."""
    from shared.service import apikeys

    return await apikeys.create(call.services, call.grant, call.body)


@endpoint(bp, "GET", COLLECTION, returns="ApiKey", many=True, scope=Scope.KEYS_MANAGE)
async def list_api_keys(call: Call) -> list[ApiKey]:
    """The account's keys, oldest first (no secrets)."""
    from shared.service import apikeys

    return await apikeys.list_keys(call.services, call.grant)


@endpoint(
    bp,
    "GET",
    COLLECTION + "/{keyId}",
    returns="ApiKey",
    errors=(404,),
    scope=Scope.KEYS_MANAGE,
)
async def get_api_key(call: Call) -> ApiKey:
    """One key of the account (no secret)."""
    from shared.service import apikeys

    return await apikeys.get(call.services, call.grant, key_id(call))


@endpoint(
    bp,
    "DELETE",
    COLLECTION + "/{keyId}",
    errors=(404,),
    status=204,
    scope=Scope.KEYS_MANAGE,
    audit="apikey.delete",
)
async def delete_api_key(call: Call) -> None:
    """Revoke a key, every secret of it (other processes stop honouring it within 10 s)."""
    from shared.service import apikeys

    await apikeys.delete(call.services, call.grant, key_id(call))


@endpoint(
    bp,
    "POST",
    COLLECTION + "/{keyId}/rotate",
    body="RotateApiKey",
    returns="ApiKeyWithSecret",
    errors=(400, 404),
    scope=Scope.KEYS_MANAGE,
    audit="apikey.rotate",
)
async def rotate_api_key(call: Call) -> ApiKeyWithSecret:
    """A new secret for the key; the old one keeps working for OverlapSeconds (default 3600,
    at most 7 days), then stops. The answer holds the new secret: it is never shown again."""
    from shared.service import apikeys

    return await apikeys.rotate(call.services, call.grant, key_id(call), call.body)


@endpoint(
    bp,
    "GET",
    "v1/audit",
    query="AuditQuery",
    returns="AuditPage",
    errors=(400,),
    scope=Scope.KEYS_MANAGE,
    restricted_keys=False,
)
async def list_audit(call: Call) -> AuditPage:
    """Who changed what in the account: changes to connections and keys, newest first, kept
    90 days (which key, action, target, when; never a secret). Pages follow NextCursor."""
    from shared.service.audit import page

    return await page(call.services, call.account, call.query)
