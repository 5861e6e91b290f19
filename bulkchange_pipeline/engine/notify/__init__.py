"""Completion notifications, sent: signed webhooks (Standard Webhooks) and e-mail, with the
address guard, retries and a record of every attempt. Plain modules, no Dagster: the
``deliver_notifications_job`` op calls ``deliver_due``.

- ``addresses``: which URLs may receive webhooks (SSRF guard, at subscription and send time)
- ``signing``: the secrets (derived, never stored) and the signature headers
- ``messages``: what a webhook body and an e-mail say
- ``send``: one attempt over HTTP or SMTP, under a deadline
- ``deliver``: a pass over the due deliveries
"""

from .addresses import AddressRefused, check_webhook_url, masked_url, parse_webhook_url
from .deliver import DeliveryPolicy, DeliverySummary, deliver_due, deliver_due_async
from .send import plain_auth_refusal
from .signing import derive_secret, new_nonce, signed_headers

__all__ = [
    "AddressRefused",
    "DeliveryPolicy",
    "DeliverySummary",
    "check_webhook_url",
    "deliver_due",
    "deliver_due_async",
    "derive_secret",
    "masked_url",
    "new_nonce",
    "parse_webhook_url",
    "plain_auth_refusal",
    "signed_headers",
]
