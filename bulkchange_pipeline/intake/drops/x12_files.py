"""X12 through the drop inbox (issue 20): an 856 becomes the bulk changes the tenant's
trading-partner settings ask for, answered at once with a 997; the 824 follows (``x12_advice``).

For one file (docs/x12-guide.md has the segments and codes):

1. ``parse_interchange``: an unreadable ISA cannot be acknowledged (nothing says whom to answer or
   in which separators), so the file goes to ``rejected/`` with the reason and nothing else;
2. ``check_856`` and ``ack_997``: the 997 goes to the outbox at once, accepted or rejected naming
   the segment, numbered from the tenant's counter in the database; a rejected file goes to
   ``rejected/`` with the issues as its reason (a corrected resend under the same ISA13 is taken);
3. duplicate: (sender, ISA13) already taken for this tenant is a resend, acknowledged again and
   moved to ``processed/`` with a note, not processed again;
4. the partner's settings (``file_drop_setting.partner_settings``, by ``ISA05:ISA06`` or ``*``)
   give the requests (``request_from_856``, one per configured change); the first goes through
   ``submit`` at once, like every other way in, and the interchange is recorded with it. The next
   ones are submitted when the one before has finished (``x12_advice``).

An 856 the application refuses as a whole (no settings for the sender, no serial number, a request
validation refuses) is syntactically fine, so its 997 accepts it; an 824 rejecting every device with
the reason goes out with it, and the file goes to ``rejected/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from ...store.file_drops import DropSettings
from ...store.idempotency import IdempotencyConflict
from ...store.x12_interchanges import find_interchange, next_control_number, record_interchange
from ..parsing import IntakeError, IntakeLimits, request_from_dict
from ..submit import SubmitOutcome, submit
from ..validation import RequestRejected
from ..x12 import (
    Interchange,
    PartnerSettings,
    X12Error,
    X12Issue,
    ack_997,
    advice_824,
    check_856,
    load_partner_settings,
    parse_interchange,
    request_from_856,
    shipped_devices,
)
from .formats import DropFormat, OwnIntake, register_format
from .names import split_suffix

__all__ = [
    "ANY_PARTNER",
    "X12_FORMAT",
    "X12_SUFFIXES",
    "ControlCounter",
    "looks_like_x12",
    "partner_settings_for",
    "refused_rows",
    "submit_step",
    "take_x12",
]

X12_SUFFIXES = (".x12", ".edi", ".856")
ANY_PARTNER = "*"  # the settings key used for a sender without its own entry
MAX_REASONS = 5


class ControlCounter:
    """The tenant's control numbers as ``intake.x12`` asks for them (a callable), remembering the
    last one given: it names the file the acknowledgement is written to."""

    def __init__(self, engine: sa.Engine, tenant_id: int) -> None:
        self.engine, self.tenant_id = engine, tenant_id
        self.last: int | None = None

    def __call__(self) -> int:
        self.last = next_control_number(self.engine, self.tenant_id)
        return self.last


def looks_like_x12(data: bytes) -> bool:
    """A file without an X12 suffix that starts like an interchange: ``ISA`` and a separator."""
    return data[:3] == b"ISA" and len(data) > 3 and not data[3:4].isalnum() and data[3:4] not in b" \r\n"


def partner_settings_for(drop: DropSettings, sender: str) -> PartnerSettings:
    """The tenant's settings for ``sender`` (``ISA05:ISA06``), else its ``*`` entry; X12Error when
    there are none or they are invalid (the reason says what to set)."""
    partners: Mapping[str, Any] = drop.partner_settings or {}
    raw = partners.get(sender, partners.get(ANY_PARTNER))
    if raw is None:
        raise X12Error(
            f"no trading-partner settings for sender {sender!r}: set them with "
            "`bulkchange drops set --x12-partners FILE.json`"
        )
    return load_partner_settings(raw)


def refused_rows(
    interchange: Interchange, devices: list[dict[str, Any]] | None, reason: str, qualifiers: list[str]
) -> list[dict[str, Any]]:
    """Result rows for the 824 saying each device (of ``devices`` request entries, or every
    shipped one) was refused with ``reason``: a request refused as a whole has no rows of its own."""
    wanted = {v for d in devices for v in d.values()} if devices is not None else None
    rows = []
    for device in shipped_devices(interchange, qualifiers):
        if wanted is None or device.identifier in wanted:
            rows.append({"iccid": device.identifier, "imei": device.imei, "status": "ERROR", "status_details": reason})
    return rows


def submit_step(
    engine: sa.Engine, tenant_id: int, request: dict[str, Any], name: str, limits: IntakeLimits = IntakeLimits()
) -> SubmitOutcome:
    """One request of an 856 through the API's intake; raises what ``submit`` and parsing raise."""
    return submit(engine, tenant_id, request_from_dict(request, limits=limits), f"file-drop:{name[:150]}")


