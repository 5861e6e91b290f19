"""What a notification says: the webhook bodies (an event, or one page of device results) and the
e-mail.

The event's data was fixed when the bulk change settled (``store.notifications``); a page of
device results is read when it is sent, so it shows the rows as they are then. Bodies follow the
Standard Webhooks payload shape (``type``, ``timestamp``, ``data``), camelCase like the API.
Links are the API's paths, made absolute with ``BULKCHANGE_CALLBACK_BASE_URL`` (the public URL
of ``bulkchange serve``, which serves the API too) when it is set.
"""

from __future__ import annotations

import json
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

import sqlalchemy as sa

from ...domain.notifications import DEVICE_RESULTS_TYPE, device_pages, message_type, wire_time
from ...store.notification_sending import DueDelivery
from ...store.operations import page_device_results

__all__ = ["device_results_body", "email_message", "encode", "event_body", "message_body"]


def _absolute(data: dict[str, Any], base_url: str | None) -> dict[str, Any]:
    if not base_url:
        return data
    base = base_url.rstrip("/")
    return {**data, "links": {k: base + v for k, v in data.get("links", {}).items()}}


def event_body(due: DueDelivery, base_url: str | None = None) -> dict[str, Any]:
    """The event message: ``bulk_change.completed`` / ``.failed`` / ``.needs_attention``."""
    return {
        "type": message_type(due.event),
        "timestamp": wire_time(due.event_created_at),
        "data": _absolute(due.event_payload, base_url),
    }


def device_results_body(engine: sa.Engine, due: DueDelivery, base_url: str | None = None) -> dict[str, Any]:
    """One page of the bulk change's per-device results (``bulk_change.device_results``)."""
    assert due.page is not None and due.page_size is not None
    found = page_device_results(engine, due.tenant_id, due.bulk_change_id, page=due.page, page_size=due.page_size)
    event = due.event_payload
    return {
        "type": DEVICE_RESULTS_TYPE,
        "timestamp": wire_time(due.event_created_at),
        "data": {
            "id": due.bulk_change_id,
            "tenantId": due.tenant_id,
            "event": message_type(due.event),
            "outcome": event.get("outcome"),
            "page": found.page,
            "pages": device_pages(found.total, found.page_size),
            "pageSize": found.page_size,
            "total": found.total,
            "devices": [
                {
                    "iccid": r["iccid"],
                    "msisdn": r["msisdn"],
                    "imei": r["imei"],
                    "eid": r["eid"],
                    "status": r["status"],
                    "statusDetails": r["status_details"],
                    "processedAt": wire_time(r["processed_at"]),
                }
                for r in found.items
            ],
            "links": _absolute(event, base_url).get("links", {}),
        },
    }


def message_body(engine: sa.Engine, due: DueDelivery, base_url: str | None = None) -> dict[str, Any]:
    """The webhook body of a delivery: its event, or its page of device results."""
    return event_body(due, base_url) if due.page is None else device_results_body(engine, due, base_url)


def encode(body: dict[str, Any]) -> bytes:
    """The bytes sent and signed (compact JSON, UTF-8)."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


_SUBJECTS = {
    "completed": "completed",
    "failed": "ended with failures",
    "needs_attention": "needs attention",
}


def email_message(due: DueDelivery, base_url: str | None = None) -> EmailMessage:
    """The e-mail for an event: a subject that says what happened, and the counts and links."""
    assert due.email is not None
    data = _absolute(due.event_payload, base_url)
    what = _SUBJECTS.get(due.event, due.event)
    msg = EmailMessage()
    msg["Subject"] = f"Bulk change {data['id']} {what}: {data['outcome']} ({data['devices']} devices)"
    msg["From"] = due.email["sender"]
    msg["To"] = ", ".join(due.email["recipients"])
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = make_msgid(idstring=due.message_id)
    msg["X-Bulkchange-Event"] = message_type(due.event)
    lines = [
        f"Bulk change {data['id']} ({data.get('changeTypeName') or data['changeType']}) of tenant "
        f"{data.get('tenant') or data['tenantId']} {what}.",
        "",
        f"Outcome: {data['outcome']}   Status: {data['status']}   Attempt: {data['attempt']}",
        f"Devices: {data['devices']}   Failed: {data['failedDevices']}",
        "",
        "Device rows by status:",
        *[f"  {status}: {n}" for status, n in data["counts"].items()],
        "",
        f"Created: {data.get('createdAt')}   Processed: {data.get('processedAt') or '-'}",
        "",
        f"Status: {data['links']['self']}",
        f"Device results: {data['links']['devices']}",
    ]
    if due.event == "needs_attention":
        lines += ["", f"A run stopped with rows unfinished: `bulkchange resume {data['id']}` finishes them."]
    msg.set_content("\n".join(lines) + "\n")
    return msg
