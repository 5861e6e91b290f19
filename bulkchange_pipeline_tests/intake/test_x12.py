"""EDI X12 (issue 20): the 856 becomes the same request dict JSON intake takes, control numbers and
counts are checked and each mistake gets a 997 that names it, and our 997/824 read back with our
own tokenizer and pass the same envelope checks."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from itertools import count

import pytest

from bulkchange_pipeline.intake.parsing import request_from_dict
from bulkchange_pipeline.intake.x12 import (
    X12Error,
    ack_997,
    advice_824,
    check_856,
    check_envelope,
    parse_interchange,
    request_from_856,
    shipped_devices,
)

from .x12_inputs import STANDARD, Seps, iccid, imei, interchange, render, sample_856, ship_notice_body, three_devices

NOW = datetime(2026, 12, 5, 7, 0, tzinfo=UTC)
SETTINGS = {
    "serviceProviderId": 1,
    "changes": [
        {"changeType": 5, "customerAssignment": {"customerId": 7}},
        {"changeType": 2, "activateNewService": {"carrierRatePlan": "IOT-1GB"}},
    ],
}
EXPECTED_DEVICES = [{"iccid": iccid(n), "imei": imei(n)} for n in (1, 2, 3)]


def counter(start: int = 41) -> Callable[[], int]:
    """A tenant's control-number counter, as the caller passes it."""
    return count(start).__next__


def segments_of(text: str) -> list[list[str]]:
    """Our own output, read back with our own tokenizer (and its envelope checked)."""
    parsed = parse_interchange(text)
    assert check_envelope(parsed) == [], check_envelope(parsed)
    seps = parsed.separators
    out = [["ISA", *parsed.isa.elements]] + [[s.id, *s.elements] for s in parsed.ta1]
    for g in parsed.groups:
        out.append([g.header.id, *g.header.elements])
        for tx in g.transactions:
            out += [[s.id, *s.elements] for s in tx.segments]
        assert g.trailer is not None
        out.append([g.trailer.id, *g.trailer.elements])
    out += [[s.id, *s.elements] for s in parsed.stray]
    assert parsed.trailer is not None
    out.append([parsed.trailer.id, *parsed.trailer.elements])
    assert seps == parse_interchange(text).separators
    return out


def find(segs: list[list[str]], seg_id: str) -> list[list[str]]:
    return [s for s in segs if s[0] == seg_id]


def test_856_with_three_devices_becomes_the_json_request_dicts() -> None:
    parsed = parse_interchange(sample_856())
    assert check_856(parsed) == []
    requests = request_from_856(parsed, SETTINGS)
    assert requests == [
        {
            "serviceProviderId": 1,
            "processChanges": True,
            "changeType": 5,
            "customerAssignment": {"customerId": 7},
            "idempotencyKey": "x12:ZZ:DISTRIB01:000000905:1",
            "devices": EXPECTED_DEVICES,
        },
        {
            "serviceProviderId": 1,
            "processChanges": True,
            "changeType": 2,
            "activateNewService": {"carrierRatePlan": "IOT-1GB"},
            "idempotencyKey": "x12:ZZ:DISTRIB01:000000905:2",
            "devices": EXPECTED_DEVICES,
        },
    ]
    for request in requests:  # what the JSON intake accepts, unchanged
        model = request_from_dict(request)
        assert [e.iccid for e in model.entries()] == [iccid(n) for n in (1, 2, 3)]
    assert parsed.duplicate_key == ("ZZ:DISTRIB01", "000000905")


SEPARATORS = [
    Seps(),
    Seps(element="|", component="\\", segment="\n", repetition="!"),
    Seps(element="^", component=":", segment="\n", repetition="{"),
    Seps(element="*", component=":", segment="~", repetition="^", line_break="\r\n"),
    Seps(element="\x1d", component="\x1f", segment="\x1c", repetition="\x1e"),  # the ASCII separator controls
]


