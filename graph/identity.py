"""Pseudonymous actor ids: a keyed hash, so ids in topics and logs do not name a person."""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["actor_id_for"]


def actor_id_for(account_key: str, secret: bytes) -> str:
    """The actor id of one offender account (`platform:account`), stable for a given secret."""
    digest = hmac.new(secret, account_key.encode("utf-8"), hashlib.sha256).hexdigest()
    return f"act_{digest[:20]}"
