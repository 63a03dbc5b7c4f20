"""AES-256-GCM encryption of secrets at rest (DESIGN §5).

Keys come from AIBRIDGE_ENCRYPTION_KEYS: comma-separated base64 32-byte keys; the first
encrypts, all decrypt. Each stored value records the digest of the key that
encrypted it (`key_id`), so rotation knows what to re-encrypt. The associated data
binds a ciphertext to its row and column: a value copied into another row fails to
decrypt instead of leaking under the wrong provider.

Without keys, values are stored as they are (key_id None), with a start-up warning.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_NONCE_BYTES = 12


class DecryptError(Exception):
    """A stored secret cannot be decrypted with the configured keys (message has no secret)."""


def key_id(key: bytes) -> str:
    """Digest of an encryption key, recorded beside every value it encrypts."""
    return hashlib.sha256(key).hexdigest()[:16]


def parse_keys(value: str) -> tuple[list[bytes], list[str]]:
    """Parse AIBRIDGE_ENCRYPTION_KEYS; return the keys and every problem found."""
    keys: list[bytes] = []
    problems: list[str] = []
    for index, part in enumerate(p.strip() for p in value.split(",")):
        if not part:
            if value.strip():
                problems.append(f"AIBRIDGE_ENCRYPTION_KEYS: entry {index} is empty")
            continue
        try:
            raw = base64.b64decode(part, validate=True)
        except (binascii.Error, ValueError):
            problems.append(f"AIBRIDGE_ENCRYPTION_KEYS: entry {index} is not valid base64")
            continue
        if len(raw) != 32:
            problems.append(
                f"AIBRIDGE_ENCRYPTION_KEYS: entry {index} decodes to {len(raw)} bytes, "
                "expected 32 (generate one with: openssl rand -base64 32)"
            )
            continue
        keys.append(raw)
    return keys, problems


def generate_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@dataclass(frozen=True)
class Cipher:
    """Encrypts with the first key, decrypts with any key."""

    keys: tuple[bytes, ...] = field(default=(), repr=False)

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    @property
    def primary_id(self) -> str | None:
        return key_id(self.keys[0]) if self.keys else None

    def encrypt(self, plaintext: str, aad: str) -> tuple[str, str | None]:
        """Return (stored value, key id); (plaintext, None) when encryption is off."""
        if not self.keys:
            return plaintext, None
        nonce = os.urandom(_NONCE_BYTES)
        sealed = AESGCM(self.keys[0]).encrypt(nonce, plaintext.encode(), aad.encode())
        return base64.b64encode(nonce + sealed).decode(), key_id(self.keys[0])

    def decrypt(self, stored: str, stored_key_id: str | None, aad: str) -> str:
        if stored_key_id is None:
            return stored
        for key in self.keys:
            if key_id(key) == stored_key_id:
                break
        else:
            raise DecryptError(
                f"value was encrypted with key {stored_key_id}, "
                "which is not in AIBRIDGE_ENCRYPTION_KEYS"
            )
        try:
            blob = base64.b64decode(stored, validate=True)
            nonce, sealed = blob[:_NONCE_BYTES], blob[_NONCE_BYTES:]
            return AESGCM(key).decrypt(nonce, sealed, aad.encode()).decode()
        except (InvalidTag, binascii.Error, ValueError) as exc:
            raise DecryptError(f"value encrypted with key {stored_key_id} is corrupt") from exc
