"""Encryption at rest for connection-string secrets: AES-GCM with a key ring that can rotate.

`ENCRYPTION_KEYS` is `id:base64key[,id:base64key...]`; the first key encrypts, all decrypt.
A sealed value is `v1.<key id>.<base64 nonce+ciphertext>`, bound to its owner as associated data
so a sealed secret copied onto another connection does not open.
"""

from __future__ import annotations

import base64
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_VERSION = "v1"


class KeyRing:
    def __init__(self, spec: str) -> None:
        self._keys: dict[str, AESGCM] = {}
        self._raw: dict[str, bytes] = {}
        self._current = ""
        for part in filter(None, (p.strip() for p in spec.split(","))):
            key_id, sep, encoded = part.partition(":")
            key = base64.b64decode(encoded) if sep else b""
            if not key_id or "." in key_id or len(key) != 32:
                raise ValueError("ENCRYPTION_KEYS entries must be `id:base64 of 32 bytes`")
            self._keys[key_id] = AESGCM(key)
            self._raw[key_id] = key
            self._current = self._current or key_id
        if not self._keys:
            raise ValueError("ENCRYPTION_KEYS holds no key")

    @staticmethod
    def new_key_spec(key_id: str = "k1") -> str:
        return f"{key_id}:{base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()}"

    def derived(self, purpose: str) -> bytes:
        """A 32-byte key for one purpose (HMAC of one-time codes, signed states), derived from
        the current key with HKDF: what it signs stops being valid when the ring rotates,
        which suits short-lived proofs."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode())
        return hkdf.derive(self._raw[self._current])

    def seal(self, plaintext: str, owner: str) -> str:
        nonce = os.urandom(12)
        sealed = self._keys[self._current].encrypt(nonce, plaintext.encode(), owner.encode())
        return f"{_VERSION}.{self._current}.{base64.b64encode(nonce + sealed).decode()}"

    def open(self, token: str, owner: str) -> str:
        version, key_id, payload = token.split(".", 2)
        if version != _VERSION or key_id not in self._keys:
            raise ValueError(f"cannot open a secret sealed with key {key_id!r}")
        raw = base64.b64decode(payload)
        return self._keys[key_id].decrypt(raw[:12], raw[12:], owner.encode()).decode()
