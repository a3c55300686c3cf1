"""The few AMQP 1.0 encoding rules the emulator needs by hand, and the stored message.

A message is stored as the encoded sections the client sent, so delivering it costs a few
byte joins, not a decode and an encode.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

HEADER, DELIVERY_ANNOTATIONS, MESSAGE_ANNOTATIONS, PROPERTIES, APP_PROPERTIES = range(0x70, 0x75)
DATA, AMQP_SEQUENCE, AMQP_VALUE = range(0x75, 0x78)
BODY_SECTIONS = (DATA, AMQP_SEQUENCE, AMQP_VALUE)
Section = tuple[int, int, int]  # (section code, start, end) within a buffer


def _value_end(buf: bytes, pos: int) -> int:
    """Where the AMQP value at `pos` ends. The constructor's high nibble says how its width
    is written (AMQP 1.0 part 1, 1.6)."""
    code, pos = buf[pos], pos + 1
    if code == 0x00:  # described: a descriptor, then the value
        return _value_end(buf, _value_end(buf, pos))
    kind = code >> 4
    if 0x4 <= kind <= 0x9:  # fixed widths 0, 1, 2, 4, 8, 16
        end = pos + (0, 1, 2, 4, 8, 16)[kind - 4]
    elif kind in (0xA, 0xC, 0xE):  # size in 1 byte
        end = pos + 1 + buf[pos]
    elif kind in (0xB, 0xD, 0xF):  # size in 4 bytes
        end = pos + 4 + int.from_bytes(buf[pos : pos + 4], "big")
    else:
        raise ValueError(f"not an AMQP constructor: 0x{code:02x}")
    if end > len(buf):
        raise ValueError("truncated AMQP value")
    return end


def _sections(buf: bytes) -> list[Section]:
    """An encoded message's sections; ValueError if `buf` is not a message."""
    out: list[Section] = []
    pos = 0
    while pos < len(buf):
        if buf[pos : pos + 2] != b"\x00\x53":  # a section is described by a smallulong code
            raise ValueError("not a message section")
        end = _value_end(buf, pos)
        out.append((buf[pos + 2], pos, end))
        pos = end
    return out


def _map_entries(buf: bytes, section: Section) -> tuple[int, bytes]:
    """(element count, encoded elements) of a map section, to extend without decoding."""
    _, start, end = section
    value = start + 3
    if buf[value] == 0xC1:  # map8: size, count
        return buf[value + 2], buf[value + 3 : end]
    if buf[value] == 0xD1:  # map32
        return int.from_bytes(buf[value + 5 : value + 9], "big"), buf[value + 9 : end]
    return 0, b""  # null


def _map_section(code: int, count: int, entries: bytes) -> bytes:
    return bytes((0x00, 0x53, code, 0xD1)) + struct.pack(">II", len(entries) + 4, count) + entries


def _sym(name: str) -> bytes:
    return bytes((0xA3, len(name))) + name.encode()


def _str(text: str) -> bytes:
    raw = text.encode()
    return (bytes((0xA1, len(raw))) if len(raw) < 256 else struct.pack(">BI", 0xB1, len(raw))) + raw


def _header_fields(buf: bytes, section: Section) -> tuple[bool, int, int | None]:
    """(durable, priority, ttl in ms) of a header section; we write the other fields."""
    _, start, end = section
    pos = start + 3 + {0x45: 1, 0xC0: 3, 0xD0: 9}.get(buf[start + 3], end)  # list0/8/32
    values: list[Any] = []
    while pos < end and len(values) < 3:
        code, nxt = buf[pos], _value_end(buf, pos)
        simple = {0x40: None, 0x41: True, 0x42: False, 0x43: 0}
        values.append(simple[code] if code in simple else int.from_bytes(buf[pos + 1 : nxt], "big"))
        pos = nxt
    durable, priority, ttl = [*values, None, None, None][:3]
    return bool(durable), 4 if priority is None else priority, ttl


def _group_id(buf: bytes, section: Section) -> str | None:
    """The group-id (the SDK's session_id) of a properties section: its 11th field."""
    _, start, end = section
    pos = start + 3 + {0x45: 1, 0xC0: 3, 0xD0: 9}.get(buf[start + 3], end)  # list0/8/32
    for _ in range(10):
        if pos >= end:
            return None
        pos = _value_end(buf, pos)
    if pos >= end or buf[pos] not in (0xA1, 0xB1):  # absent, null, or not a string
        return None
    width = 1 if buf[pos] == 0xA1 else 4
    return buf[pos + 1 + width : _value_end(buf, pos)].decode()


