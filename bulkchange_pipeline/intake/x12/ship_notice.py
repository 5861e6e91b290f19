"""The 856 Ship Notice/Manifest as we read it: which devices a distributor shipped, and the bulk
change requests the tenant's trading-partner settings make of them.

Where the serial numbers are (docs/x12-guide.md, "856"): X12 has no code for "ICCID" or "IMEI".
A device's identifiers travel as *serial numbers*, in one of the two places public 856 guides use:

- ``LIN`` product/service id pairs (LIN02/03, LIN04/05, ... up to LIN30/31) whose qualifier
  (data element 235) is ``SN`` (Serial Number); more qualifiers can be allowed per partner
  (``serialQualifiers``, e.g. a mutually defined ``ZZ``);
- ``REF*SE`` (data element 128 ``SE`` = Serial Number), one REF per serial number, as the CompTIA
  EIDX guideline for serial numbers in X12 describes.

Whether a serial number is an ICCID or an IMEI is decided by its value, with the same checks every
other way in uses (``domain.identifiers``): 19-20 digits with a Luhn check digit is an ICCID, 15
digits with a Luhn check digit an IMEI. Anything else is passed on as it stands (``device``) so that
validation refuses that one device with a reason, which the 824 returns, instead of refusing the
whole shipment.

One HL loop (whatever its level: item, pack...) is one device when it holds at most one ICCID and
one IMEI (a module and its SIM, shipped together); otherwise each serial number in it is a device
of its own. ``SN1`` (quantity) and ``MAN`` (carton and pallet labels, e.g. ``MAN*GM`` SSCC-18) carry
no device identity and are not read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ...domain.identifiers import check_iccid, check_imei
from ..parsing import explain_validation
from .envelope import X12Issue, check_envelope, segment_issue
from .tokens import Group, Interchange, Segment, Transaction, X12Error

SHIP_NOTICE = "856"
SHIP_NOTICE_GROUP = "SH"
SERIAL_REF = "SE"  # REF01 (data element 128): Serial Number
MAX_LIN_PAIRS = 15  # LIN02/03 ... LIN30/31


@dataclass(frozen=True)
class Serial:
    """One serial number as found: its value and where (for the 824's TED03/TED04)."""

    value: str
    segment_id: str
    position: int  # in the transaction set, ST = 1


@dataclass(frozen=True)
class ShippedDevice:
    """One device of an 856, with the transaction set it came in (for the 824)."""

    iccid: str | None
    imei: str | None
    other: str | None  # a serial number that is neither a valid ICCID nor IMEI
    serial: Serial  # the first serial number of the device
    group_control: str  # GS06
    transaction_control: str  # ST02
    shipment_id: str  # BSN02

    @property
    def identifier(self) -> str:
        return self.iccid or self.imei or self.other or ""

    def request_entry(self) -> dict[str, str]:
        """The device as the JSON request gives it (``DeviceEntry``)."""
        if self.other is not None:
            return {"device": self.other}
        entry = {"iccid": self.iccid} if self.iccid else {}
        return entry | ({"imei": self.imei} if self.imei else {})


class PartnerSettings(BaseModel):
    """A tenant's settings for one trading partner's 856: which changes a shipment triggers.

    ``changes`` are request fragments in the JSON request's shape, without devices, e.g.
    ``[{"changeType": 5, "customerAssignment": {"customerId": 7}},
    {"changeType": 2, "activateNewService": {"carrierRatePlan": "IOT-1GB"}}]``: one request each,
    in this order (assign the customer, then activate)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    service_provider_id: int = Field(alias="serviceProviderId")
    changes: list[dict[str, Any]] = Field(min_length=1, max_length=10)
    serial_qualifiers: list[str] = Field(default_factory=lambda: ["SN"], alias="serialQualifiers")
    process_changes: bool = Field(True, alias="processChanges")


def check_856(interchange: Interchange) -> list[X12Issue]:
    """Envelope issues plus what makes an 856 unreadable to us: every issue a 997 must report."""
    issues = check_envelope(interchange)
    for group in interchange.groups:
        if group.functional_id != SHIP_NOTICE_GROUP:
            issues.append(
                X12Issue(
                    "group",
                    "1",
                    f"GS01 {group.functional_id[:10]!r} is not supported: send 856s in a group GS01 'SH'",
                    group.control,
                )
            )
        for tx in group.transactions:
            issues.extend(_check_transaction(group, tx))
    return issues


def _check_transaction(group: Group, tx: Transaction) -> list[X12Issue]:
    if tx.code != SHIP_NOTICE:
        return [
            X12Issue(
                "transaction",
                "1",
                f"transaction set {tx.code[:10]!r} is not supported: we read 856",
                group.control,
                tx.control,
            )
        ]
    issues: list[X12Issue] = []
    segs = tx.segments
    if len(segs) < 2 or segs[1].id != "BSN":
        seg = segs[1] if len(segs) > 1 else segs[0]
        issues.append(
            segment_issue(
                group, tx, seg, 2, "3", "the BSN segment (mandatory, right after ST) is missing", seg_id="BSN"
            )
        )
    elif not segs[1].get(2).strip():
        issues.append(
            segment_issue(
                group, tx, segs[1], 2, "8", "BSN02 (shipment identification) is empty", element=2, element_code="1"
            )
        )
    hl_count = 0
    for pos, seg in enumerate(segs, start=1):
        if seg.id == "HL":
            hl_count += 1
            if seg.get(1) != str(hl_count):
                issues.append(
                    segment_issue(
                        group,
                        tx,
                        seg,
                        pos,
                        "8",
                        f"HL01 should be {hl_count} (HL segments count 1, 2, 3 ...)",
                        element=1,
                        element_code="7",
                        bad_value=seg.get(1),
                    )
                )
        elif seg.id in ("LIN", "REF") and pos > 1:
            for element, value in _serial_elements(seg, None):
                if not value.strip():
                    issues.append(
                        segment_issue(
                            group,
                            tx,
                            seg,
                            pos,
                            "8",
                            "a serial number qualifier is followed by no serial number",
                            element=element,
                            element_code="1",
                        )
                    )
    if hl_count == 0 and tx.trailer is not None:
        issues.append(
            segment_issue(
                group,
                tx,
                tx.trailer,
                len(segs),
                "3",
                "the 856 has no HL segment: it lists nothing shipped",
                seg_id="HL",
            )
        )
    return issues


def _serial_elements(seg: Segment, qualifiers: frozenset[str] | None) -> list[tuple[int, str]]:
    """(element position, value) of each serial number in a LIN or REF segment. ``qualifiers`` None
    means "SN" for LIN (the check before settings are known)."""
    if seg.id == "REF":
        return [(2, seg.get(2))] if seg.get(1) == SERIAL_REF else []
    wanted = qualifiers if qualifiers is not None else frozenset({"SN"})
    return [(2 * i + 1, seg.get(2 * i + 1)) for i in range(1, MAX_LIN_PAIRS + 1) if seg.get(2 * i) in wanted]


def shipped_devices(interchange: Interchange, serial_qualifiers: list[str] | None = None) -> list[ShippedDevice]:
    """Every device of every 856 transaction set, in file order."""
    qualifiers = frozenset(serial_qualifiers or ["SN"])
    devices: list[ShippedDevice] = []
    for group in interchange.groups:
        for tx in group.transactions:
            if tx.code != SHIP_NOTICE:
                continue
            shipment = tx.segments[1].get(2).strip() if len(tx.segments) > 1 and tx.segments[1].id == "BSN" else ""
            loops: list[list[Serial]] = [[]]
            for pos, seg in enumerate(tx.segments, start=1):
                if seg.id == "HL":
                    loops.append([])
                elif seg.id in ("LIN", "REF"):
                    loops[-1].extend(
                        Serial(v.strip(), seg.id, pos) for _, v in _serial_elements(seg, qualifiers) if v.strip()
                    )
            for serials in loops:
                devices.extend(_devices_of_loop(serials, group.control, tx.control, shipment))
    return devices


def _devices_of_loop(serials: list[Serial], gs06: str, st02: str, shipment: str) -> list[ShippedDevice]:
    kinds = [
        ("iccid" if check_iccid(s.value) is None else "imei" if check_imei(s.value) is None else "other")
        for s in serials
    ]
    if kinds and kinds.count("iccid") <= 1 and kinds.count("imei") <= 1 and "other" not in kinds:
        found = {kind: s.value for kind, s in zip(kinds, serials, strict=True)}
        return [ShippedDevice(found.get("iccid"), found.get("imei"), None, serials[0], gs06, st02, shipment)]
    return [
        ShippedDevice(
            s.value if kind == "iccid" else None,
            s.value if kind == "imei" else None,
            s.value if kind == "other" else None,
            s,
            gs06,
            st02,
            shipment,
        )
        for kind, s in zip(kinds, serials, strict=True)
    ]


def load_partner_settings(settings: PartnerSettings | Mapping[str, Any]) -> PartnerSettings:
    """``settings`` as ``PartnerSettings``; a mapping that is not valid settings is an ``X12Error``."""
    if isinstance(settings, PartnerSettings):
        return settings
    try:
        return PartnerSettings.model_validate(settings)
    except ValidationError as exc:
        raise X12Error("the trading-partner settings are invalid: " + explain_validation(exc)) from None


def request_from_856(
    interchange: Interchange, partner_settings: PartnerSettings | Mapping[str, Any]
) -> list[dict[str, Any]]:
    """The bulk change requests (JSON request shape, for ``parsing.request_from_dict``) an 856 makes:
    one per configured change, in order, each with every shipped device.

    Each carries an ``idempotencyKey`` from the interchange's duplicate key and the step, so that a
    resent interchange cannot create the changes twice even if the duplicate check is missed.
    Raises ``X12Error`` when the 856 cannot make a request (issues a 997 rejects, no device)."""
    if issues := check_856(interchange):
        raise X12Error(f"the interchange has {len(issues)} problem(s), first: {issues[0].message}")
    settings = load_partner_settings(partner_settings)
    devices = shipped_devices(interchange, settings.serial_qualifiers)
    if not devices:
        raise X12Error(
            "the 856 lists no serial numbers: give each device's ICCID or IMEI in LIN (qualifier "
            f"{'/'.join(settings.serial_qualifiers)}) or REF*SE segments"
        )
    sender, control = interchange.duplicate_key
    requests = []
    for step, change in enumerate(settings.changes, start=1):
        request = {
            "serviceProviderId": settings.service_provider_id,
            "processChanges": settings.process_changes,
            **change,
            "idempotencyKey": f"x12:{sender}:{control}:{step}"[:200],
            "devices": [d.request_entry() for d in devices],
        }
        requests.append(request)
    return requests


__all__ = [
    "SERIAL_REF",
    "SHIP_NOTICE",
    "PartnerSettings",
    "Serial",
    "ShippedDevice",
    "check_856",
    "load_partner_settings",
    "request_from_856",
    "shipped_devices",
]
