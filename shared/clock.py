"""Time and time-ordered ids, with the clock injected so tests need not wait."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from uuid import UUID

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


def uuid7(at: datetime) -> UUID:
    """A version 7 UUID: 48 bits of Unix milliseconds, then random bits (RFC 9562)."""
    millis = int(at.timestamp() * 1000)
    value = (millis & (2**48 - 1)) << 80 | int.from_bytes(os.urandom(10)) & (2**80 - 1)
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return UUID(int=value)


def uuid7_millis(uid: UUID) -> int:
    return uid.int >> 80