@pytest.mark.parametrize(
    "seps", SEPARATORS, ids=["standard", "pipe-newline", "caret-newline", "crlf-after-tilde", "ascii-controls"]
)
def test_separators_come_from_the_isa(seps: Seps) -> None:
    parsed = parse_interchange(sample_856(seps))
    assert (parsed.separators.element, parsed.separators.component, parsed.separators.segment) == (
        seps.element,
        seps.component,
        seps.segment,
    )
    assert parsed.separators.repetition == seps.repetition
    assert check_856(parsed) == []
    assert request_from_856(parsed, SETTINGS) == request_from_856(parse_interchange(sample_856()), SETTINGS)


def test_version_4010_has_no_repetition_separator() -> None:
    parsed = parse_interchange(sample_856(version="00401"))
    assert parsed.separators.repetition is None
    assert [d.iccid for d in shipped_devices(parsed)] == [iccid(n) for n in (1, 2, 3)]


def test_accepted_997_reparses_and_says_accepted() -> None:
    parsed = parse_interchange(sample_856(Seps(element="|", component="\\", segment="\n", repetition="!")))
    ack = ack_997(parsed, check_856(parsed), counter(), now=NOW)
    segs = segments_of(ack)
    assert ack.split("\n")[0].split("|")[1:] == [  # ours, in their separators, sender and receiver swapped
        "00",
        " " * 10,
        "00",
        " " * 10,
        "ZZ",
        "BULKCHANGE     ",
        "ZZ",
        "DISTRIB01      ",
        "261205",
        "0700",
        "!",
        "00501",
        "000000041",
        "0",
        "P",
        "\\",
    ]
    assert find(segs, "GS")[0][1:4] == ["FA", "BULKCHANGE", "DISTRIB01"]
    assert find(segs, "AK1") == [["AK1", "SH", "905", "005010"]]
    assert find(segs, "AK2") == [["AK2", "856", "0001"]]
    assert find(segs, "AK5") == [["AK5", "A"]]
    assert find(segs, "AK9") == [["AK9", "A", "1", "1", "1"]]
    assert find(segs, "TA1") == [] and find(segs, "AK3") == []


def _broken(change: str) -> str:
    segs = interchange([("856", ship_notice_body(three_devices()))])
    index = {s[0]: i for i, s in enumerate(segs)}
    if change == "IEA02":
        segs[index["IEA"]][2] = "000000906"
    elif change == "IEA01":
        segs[index["IEA"]][1] = "2"
    elif change == "GE02":
        segs[index["GE"]][2] = "906"
    elif change == "GE01":
        segs[index["GE"]][1] = "3"
    elif change == "SE02":
        segs[index["SE"]][2] = "0002"
    elif change == "SE01":
        segs[index["SE"]][1] = str(int(segs[index["SE"]][1]) + 1)
    elif change == "no SE":
        del segs[index["SE"]]
    elif change == "no IEA":
        del segs[index["IEA"]]
    elif change == "no BSN":
        bsn = next(i for i, s in enumerate(segs) if s[0] == "BSN")
        del segs[bsn]
        segs[index["SE"] - 1][1] = str(int(segs[index["SE"] - 1][1]) - 1)
    elif change == "HL01":
        hl = [i for i, s in enumerate(segs) if s[0] == "HL"][2]
        segs[hl][1] = "7"
    elif change == "no HL":
        segs = interchange([("856", [["BSN", "00", "SHP-1", "20261205", "0630"]])])
    elif change == "empty serial":
        lin = next(i for i, s in enumerate(segs) if s[0] == "LIN")
        segs[lin][5] = ""
    elif change == "bad id":
        ref = next(i for i, s in enumerate(segs) if s[0] == "TD1")
        segs[ref][0] = "T@"
    return render(segs)


MISMATCHES = {
    # change: (segment the 997 names, where)
    "IEA02": (["TA1", "000000905", "261205", "0630", "R", "001"], None),
    "IEA01": (["TA1", "000000905", "261205", "0630", "R", "021"], None),
    "no IEA": (["TA1", "000000905", "261205", "0630", "R", "023"], None),
    "GE02": (["AK9", "R", "1", "1", "0", "4"], None),
    "GE01": (["AK9", "R", "3", "1", "0", "5"], None),
    "SE02": (["AK5", "R", "3"], None),
    "SE01": (["AK5", "R", "4"], None),
    "no SE": (["AK5", "R", "2"], None),
    "no BSN": (["AK5", "R", "5"], ["AK3", "BSN", "2", "", "3"]),
    "HL01": (["AK5", "R", "5"], ["AK3", "HL", "11", "", "8"]),
    "bad id": (["AK5", "R", "5"], ["AK3", "T@", "4", "", "1"]),
    "no HL": (["AK5", "R", "5"], ["AK3", "HL", "3", "", "3"]),
    "empty serial": (["AK4", "5", "", "1"], ["AK3", "LIN", "14", "", "8"]),
}


