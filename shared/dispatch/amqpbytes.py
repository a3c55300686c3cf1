"""An `Outgoing`'s AMQP encoding, written directly.

These are the bytes that azure-servicebus's own encoder (`_pyamqp._encode.encode_payload`)
makes of the `ServiceBusMessage` that `Outgoing.to_servicebus` builds: its properties, its
application properties and one data section. Building that message, converting it and
encoding it through the SDK's general, type-dispatched encoder cost about 90 µs of CPU a
delivery; this costs a fraction (docs/BENCHMARKS.md). Only the shapes our messages take are
written here. Anything else goes the SDK's way (`None`):
- a time to live, for which the SDK adds a header and stamps a creation time;
- a property value other than text, a bool or a 32-bit int.

tests/test_amqpbytes.py holds these bytes equal to the SDK's for every delivery option, and
azure-servicebus stays pinned.
"""

from __future__ import annotations

from typing import Any

from shared.dispatch.outgoing import CONTENT_TYPE, Outgoing
from shared.models.deliveryoptions import TimeToLive

NULL = b"\x40"
TRUE, FALSE = b"\x56\x01", b"\x56\x00"  # a bool as the SDK writes one in a map: 0x56 and a byte
STRING, SYMBOL, BINARY = 0xA1, 0xA3, 0xA0  # the one-byte-length codes; +0x10: four-byte length
LIST, MAP = 0xC0, 0xC1  # list8, map8; +0x10: list32, map32
PROPERTIES, APPLICATION_PROPERTIES, DATA = b"\x00\x53\x73", b"\x00\x53\x74", b"\x00\x53\x75"
INT32 = range(-(2**31), 2**31)


def encoded(message: Outgoing) -> bytes | None:
    """The message's AMQP bytes, or None where the SDK must encode it."""
    if message.options.value(TimeToLive) is not None:
        return None
    pairs = []
    for name, value in message.application_properties().items():
        written = _value(value)
        if written is None:
            return None
        pairs.append(_string(name) + written)
    content_type = _variable(SYMBOL, CONTENT_TYPE.encode()) if message.body else NULL
    session = message.session_id
    fields = (
        _string(message.message_id),
        NULL,  # user-id
        NULL,  # to
        _string(message.event_key),  # subject
        NULL,  # reply-to
        _string(message.event_id),  # correlation-id
        content_type,
        NULL * 3,  # content-encoding, absolute-expiry-time, creation-time
        NULL if session is None else _string(session),  # group-id
        NULL * 2,  # group-sequence, reply-to-group-id
    )
    return b"".join(
        (
            PROPERTIES,
            _compound(LIST, 13, b"".join(fields)),
            APPLICATION_PROPERTIES,
            _compound(MAP, 2 * len(pairs), b"".join(pairs)),
            DATA,
            _variable(BINARY, message.body),
        )
    )


def _value(value: Any) -> bytes | None:
    """An application property's value, as the SDK infers its type; None: not written here."""
    if value is True or value is False:
        return TRUE if value else FALSE
    if isinstance(value, str):
        return _string(value)
    if type(value) is int and -128 <= value <= 127:
        return b"\x54" + value.to_bytes(1, "big", signed=True)  # smallint
    if type(value) is int and value in INT32:
        return b"\x71" + value.to_bytes(4, "big", signed=True)
    return None


def _string(text: str) -> bytes:
    return _variable(STRING, text.encode())


def _variable(code: int, data: bytes) -> bytes:
    """A string, symbol or binary: its one-byte-length code up to 255 bytes, else four."""
    n = len(data)
    if n <= 255:
        return bytes((code, n)) + data
    return bytes((code + 0x10,)) + n.to_bytes(4, "big") + data


def _compound(code: int, count: int, body: bytes) -> bytes:
    """A list or map: one-byte size and count while the body is under 255 bytes, else four."""
    if count <= 255 and len(body) < 255:
        return bytes((code, len(body) + 1, count)) + body
    return (
        bytes((code + 0x10,)) + (len(body) + 4).to_bytes(4, "big") + count.to_bytes(4, "big") + body
    )