_SEQUENCE, _ENQUEUED, _LOCKED_UNTIL = (
    _sym(f"x-opt-{name}") for name in ("sequence-number", "enqueued-time", "locked-until")
)


@dataclass(slots=True, eq=False)
class StoredMessage:
    """A message in a queue: the sections the client encoded, and our bookkeeping."""

    properties: bytes = b""  # the properties section, as sent
    body: bytes = b""  # the body sections and footer, as sent
    app_count: int = 0
    app_entries: bytes = b""
    annotation_count: int = 0
    annotation_entries: bytes = b""
    durable: bool = False
    priority: int = 4
    ttl_ms: int | None = None
    session_id: str | None = None
    seq: int = 0
    enqueued_ms: int = 0
    delivery_count: int = 0  # deliveries so far; the header carries the earlier ones

    @classmethod
    def parse(cls, raw: bytes, sections: list[Section]) -> StoredMessage:
        msg = cls()
        for section in sections:
            code, start, end = section
            if code == HEADER:
                msg.durable, msg.priority, msg.ttl_ms = _header_fields(raw, section)
            elif code == MESSAGE_ANNOTATIONS:
                msg.annotation_count, msg.annotation_entries = _map_entries(raw, section)
            elif code == PROPERTIES:
                msg.properties = raw[start:end]
                msg.session_id = _group_id(raw, section)
            elif code == APP_PROPERTIES:
                msg.app_count, msg.app_entries = _map_entries(raw, section)
            elif code in BODY_SECTIONS:
                msg.body = raw[start:]
                return msg
            # delivery annotations are for one hop only: dropped
        raise ValueError("a message without a body")

    def add(self, application_properties: dict[str, str], annotations: dict[str, str]) -> None:
        self.app_entries += b"".join(_str(k) + _str(v) for k, v in application_properties.items())
        self.app_count += 2 * len(application_properties)
        self.annotation_entries += b"".join(_sym(k) + _str(v) for k, v in annotations.items())
        self.annotation_count += 2 * len(annotations)

    def encode(self, locked_until: float | None = None) -> bytes:
        """The message as a receiver gets it: our header and annotations, the rest as sent."""
        fields = (
            (b"\x41" if self.durable else b"\x42")
            + bytes((0x50, self.priority))
            + (struct.pack(">BI", 0x70, self.ttl_ms) if self.ttl_ms is not None else b"\x40")
            + b"\x40"  # first-acquirer: unset
            + struct.pack(">BI", 0x70, max(self.delivery_count - 1, 0))
        )
        header = bytes((0x00, 0x53, HEADER, 0xC0, len(fields) + 1, 5)) + fields
        ours = _SEQUENCE + struct.pack(">Bq", 0x81, self.seq)  # long
        ours += _ENQUEUED + struct.pack(">Bq", 0x83, self.enqueued_ms)  # timestamp
        count = self.annotation_count + 4
        if locked_until is not None:
            ours += _LOCKED_UNTIL + struct.pack(">Bq", 0x83, int(locked_until * 1000))
            count += 2
        annotations = _map_section(MESSAGE_ANNOTATIONS, count, self.annotation_entries + ours)
        app = (
            _map_section(APP_PROPERTIES, self.app_count, self.app_entries)
            if self.app_count
            else b""
        )
        return b"".join((header, annotations, self.properties, app, self.body))


def split_transfer(payload: bytes) -> list[StoredMessage]:
    """The messages in one transfer. An SDK batch is a message whose data sections each
    hold one encoded message. proton's Python API does not show a transfer's
    message-format (0x80013700 for a batch), so a batch is known by that shape: data
    sections only, each a whole message with a body. A JSON or text body never starts
    with a section descriptor, so an ordinary message is not taken for a batch."""
    sections = _sections(payload)
    bodies = [s for s in sections if s[0] in BODY_SECTIONS]
    if bodies and all(code == DATA for code, _, _ in bodies):
        try:
            return [_embedded_message(payload, body) for body in bodies]
        except (ValueError, IndexError):
            pass  # data that is not an encoded message: an ordinary message
    return [StoredMessage.parse(payload, sections)]


def _embedded_message(payload: bytes, data: Section) -> StoredMessage:
    _, start, end = data
    raw = payload[start + 5 : end] if payload[start + 3] == 0xA0 else payload[start + 8 : end]
    sections = _sections(raw)  # (above: the bytes of a vbin8 or a vbin32)
    if [code for code, _, _ in sections] != sorted(code for code, _, _ in sections):
        raise ValueError("sections out of order")
    return StoredMessage.parse(raw, sections)