@pytest.mark.parametrize("change", list(MISMATCHES))
def test_each_control_and_count_mistake_gets_a_997_rejection_naming_it(change: str) -> None:
    parsed = parse_interchange(_broken(change))
    issues = check_856(parsed)
    assert issues, "the mistake must be found"
    segs = segments_of(ack_997(parsed, issues, counter(), now=NOW))
    named, ak3 = MISMATCHES[change]
    assert named in segs
    if ak3 is not None:
        assert ak3 in segs
    rejected_group = find(segs, "AK9")[0][1] == "R"
    assert rejected_group, "nothing of a rejected interchange, group or its only transaction is accepted"
    with pytest.raises(X12Error, match="problem"):
        request_from_856(parsed, SETTINGS)


def test_segment_count_rejection_names_the_counts_for_people() -> None:
    issues = check_856(parse_interchange(_broken("SE01")))
    assert [i.message for i in issues] == ["SE01 says '27' segments; transaction set ST02 '0001' has 26 (ST to SE)"]


def test_the_element_in_error_is_named_in_ak4() -> None:
    segs = segments_of(
        ack_997(parse_interchange(_broken("HL01")), check_856(parse_interchange(_broken("HL01"))), counter(), now=NOW)
    )
    assert ["AK4", "1", "", "7", "7"] in segs


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (b"ISA*00*", "cut short"),
        (sample_856().encode()[:80], "cut short"),
        (b"GS*SH*X~ST*856*0001~", "starts with an ISA"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 200, "not UTF-8|starts with an ISA"),
        (sample_856().replace("DISTRIB01 ", "DISTRIB01").encode(), "fixed-width"),
        (b"ISA\xff" + b"0" * 120, "not UTF-8"),
        (sample_856(Seps(element="A")).encode(), "fixed-width|letters"),
        (sample_856(Seps(component="*")).encode(), "same character"),
    ],
    ids=[
        "empty",
        "blank",
        "truncated-isa",
        "isa-cut-at-80",
        "no-isa",
        "binary",
        "isa-too-short",
        "not-utf8",
        "letter-separator",
        "same-separator",
    ],
)
def test_malformed_files_get_a_clear_error_not_a_traceback(data: bytes, message: str) -> None:
    with pytest.raises(X12Error, match=message):
        parse_interchange(data)


def test_garbage_after_a_good_isa_is_answered_with_a_rejection() -> None:
    text = sample_856()[:106] + "this is not X12 at all\x00\x07"
    parsed = parse_interchange(text)
    issues = check_856(parsed)
    segs = segments_of(ack_997(parsed, issues, counter(), now=NOW))
    assert find(segs, "TA1")[0][4] == "R"
    assert find(segs, "GS") == []  # no group was received, so none is acknowledged


def test_duplicate_key_ignores_layout_and_tells_resends_apart() -> None:
    first = parse_interchange(sample_856()).duplicate_key
    again = parse_interchange(sample_856(Seps(line_break="\r\n"))).duplicate_key
    other = parse_interchange(sample_856(control="000000906")).duplicate_key
    assert first == again == ("ZZ:DISTRIB01", "000000905")
    assert other != first


def test_control_numbers_come_from_the_counter() -> None:
    calls = counter(7)
    parsed = parse_interchange(sample_856())
    first, second = ack_997(parsed, [], calls, now=NOW), ack_997(parsed, [], calls, now=NOW)
    assert parse_interchange(first).control == "000000007"
    assert parse_interchange(second).control == "000000008"
    assert find(segments_of(second), "GS")[0][6] == "8"
    with pytest.raises(ValueError, match="control number"):
        ack_997(parsed, [], lambda: 0, now=NOW)


