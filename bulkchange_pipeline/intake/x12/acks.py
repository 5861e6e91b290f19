"""Our answers to an 856: the 997 functional acknowledgement (at once) and the 824 application
advice (per device, when the bulk change has finished).

- ``ack_997``: one 997 per received functional group (AK1), one AK2 per transaction set, AK3/AK4
  for a segment or element in error, AK5 accepted (A) or rejected (R) with its AK502 codes, AK9 for
  the group (A accepted, P partially accepted, R rejected). Interchange-level problems (ISA/IEA)
  have no place in a 997; a TA1 segment before the group carries them, and every group of a
  rejected interchange is rejected (AK9 R): none of it is processed.
- ``advice_824``: one 824 per received 856 transaction set; BGN, then an OTI that ties it to the
  856 (OTI02 ``SI`` shipment id = BSN02, OTI08 GS06, OTI09 ST02, OTI10 ``856``) with TA / TP / TR
  (all accepted / some / none), then an OTI per device: ``IA`` accepted or ``IR`` rejected,
  OTI02 ``SE`` serial number, OTI03 the ICCID (or IMEI), and for a rejected one a TED with the
  reason and the 856 segment that carried the device.

Both take the tenant's control-number counter (``writer.ControlNumbers``): no database here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from .envelope import X12Issue
from .ship_notice import ShippedDevice, shipped_devices
from .tokens import Group, Interchange, Separators, Transaction
from .writer import ControlNumbers, clean, envelope, next_control, segment

ACCEPTED_STATUS = "PROCESSED"  # DeviceChangeStatus.PROCESSED: the change was made
TED_INCORRECT_DATA = "848"  # refused by validation: the device data was wrong for this change
TED_OTHER = "024"  # other unlisted reason: the carrier refused it, or it was cancelled
TED_MISSING = "007"  # missing data: no result was recorded for the device


def ack_997(
    interchange: Interchange,
    errors: Iterable[X12Issue],
    control_numbers: ControlNumbers,
    *,
    now: datetime | None = None,
) -> str:
    """The 997 interchange acknowledging ``interchange`` given its ``errors`` (``check_856``)."""
    issues = list(errors)
    seps = interchange.separators
    when = (now or datetime.now(UTC)).astimezone(UTC)
    control = next_control(control_numbers)
    rejected = [i for i in issues if i.rejects_interchange]
    pre_group = []
    if rejected or not interchange.groups:
        pre_group.append(
            segment(
                seps,
                "TA1",
                f"{control_number(interchange.control)}",
                clean(interchange.isa.get(9), seps, 6) or when.strftime("%y%m%d"),
                clean(interchange.isa.get(10), seps, 4) or when.strftime("%H%M"),
                "R" if rejected else "A",
                rejected[0].code if rejected else "000",
            )
        )
    reported = _Reported(issues)
    # One AK1 loop per GS06: a repeated GS06 is an interchange issue (TA1), and its groups' answers
    # could not be told apart anyway.
    groups = {group.control: group for group in reversed(interchange.groups)}.values()
    bodies = [_ack_group(interchange, group, reported, bool(rejected)) for group in reversed(groups)]
    return envelope(interchange, "FA", bodies, control, when, pre_group)


def control_number(value: str) -> str:
    """A received control number as 9 digits for TA101, or nine zeros when it is not a number."""
    text = value.strip()
    return text.zfill(9) if text.isascii() and text.isdigit() and len(text) <= 9 else "0" * 9


MAX_SEGMENT_ERRORS = 100  # AK3 (with their AK4) in one 997; AK5 R and AK9 count the rest


class _Reported:
    """The issues indexed once by group and transaction set (so the 997 is built in time linear in
    the input, however the control numbers repeat), and a budget of AK3 loops: a file with
    thousands of bad segments is answered with the first ``MAX_SEGMENT_ERRORS``; every transaction
    set with an issue is still rejected (AK5 R) and counted in AK9."""

    def __init__(self, issues: list[X12Issue]) -> None:
        self.by_group: dict[str | None, list[X12Issue]] = {}
        self.by_tx: dict[tuple[str | None, str | None], list[X12Issue]] = {}
        for issue in issues:
            if issue.level == "group":
                self.by_group.setdefault(issue.group_control, []).append(issue)
            elif issue.level in ("transaction", "segment"):
                self.by_tx.setdefault((issue.group_control, issue.transaction_control), []).append(issue)
        # Groups or sets sharing a control number share their issues: each is answered once.
        self.by_tx = {key: list(dict.fromkeys(found)) for key, found in self.by_tx.items()}
        self.segment_budget = MAX_SEGMENT_ERRORS


def _ack_group(interchange: Interchange, group: Group, reported: _Reported, interchange_rejected: bool) -> list[str]:
    seps = interchange.separators
    ak1 = [clean(group.functional_id, seps, 2), clean(group.control, seps, 9)]
    if group.version.startswith("005") or interchange.version >= "00501":
        ak1.append(clean(group.version, seps, 12))
    body = [segment(seps, "AK1", *ak1)]
    accepted = 0
    answered: set[str] = set()
    for tx in group.transactions:
        tx_issues = reported.by_tx.get((group.control, tx.control), [])
        accepted += not tx_issues
        if tx.control not in answered:  # one AK2 loop per ST02: repeats (AK502 23) share its answer
            answered.add(tx.control)
            body.extend(_ack_transaction(seps, tx, tx_issues, reported))
    group_codes = [i.code for i in reported.by_group.get(group.control, [])][:5]
    received = len(group.transactions)
    status = "A" if accepted == received and not group_codes else "P" if accepted else "R"
    if interchange_rejected or group_codes:
        status, accepted = "R", 0
    declared = group.trailer.get(1) if group.trailer is not None and group.trailer.get(1).isdigit() else str(received)
    body.append(segment(seps, "AK9", status, clean(declared, seps, 6), str(received), str(accepted), *group_codes))
    return body


def _ack_transaction(seps: Separators, tx: Transaction, issues: list[X12Issue], reported: _Reported) -> list[str]:
    out = [segment(seps, "AK2", clean(tx.code, seps, 3), clean(tx.control, seps, 9))]
    for issue in issues:
        if issue.level != "segment":
            continue
        if reported.segment_budget <= 0:
            break
        reported.segment_budget -= 1
        out.append(
            segment(
                seps, "AK3", clean(issue.segment_id or "", seps, 3), str(issue.segment_position or ""), "", issue.code
            )
        )
        if issue.element_position is not None:
            out.append(
                segment(
                    seps,
                    "AK4",
                    str(issue.element_position),
                    "",
                    issue.element_code or "1",
                    clean(issue.bad_value or "", seps, 99),
                )
            )
    codes = list(dict.fromkeys(i.code for i in issues if i.level == "transaction"))
    if issues and not codes:
        codes = ["5"]  # one or more segments in error
    out.append(segment(seps, "AK5", "R" if issues else "A", *codes[:5]))
    return out


def advice_824(
    interchange: Interchange,
    results: Iterable[Mapping[str, Any]],
    control_numbers: ControlNumbers,
    *,
    serial_qualifiers: list[str] | None = None,
    now: datetime | None = None,
) -> str:
    """The 824 interchange with each shipped device's result.

    ``results`` are device rows as ``store.device_rows.iter_device_results`` yields them (keys
    ``iccid``, ``imei``, ``status``, ``status_details``), of every bulk change the 856 made: a
    device is accepted when all its rows are PROCESSED, else rejected with the first other row's
    reason; a device with no row is rejected as "no result"."""
    seps = interchange.separators
    when = (now or datetime.now(UTC)).astimezone(UTC)
    outcome = _outcomes(results)
    devices = shipped_devices(interchange, serial_qualifiers)
    control = next_control(control_numbers)
    by_tx: dict[tuple[str, str], list[ShippedDevice]] = {}
    for device in devices:
        by_tx.setdefault((device.group_control, device.transaction_control), []).append(device)
    bodies = []
    for group in interchange.groups:
        for tx in group.transactions:
            listed = by_tx.get((group.control, tx.control), [])
            shipment = listed[0].shipment_id if listed else (tx.segments[1].get(2) if len(tx.segments) > 1 else "")
            body = [segment(seps, "BGN", "00", str(control), when.strftime("%Y%m%d"), when.strftime("%H%M"))]
            rows = [(d, _result(d, outcome)) for d in listed]
            ok = sum(1 for _, (accepted, _) in rows if accepted)
            code = "TA" if ok == len(rows) and rows else "TP" if ok else "TR"
            body.append(_oti(seps, code, "SI", shipment, group, tx))
            for device, (accepted, reason) in rows:
                body.append(_oti(seps, "IA" if accepted else "IR", "SE", device.identifier, group, tx))
                if not accepted:
                    ted, text = reason
                    body.append(
                        segment(
                            seps,
                            "TED",
                            ted,
                            clean(text, seps, 60),
                            device.serial.segment_id,
                            str(device.serial.position),
                        )
                    )
            bodies.append(body)
    return envelope(interchange, "AG", bodies, control, when)


def _oti(seps: Separators, code: str, qualifier: str, reference: str, group: Group, tx: Transaction) -> str:
    return segment(
        seps,
        "OTI",
        code,
        qualifier,
        clean(reference, seps, 30) or "NONE",
        "",
        "",
        "",
        "",
        clean(group.control, seps, 9),
        clean(tx.control, seps, 9),
        "856",
    )


def _outcomes(results: Iterable[Mapping[str, Any]]) -> dict[str, tuple[bool, tuple[str, str]]]:
    """identifier -> (accepted, (TED code, reason)); a device's rows are combined (all must succeed)."""
    seen: dict[str, tuple[bool, tuple[str, str]]] = {}
    for row in results:
        status = str(row.get("status") or "")
        accepted = status == ACCEPTED_STATUS
        code = TED_INCORRECT_DATA if status == "ERROR" else TED_OTHER
        reason = (code, str(row.get("status_details") or status.lower() or "failed"))
        for key in ("iccid", "imei"):
            if value := row.get(key):
                before = seen.get(str(value))
                if before is None or (before[0] and not accepted):
                    seen[str(value)] = (accepted, reason)
    return seen


def _result(device: ShippedDevice, outcome: dict[str, tuple[bool, tuple[str, str]]]) -> tuple[bool, tuple[str, str]]:
    for value in (device.iccid, device.imei, device.other):
        if value and value in outcome:
            return outcome[value]
    return False, (TED_MISSING, "no result was recorded for this device")


__all__ = ["ACCEPTED_STATUS", "MAX_SEGMENT_ERRORS", "ack_997", "advice_824", "control_number"]
