"""Building X12 for the tests: an interchange from element lists, in any separators, with the
counts and control numbers right unless a test breaks them on purpose."""

from __future__ import annotations

from dataclasses import dataclass

from bulkchange_pipeline.domain.identifiers import luhn_check_digit


@dataclass(frozen=True)
class Seps:
    element: str = "*"
    component: str = ">"
    segment: str = "~"
    repetition: str = "^"
    line_break: str = ""  # written after each terminator (e.g. "\r\n")


STANDARD = Seps()


def iccid(n: int) -> str:
    body = f"8901260{n:011d}"
    return body + luhn_check_digit(body)


def imei(n: int) -> str:
    body = f"35123456{n:06d}"
    return body + luhn_check_digit(body)


def isa(
    seps: Seps,
    control: str = "000000905",
    version: str = "00501",
    sender: str = "DISTRIB01",
    receiver: str = "BULKCHANGE",
) -> list[str]:
    isa11 = seps.repetition if version >= "00402" else "U"
    return [
        "ISA",
        "00",
        " " * 10,
        "00",
        " " * 10,
        "ZZ",
        sender.ljust(15),
        "ZZ",
        receiver.ljust(15),
        "261205",
        "0630",
        isa11,
        version,
        control,
        "0",
        "P",
        seps.component,
    ]


def render(segments: list[list[str]], seps: Seps = STANDARD) -> str:
    return "".join(seps.element.join(s) + seps.segment + seps.line_break for s in segments)


def ship_notice_body(devices: list[list[tuple[str, str]]], shipment: str = "SHP-77001") -> list[list[str]]:
    """An 856 body (BSN ... CTT): shipment, order, then one item HL per device; a device is a list of
    (where, serial) with where "LIN" (LIN pair qualified SN) or "REF" (REF*SE)."""
    body = [
        ["BSN", "00", shipment, "20261205", "0630", "0001"],
        ["HL", "1", "", "S"],
        ["TD1", "CTN25", "1"],
        ["TD5", "B", "2", "UPSN", "U"],
        ["REF", "BM", "1Z999AA10123456784"],
        ["DTM", "011", "20261205"],
        ["N1", "ST", "ACME FLEET", "92", "ACME-01"],
        ["HL", "2", "1", "O"],
        ["PRF", "PO-4471"],
        ["HL", "3", "2", "P"],
        ["MAN", "GM", "00012345678901234567"],
    ]
    for number, serials in enumerate(devices, start=1):
        body.append(["HL", str(len([s for s in body if s[0] == "HL"]) + 1), "3", "I"])
        lin = ["LIN", str(number), "VP", "MODEM-LTE-M1"]
        refs = []
        for where, value in serials:
            if where == "LIN":
                lin += ["SN", value]
            else:
                refs.append(["REF", "SE", value])
        body += [lin, ["SN1", "", "1", "EA"], *refs]
    body.append(["CTT", str(len([s for s in body if s[0] == "HL"]))])
    return body


def interchange(
    transactions: list[tuple[str, list[list[str]]]],
    seps: Seps = STANDARD,
    *,
    control: str = "000000905",
    version: str = "00501",
    functional_id: str = "SH",
    group_control: str = "905",
) -> list[list[str]]:
    """ISA, GS, each (ST01, body) as ST ... SE numbered 0001.., GE, IEA, with right counts."""
    segs = [
        isa(seps, control, version),
        [
            "GS",
            functional_id,
            "DISTRIB01",
            "BULKCHANGE",
            "20261205",
            "0630",
            group_control,
            "X",
            "005010" if version >= "00501" else "004010",
        ],
    ]
    for number, (code, body) in enumerate(transactions, start=1):
        st02 = f"{number:04d}"
        segs += [["ST", code, st02], *body, ["SE", str(len(body) + 2), st02]]
    segs += [["GE", str(len(transactions)), group_control], ["IEA", "1", control]]
    return segs


def three_devices() -> list[list[tuple[str, str]]]:
    """Three modules with their SIMs: in a LIN, as REF*SE, and mixed."""
    return [
        [("LIN", iccid(1)), ("LIN", imei(1))],
        [("REF", iccid(2)), ("REF", imei(2))],
        [("LIN", iccid(3)), ("REF", imei(3))],
    ]


def sample_856(seps: Seps = STANDARD, **kwargs: str) -> str:
    return render(interchange([("856", ship_notice_body(three_devices()))], seps, **kwargs), seps)
