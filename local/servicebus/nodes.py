"""The request/response nodes: `$cbs` (put-token, the SAS check) and `<queue>/$management`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import unquote_plus

from proton import (
    UNDESCRIBED,
    Array,
    Data,
    Delivery,
    Message,
    symbol,
    timestamp,
)

from local.servicebus.store import Entity

MGMT_SUFFIX = "/$management"
NOT_FOUND = "amqp:not-found"
NOT_ALLOWED = "amqp:not-allowed"
LOCK_LOST = "com.microsoft:message-lock-lost"
SESSION_LOCK_LOST = "com.microsoft:session-lock-lost"
# Broker._settle: apply an outcome to a locked message; False when its lock is gone.
Settle = Callable[[Entity, bytes, int, bool, tuple[str, str]], bool]


def not_found_text(entity: str) -> str:
    """Service Bus's words for an unknown entity. The JavaScript SDK tells
    MessagingEntityNotFound from other amqp:not-found errors by them ("could not be found")."""
    return (
        f"The messaging entity '{entity}' could not be found. "
        "To know more visit https://aka.ms/sbResourceMgrExceptions."
    )


def check_sas_token(token: str, key: str, now: float) -> tuple[int, str]:
    """(expiry, "") if `token` is signed with `key` and unexpired, else (0, why not)."""
    prefix = "SharedAccessSignature "
    fields = dict(p.split("=", 1) for p in token[len(prefix) :].split("&") if "=" in p)
    try:
        resource, signature, expiry = fields["sr"], unquote_plus(fields["sig"]), int(fields["se"])
    except (KeyError, ValueError):
        return 0, "InvalidToken: not a shared access signature"
    # The signature covers the url-encoded resource as it appears in the token.
    expected = hmac.new(key.encode(), f"{resource}\n{expiry}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(base64.b64encode(expected).decode(), signature):
        return 0, "InvalidSignature: the token has an invalid signature"
    if expiry <= now:
        return 0, "ExpiredToken: the token has expired"
    return expiry, ""


SERVICEBUS_AUDIENCE = "https://servicebus.azure.net"  # what Entra ID tokens for it carry


def check_jwt_token(token: str, issuer_key: Any, now: float) -> tuple[int, str]:
    """(expiry, "") if `token` is a JWT for Service Bus signed by the test issuer's key
    (RS256) and unexpired, else (0, why not). No key given: JWTs are refused."""
    import jwt

    if issuer_key is None:
        return 0, "InvalidToken: this emulator was given no issuer key for jwt tokens"
    try:
        claims = jwt.decode(
            token,
            issuer_key,
            algorithms=["RS256"],
            audience=[SERVICEBUS_AUDIENCE, SERVICEBUS_AUDIENCE + "/"],
            options={"require": ["exp", "aud"]},
        )
    except jwt.InvalidAudienceError:
        return 0, "InvalidAudience: the token's audience is not Service Bus"
    except jwt.PyJWTError as e:
        return 0, f"InvalidToken: {type(e).__name__}"
    expiry = int(claims["exp"])
    return (expiry, "") if expiry > now else (0, "ExpiredToken: the token has expired")


def management_reply(
    name: str,
    entity: Entity | None,
    operation: str,
    body: dict[Any, Any],
    lock_duration: float,
    settle: Settle,
) -> Message:
    """The answer to a `<queue>/$management` request: renew-lock, update-disposition,
    peek-message, renew-session-lock."""

    def answer(code: int, text: str, value: Any = None, condition: str = "") -> Message:
        fields: dict[str, Any] = {"statusCode": code, "statusDescription": text}
        if condition:
            fields["errorCondition"] = symbol(condition)
        return Message(properties=fields, body=value)

    if entity is None:
        return answer(404, not_found_text(name), None, NOT_FOUND)
    if operation == "com.microsoft:renew-session-lock":
        session = str(body.get("session-id"))
        if session not in entity.session_holders:  # its receiver has gone
            return answer(410, "The session lock was lost.", None, SESSION_LOCK_LOST)
        expiration = timestamp(int((time.time() + lock_duration) * 1000))
        return answer(200, "OK", {"expiration": expiration})
    tokens = body.get("lock-tokens")
    tokens = [t.bytes_le for t in (tokens.elements if isinstance(tokens, Array) else [])]
    lost = answer(410, "The lock on the message was lost.", None, LOCK_LOST)
    if operation == "com.microsoft:renew-lock":
        if any(t not in entity.locked for t in tokens):
            return lost
        until = time.time() + lock_duration
        for t in tokens:
            entity.locked[t].until = until
        times = [timestamp(until * 1000)] * len(tokens)
        return answer(
            200, "OK", {"expirations": Array(cast(Any, UNDESCRIBED), Data.TIMESTAMP, *times)}
        )
    if operation == "com.microsoft:update-disposition":
        status = str(body.get("disposition-status"))
        outcome = {"abandoned": Delivery.MODIFIED, "defered": Delivery.MODIFIED}.get(
            status, Delivery.REJECTED if status == "suspended" else Delivery.ACCEPTED
        )
        reason = (
            str(body.get("deadletter-reason", "")),
            str(body.get("deadletter-description", "")),
        )
        settled = [settle(entity, t, outcome, status == "defered", reason) for t in tokens]
        return answer(200, "OK", {}) if all(settled) else lost
    if operation == "com.microsoft:peek-message":
        start = int(body.get("from-sequence-number") or 0)
        every = entity.waiting() + [lk.message for lk in entity.locked.values()]
        chosen = sorted((m for m in every if m.seq >= start), key=lambda m: m.seq)
        chosen = chosen[: int(body.get("message-count") or 1)]
        if not chosen:
            return answer(204, "No messages to peek.")
        return answer(200, "OK", {"messages": [{"message": m.encode()} for m in chosen]})
    return answer(501, f"The emulator does not do {operation}.", None, "amqp:not-implemented")