def _issues_text(issues: list[X12Issue]) -> list[str]:
    texts = [i.message for i in issues[:MAX_REASONS]]
    if len(issues) > MAX_REASONS:
        texts.append(f"and {len(issues) - MAX_REASONS} more")
    return texts


def take_x12(engine: sa.Engine, drop: DropSettings, name: str, data: bytes, limits: IntakeLimits) -> OwnIntake:
    """Take one X12 file (the module docstring has the steps); never raises for bad input."""
    tenant = drop.tenant_id
    stem = split_suffix(name)[0]
    try:
        if b"\x00" in data:  # no X12 character set has it, and PostgreSQL text cannot hold it
            raise X12Error("the file holds NUL bytes")
        interchange = parse_interchange(data, limits=limits)
    except X12Error as exc:
        return OwnIntake("rejected", f"not a readable X12 interchange, so no 997 is possible: {exc}")
    counter = ControlCounter(engine, tenant)
    issues = check_856(interchange)
    ack = ack_997(interchange, issues, counter)
    outbox = [(f"{stem}.997-{counter.last or 0:09d}.x12", ack)]
    if issues:
        return OwnIntake("rejected", "the 997 rejects it: " + "; ".join(_issues_text(issues)), tuple(outbox))
    sender, control = interchange.duplicate_key
    seen = find_interchange(engine, tenant, sender, control)
    if seen is not None:
        note = (
            f"Interchange {control} from {sender} was taken before (file {seen.name!r}, bulk change(s) "
            f"{', '.join(map(str, seen.bulk_change_ids))}): acknowledged again, not processed again."
        )
        return OwnIntake("resend", note, tuple(outbox))
    qualifiers = ["SN"]
    try:
        partner = partner_settings_for(drop, sender)
        qualifiers = partner.serial_qualifiers
        requests = request_from_856(interchange, partner)
        outcome = submit_step(engine, tenant, requests[0], name, limits)
    except (IntakeError, RequestRejected, IdempotencyConflict) as exc:  # X12Error is an IntakeError
        advice = advice_824(
            interchange, refused_rows(interchange, None, str(exc), qualifiers), counter, serial_qualifiers=qualifiers
        )
        outbox.append((f"{stem}.824-{control}.x12", advice))
        return OwnIntake("rejected", f"the 856 cannot be processed: {exc}", tuple(outbox))
    assert outcome.bulk_change_id is not None
    record, _ = record_interchange(
        engine,
        tenant,
        sender=sender,
        control=control,
        name=name,
        content=data.decode("utf-8"),  # parse_interchange read it as UTF-8
        requests=requests,
        serial_qualifiers=qualifiers,
        first_bulk_change_id=outcome.bulk_change_id,
    )
    text = (
        f"interchange {control} from {sender}: bulk change {record.bulk_change_ids[0]} "
        f"(change 1 of {len(requests)}): {outcome.message}"
    )
    return OwnIntake("taken", text, tuple(outbox))


X12_FORMAT = DropFormat("x12", X12_SUFFIXES, None, None, ".x12", looks_like_x12, None, take_x12)
register_format(X12_FORMAT)