def _rows() -> list[dict[str, object]]:
    return [
        {"iccid": iccid(1), "imei": imei(1), "status": "PROCESSED", "status_details": None},
        {
            "iccid": iccid(2),
            "imei": imei(2),
            "status": "API_FAILED",
            "status_details": "carrier said: SIM~blocked*by|operator\nsee",
        },
        {"iccid": iccid(3), "imei": imei(3), "status": "PROCESSED", "status_details": None},
        # second bulk change (activation) for the same devices: one failed validation
        {"iccid": iccid(1), "imei": imei(1), "status": "PROCESSED", "status_details": None},
        {"iccid": iccid(3), "imei": None, "status": "ERROR", "status_details": "carrierRatePlan: unknown plan"},
    ]


@pytest.mark.parametrize("seps", SEPARATORS[:3], ids=["standard", "pipe-newline", "caret-newline"])
def test_824_reports_each_device_tied_to_the_856(seps: Seps) -> None:
    parsed = parse_interchange(sample_856(seps))
    segs = segments_of(advice_824(parsed, _rows(), counter(), now=NOW))
    assert find(segs, "GS")[0][1] == "AG" and find(segs, "ST")[0][1] == "824"
    assert find(segs, "BGN") == [["BGN", "00", "41", "20261205", "0700"]]
    otis = find(segs, "OTI")
    assert otis[0] == ["OTI", "TP", "SI", "SHP-77001", "", "", "", "", "905", "0001", "856"]
    assert [o[1:4] for o in otis[1:]] == [["IA", "SE", iccid(1)], ["IR", "SE", iccid(2)], ["IR", "SE", iccid(3)]]
    teds = find(segs, "TED")
    assert teds[0][:2] == ["TED", "024"] and "SIM" in teds[0][2] and "operator" in teds[0][2]
    assert not set(seps.element + seps.segment + seps.component + "\n") & set(teds[0][2])  # cannot split the 824
    assert teds[1][:2] == ["TED", "848"] and "unknown plan" in teds[1][2]
    assert teds[0][3:] == ["REF", "19"]  # the 856 segment that carried the device (REF*SE, position 19)


def test_824_rejects_a_device_without_a_result() -> None:
    parsed = parse_interchange(sample_856())
    segs = segments_of(advice_824(parsed, _rows()[:1], counter(), now=NOW))
    assert [o[1] for o in find(segs, "OTI")] == ["TP", "IA", "IR", "IR"]
    assert find(segs, "TED")[0][:2] == ["TED", "007"]


def test_serials_that_are_neither_iccid_nor_imei_reach_validation_one_by_one() -> None:
    devices = [[("LIN", iccid(1))], [("REF", "ABC-123")], [("LIN", iccid(2)), ("LIN", iccid(3))]]
    parsed = parse_interchange(render(interchange([("856", ship_notice_body(devices))])))
    requests = request_from_856(parsed, SETTINGS)
    assert requests[0]["devices"] == [
        {"iccid": iccid(1)},
        {"device": "ABC-123"},
        {"iccid": iccid(2)},
        {"iccid": iccid(3)},
    ]


def test_partner_qualifiers_and_no_serials() -> None:
    devices = [[("LIN", iccid(1))]]
    text = render(interchange([("856", ship_notice_body(devices))])).replace("*SN*", "*ZZ*")
    parsed = parse_interchange(text)
    with pytest.raises(X12Error, match="no serial numbers"):
        request_from_856(parsed, SETTINGS)
    assert request_from_856(parsed, SETTINGS | {"serialQualifiers": ["ZZ"]})[0]["devices"] == [{"iccid": iccid(1)}]
    with pytest.raises(X12Error, match="trading-partner settings"):
        request_from_856(parsed, {"changes": []})


def test_other_transaction_sets_are_refused_in_the_997() -> None:
    segs = interchange([("850", [["BEG", "00", "SA", "PO1"]])], functional_id="PO")
    parsed = parse_interchange(render(segs))
    ack = segments_of(ack_997(parsed, check_856(parsed), counter(), now=NOW))
    assert ["AK5", "R", "1"] in ack and ["AK9", "R", "1", "1", "0", "1"] in ack


def test_standard_separators_default_is_star_tilde() -> None:
    assert sample_856().startswith("ISA*00*") and STANDARD.segment == "~"
