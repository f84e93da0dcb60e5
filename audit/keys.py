"""The keys of the audit chain: HMAC-SHA256 keys that the database never holds.

``AUDIT_HMAC_KEY`` is the current key: every new event and checkpoint is keyed with
it. ``AUDIT_HMAC_RETIRED_KEYS`` keeps earlier keys for verification only, so the
events and checkpoints they keyed still verify after a rotation. Each key is named by
its id, a fingerprint (an HMAC of a fixed label under the key), stored with every event
and checkpoint: a rotation needs no id to be chosen, and the id says nothing of the key.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from django.conf import settings

_ID_LABEL = b"mpi-trials audit chain key id"
_BLOCK = 64  # SHA-256's block size: HMAC pads (or first hashes) the key to it


def key_id(key: bytes) -> str:
    return hmac.new(key, _ID_LABEL, hashlib.sha256).hexdigest()[:16]


@dataclass(frozen=True)
class Keyring:
    current_id: str
    keys: Mapping[str, bytes]

    @property
    def current(self) -> bytes:
        return self.keys[self.current_id]


def keyring() -> Keyring:
    """The configured keys, current first. The settings are read on each call, so a test's
    or an operator's change of them takes effect without a restart; the ring built from
    them (a key id is an HMAC) is kept per value of the settings."""
    return _keyring(settings.AUDIT_HMAC_KEY, tuple(settings.AUDIT_HMAC_RETIRED_KEYS))


@functools.lru_cache(maxsize=8)
def _keyring(current_key: str, retired_keys: tuple[str, ...]) -> Keyring:
    current = current_key.encode("utf-8")
    keys = {key_id(current): current}
    for retired in retired_keys:
        raw = retired.encode("utf-8")
        keys.setdefault(key_id(raw), raw)
    return Keyring(key_id(current), MappingProxyType(keys))


def chain_macs(ring: Keyring) -> Mapping[str, ChainMac]:
    """A ``ChainMac`` per key of ``ring``, by key id: kept with the ring, so recording an
    event or chaining a batch does not hash the keys' pads again."""
    return _chain_macs(tuple(ring.keys.items()))


@functools.lru_cache(maxsize=8)
def _chain_macs(keys: tuple[tuple[str, bytes], ...]) -> Mapping[str, ChainMac]:
    return MappingProxyType({kid: ChainMac(key) for kid, key in keys})


class ChainMac:
    """HMAC-SHA256 with the key's inner and outer pads hashed once.

    ``hmac.new`` per event costs about three times a plain SHA-256 in CPython; copying
    the two pre-fed hash states costs a third more, which keeps verification fast.
    The result equals ``hmac.new(key, message, sha256).hexdigest()`` (tested)."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes):
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def hexdigest(self, message: bytes) -> str:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()
