"""API keys: minted by the CLI, kept as hashes on a topic every worker follows."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["ROLES", "KeyRing", "Principal", "RateLimit", "mint_key"]

ROLES = ("platform", "responder", "analyst", "admin")
_PREFIX = "lw_"
_ID_LENGTH = 8


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a key's id, role, platform (for platform keys) and name."""

    key_id: str
    role: str
    platform: str | None
    name: str | None

    @property
    def label(self) -> str:
        return self.name or self.key_id


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def mint_key(role: str, platform: str | None, name: str | None) -> tuple[str, dict[str, Any]]:
    """A new key and the record to publish; the key itself is shown once and never stored."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if (role == "platform") != (platform is not None):
        raise ValueError("a platform key needs --platform, and only a platform key takes one")
    key_id = secrets.token_hex(_ID_LENGTH // 2)
    secret = secrets.token_urlsafe(32)
    record = {
        "key_id": key_id,
        "hash": _hash(secret),
        "role": role,
        "platform": platform,
        "name": name,
        "created_at": time.time(),
    }
    return f"{_PREFIX}{key_id}_{secret}", record


class KeyRing:
    """The keys as read from the keys topic: records in order, revocations included."""

    def __init__(self) -> None:
        self._keys: dict[str, dict[str, Any]] = {}

    def apply(self, record: dict[str, Any]) -> None:
        key_id = str(record["key_id"])
        if "revoked_at" in record and "hash" not in record:
            if key_id in self._keys:
                self._keys[key_id]["revoked_at"] = record["revoked_at"]
            return
        self._keys[key_id] = dict(record)

    def records(self) -> list[dict[str, Any]]:
        return sorted(self._keys.values(), key=lambda record: float(record["created_at"]))

    def authenticate(self, token: str) -> Principal | None:
        """The principal behind a presented key, or None (unknown, malformed or revoked)."""
        if not token.startswith(_PREFIX) or token[len(_PREFIX) + _ID_LENGTH :][:1] != "_":
            return None
        key_id = token[len(_PREFIX) : len(_PREFIX) + _ID_LENGTH]
        secret = token[len(_PREFIX) + _ID_LENGTH + 1 :]
        record = self._keys.get(key_id)
        # Compare hashes in constant time; an unknown key id still costs one hash.
        expected = record["hash"] if record else _hash("")
        if not hmac.compare_digest(_hash(secret), str(expected)) or record is None:
            return None
        if record.get("revoked_at") is not None:
            return None
        return Principal(key_id, str(record["role"]), record.get("platform"), record.get("name"))


class RateLimit:
    """Requests per key: a token bucket of `burst` requests refilled at `rate` per second.

    Per worker: with N workers behind a load balancer a key gets up to N times the rate."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, 2 * rate)
        self._buckets: dict[str, tuple[float, float]] = {}  # key id -> (tokens, when)

    def wait(self, key_id: str, now: float) -> float:
        """0 when the request may go ahead (and is counted); else seconds until it may."""
        tokens, when = self._buckets.get(key_id, (self.burst, now))
        tokens = min(self.burst, tokens + (now - when) * self.rate)
        if tokens >= 1:
            self._buckets[key_id] = (tokens - 1, now)
            return 0.0
        self._buckets[key_id] = (tokens, now)
        return (1 - tokens) / self.rate
