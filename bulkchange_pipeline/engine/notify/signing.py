"""Webhook signatures as the Standard Webhooks specification defines them, and where each
subscription's secret comes from.

Signing uses the ``standardwebhooks`` package (the specification's reference library), so what we
send verifies with ``standardwebhooks.Webhook(secret).verify(body, headers)`` in any receiver.
Headers: ``webhook-id`` (the delivery's message id, the same on every attempt), ``webhook-timestamp``
(seconds since the epoch, at this attempt) and ``webhook-signature`` (``v1,<base64 HMAC-SHA256 of
"id.timestamp.body">``).

Where the secret lives: nowhere. A subscription's secret is derived when it is needed, as
HMAC-SHA256(signing key, "bulkchange-webhook:v1:" + the subscription's nonce), where the signing
key comes from the environment (``settings.webhook_signing_key``) and the nonce is a random,
public value stored with the subscription. Why not store it encrypted, or as a reference into the
environment like carrier credentials?

- An environment reference means an operator exports a variable per subscription; tenants create
  subscriptions through the API and must be shown their secret at once. Derivation gives each one
  a fresh secret with no operator step.
- Encrypted storage would put ciphertext in the database next to its purpose and need a cipher
  library and key handling for decryption; derivation puts nothing secret in the database at all
  (a dump holds only nonces, useless without the key), needs only the standard library's HMAC,
  and has no decryption failure to handle.
- The cost: changing the signing key changes every subscription's secret (re-create them).

The secret is a ``SecretStr`` from derivation to signing; it is shown once, in the answer that
created the subscription, and never logged, stored or put in a message.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import UTC, datetime

from pydantic import SecretStr
from standardwebhooks import Webhook

__all__ = ["SECRET_PREFIX", "derive_secret", "new_nonce", "signed_headers"]

SECRET_PREFIX = "whsec_"
_CONTEXT = b"bulkchange-webhook:v1:"


def new_nonce() -> str:
    """A subscription's nonce: random, public, 128 bits."""
    return secrets.token_hex(16)


def derive_secret(signing_key: SecretStr, nonce: str) -> SecretStr:
    """The subscription's signing secret, ``whsec_`` + base64 of 32 bytes (the specification's
    format, 24 to 64 bytes)."""
    raw = hmac.new(signing_key.get_secret_value().encode("utf-8"), _CONTEXT + nonce.encode("ascii"), hashlib.sha256)
    return SecretStr(SECRET_PREFIX + base64.b64encode(raw.digest()).decode("ascii"))


def signed_headers(secret: SecretStr, message_id: str, body: bytes, at: datetime) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body`` sent at ``at`` (aware, or naive UTC)."""
    when = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    signature = Webhook(secret.get_secret_value()).sign(message_id, when, body)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
    }
