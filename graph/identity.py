# mypyc: compiled by `make compile` (graph/__init__.py); keep it fully typed.
"""Pseudonyms: identifiers that can point to a person never enter linkwatch's state as they are.

At intake every report's identifiers are replaced, before anything is written to an
internal topic or kept in memory:

- a victim account becomes `v_` + 20 hex digits of HMAC-SHA256(key, platform:account):
  one-way; linkwatch never needs the victim's account back (alerts count victims);
- a signal value (email hash, phone hash, device id, ip) becomes `s_` + 20 hex digits of
  HMAC-SHA256(key, name:value): one-way; equal values still link;
- an offender account becomes a sealed token, `o_` + base64url(tag || ciphertext), where
  tag = HMAC-SHA256(mac key, account)[:12] is the pseudonym proper (equal accounts, equal
  tokens) and the ciphertext is the account XORed with HMAC-SHA256(encryption key, tag ||
  block number) blocks. Responders must act on the offender's real account, so the worker
  opens tokens when it writes an alert (console, API, webhook, alerts topic) and for an
  audited `POST /v1/pseudonyms/resolve`; snapshots and internal topics keep the tokens.
  Opening checks the tag, so a forged or corrupted token is refused.

The three keys are derived from one configured key (LINKWATCH_PSEUDONYM_KEY). Actor ids
are a keyed hash of the founding account's token, so they name no one either.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

__all__ = ["Pseudonyms", "actor_id_for", "pseudonym_key_for"]

_TAG_BYTES = 12
_BLOCK = hashlib.sha256().digest_size
_CACHE_LIMIT = 1 << 16


def actor_id_for(account_key: str, secret: bytes) -> str:
    """The actor id of one offender account (`platform:account`), stable for a given secret."""
    mac = _actor_macs.get(secret)
    if mac is None:
        mac = _actor_macs[secret] = _Hmac(secret)
    return "act_" + mac.hex(account_key.encode("utf-8"))[:20]


# One keyed hash per secret (a process has one or two): `hmac.new` per new account set up
# the key's pads each time, 4% of the worker's event loop.
_actor_macs: dict[bytes, _Hmac] = {}


def pseudonym_key_for(secret: bytes) -> bytes:
    """The pseudonym key derived from linkwatch's secret, when none is configured."""
    return hmac.digest(secret, b"linkwatch pseudonym key", "sha256")


class Pseudonyms:
    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the pseudonym key must be at least 16 bytes")

        def derive(label: bytes) -> _Hmac:
            return _Hmac(hmac.digest(key, label, "sha256"))

        self._victim = derive(b"linkwatch victim")
        self._signal = derive(b"linkwatch signal")
        self._mac = derive(b"linkwatch offender tag")
        self._encrypt = derive(b"linkwatch offender seal")
        # Offenders and signal values repeat (one actor files many reports): cache them.
        self._offenders: dict[str, str] = {}
        self._signals: dict[str, str] = {}
        self._victims: dict[str, str] = {}

    def idle(self) -> None:
        """Drop the caches: they speed up a burst of reports, and hold up to about 15 MB
        (measured, 200,000 reports) that an idle intake process need not keep."""
        self._offenders.clear()
        self._signals.clear()
        self._victims.clear()

    def victim(self, platform: str, account: str) -> str:
        key = f"{platform}:{account}"
        known = self._victims.get(key)
        if known is None:
            known = "v_" + self._victim.hex(key.encode("utf-8"))[:20]
            _remember(self._victims, key, known)
        return known

    def signal(self, name: str, value: str) -> str:
        key = f"{name}:{value}"
        known = self._signals.get(key)
        if known is None:
            known = "s_" + self._signal.hex(key.encode("utf-8"))[:20]
            _remember(self._signals, key, known)
        return known

    def offender(self, account: str) -> str:
        """The sealed token of an offender account (within its platform)."""
        known = self._offenders.get(account)
        if known is None:
            plain = account.encode("utf-8")
            tag = self._mac.digest(plain)[:_TAG_BYTES]
            sealed = tag + _xor(plain, self._keystream(tag, len(plain)))
            known = "o_" + base64.urlsafe_b64encode(sealed).decode().rstrip("=")
            _remember(self._offenders, account, known)
        return known

    def open(self, token: str) -> str | None:
        """The offender account inside a token; None if it is not one of this key's."""
        if not token.startswith("o_"):
            return None
        try:
            body = token[2:]
            sealed = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (ValueError, TypeError):
            return None
        tag, cipher = sealed[:_TAG_BYTES], sealed[_TAG_BYTES:]
        plain = _xor(cipher, self._keystream(tag, len(cipher)))
        if len(tag) != _TAG_BYTES or not hmac.compare_digest(
            self._mac.digest(plain)[:_TAG_BYTES], tag
        ):
            return None
        try:
            return plain.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def reveal(self, key: str) -> str:
        """`platform:token` -> `platform:account`; anything else is returned as it is."""
        platform, _, token = key.partition(":")
        account = self.open(token)
        return key if account is None else f"{platform}:{account}"

    def _keystream(self, tag: bytes, size: int) -> bytes:
        blocks = [
            self._encrypt.digest(tag + number.to_bytes(4, "big"))
            for number in range(-(-size // _BLOCK))
        ]
        return b"".join(blocks)[:size]


class _Hmac:
    """HMAC-SHA256 with one key: the padded key's hash states are made once and copied
    per message (RFC 2104), a third cheaper per value than `hmac.new(...).copy()`."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > 64:  # RFC 2104: a key longer than the block is hashed first
            key = hashlib.sha256(key).digest()
        block = key.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(byte ^ 0x36 for byte in block))
        self._outer = hashlib.sha256(bytes(byte ^ 0x5C for byte in block))

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def hex(self, message: bytes) -> str:
        return self.digest(message).hex()


def _xor(data: bytes, stream: bytes) -> bytes:
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(len(data), "big")


def _remember(cache: dict[str, str], key: str, value: str) -> None:
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()  # bounded; a full cache starts over rather than tracking recency
    cache[key] = value
