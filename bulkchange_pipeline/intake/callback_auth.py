"""Who a ThingSpace callback speaks for: the accounts whose callback username/password its body
echoes (``BULKCHANGE_CRED_<NAME>_CALLBACK_USERNAME`` / ``_CALLBACK_PASSWORD``), compared in
constant time. Teal's callback carries no credentials; its request id is checked by the route.
"""

from __future__ import annotations

import hmac
import time
from typing import Any

import sqlalchemy as sa

from .. import settings
from ..store.callbacks import credentials_names

__all__ = ["thingspace_senders"]


def thingspace_senders(engine: sa.Engine, payload: Any) -> list[str]:
    """Credentials names of the ThingSpace accounts whose callback username/password the payload
    carries (several if accounts share them; empty: not authenticated)."""
    if not isinstance(payload, dict):
        return []
    user, password = str(payload.get("username") or ""), str(payload.get("password") or "")
    if not user or not password:
        return []
    # The cached account list speeds up the common case; a miss re-reads it before refusing, so an
    # account added in the last 30 s is not answered 401 (ThingSpace gives up after a few tries).
    return _matching_accounts(_thingspace_accounts(engine), user, password) or _matching_accounts(
        _thingspace_accounts(engine, fresh=True), user, password
    )


def _matching_accounts(names: list[str], user: str, password: str) -> list[str]:
    senders = []
    for name in names:
        want_user = settings.credential_value(name, "CALLBACK_USERNAME")
        want_pw = settings.credential_value(name, "CALLBACK_PASSWORD")
        if (
            want_user
            and want_pw
            and _same(user, want_user.get_secret_value())
            and _same(password, want_pw.get_secret_value())
        ):
            senders.append(name)
    return sorted(senders)


def _same(sent: str, want: str) -> bool:
    """Constant-time comparison of text; as UTF-8 bytes, because ``hmac.compare_digest`` raises
    TypeError for a str with a non-ASCII character (anyone could send one)."""
    return hmac.compare_digest(sent.encode("utf-8", "surrogatepass"), want.encode("utf-8", "surrogatepass"))


_ACCOUNTS_TTL_SECONDS = 30.0
_accounts_cache: dict[str, tuple[float, list[str]]] = {}


def _thingspace_accounts(engine: sa.Engine, *, fresh: bool = False) -> list[str]:
    """Credentials names of the ThingSpace accounts, re-read at most every 30 s (or now, ``fresh``):
    a bulk change brings one callback per device, and the list changes only when an account is added."""
    key = str(engine.url)
    now = time.monotonic()
    hit = _accounts_cache.get(key)
    if fresh or hit is None or now - hit[0] > _ACCOUNTS_TTL_SECONDS:
        hit = (now, credentials_names(engine, "thingspace"))
        _accounts_cache[key] = hit
    return hit[1]
