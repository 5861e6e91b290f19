"""Hostile and random X12 (issue 20), property-based.

- Anything at all (bytes, unicode with lone surrogates, a valid 856 damaged anywhere) is either
  refused with ``X12Error`` (our declared error type, a clear message) or read; what is read is
  always answered with a 997 that our own tokenizer reads back with a sound envelope, and the
  request builder refuses it with ``X12Error`` or builds requests. Never another exception.
- A random valid 856 (devices, separators, where the serials sit, line breaks) round-trips: the
  devices read are the devices written, the 997 accepts it, and the 824 reports each device with
  the status it was given.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import count

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from bulkchange_pipeline.intake.parsing import IntakeError, request_from_dict
from bulkchange_pipeline.intake.x12 import (
    Interchange,
    X12Error,
    ack_997,
    advice_824,
    check_856,
    check_envelope,
    parse_interchange,
    request_from_856,
    shipped_devices,
)

from .x12_inputs import Seps, iccid, imei, interchange, render, sample_856, ship_notice_body

SETTINGS = {"serviceProviderId": 1, "changes": [{"changeType": 5, "customerAssignment": {"customerId": 7}}]}
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Separator characters: never a letter, digit, blank or "-" (the sample data holds those).
POOL = "*~|^!{}\\:;,#$%&+/<=>?@[]`'\"\x1c\x1d\x1e\x1f\x07"


def counter() -> Callable[[], int]:
    return count(1).__next__


def answer_must_be_sound(parsed: Interchange) -> None:
    """What every readable input gets: a 997 that reads back clean, and requests or X12Error."""
    issues = check_856(parsed)
    ack = ack_997(parsed, issues, counter())
    reread = parse_interchange(ack)
    assert check_envelope(reread) == [], ack
    ak9 = [s.get(1) for g in reread.groups for tx in g.transactions for s in tx.segments if s.id == "AK9"]
    ta1 = [s.get(4) for s in reread.ta1]
    accepted_all = "R" not in ta1 and bool(ak9) and set(ak9) == {"A"}
    assert accepted_all == (not issues), (issues, ack)  # an issue is never acknowledged as accepted
    try:
        requests = request_from_856(parsed, SETTINGS)
    except IntakeError as exc:
        assert isinstance(exc, X12Error) and str(exc)
    else:
        assert not issues and requests and all(r["devices"] for r in requests)


def read_or_refuse(data: bytes | str) -> None:
    try:
        parsed = parse_interchange(data)
    except X12Error as exc:
        assert str(exc)
        return
    answer_must_be_sound(parsed)


@PROPERTY
@given(st.binary(max_size=400))
def test_arbitrary_bytes_are_read_or_refused(data: bytes) -> None:
    read_or_refuse(data)


@PROPERTY
@given(st.text(max_size=300))
def test_arbitrary_unicode_after_a_good_isa(tail: str) -> None:
    read_or_refuse(sample_856()[:106] + tail)
    read_or_refuse(tail)


@PROPERTY
@given(st.data())
def test_a_valid_856_damaged_anywhere(data: st.DataObject) -> None:
    text = sample_856()
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(text)))
        action = data.draw(st.sampled_from(["delete", "insert", "replace", "cut"]))
        piece = data.draw(st.text(min_size=1, max_size=3))
        if action == "delete":
            text = text[:at] + text[at + len(piece) :]
        elif action == "insert":
            text = text[:at] + piece + text[at:]
        elif action == "replace":
            text = text[:at] + piece + text[at + len(piece) :]
        else:
            text = text[:at]
    note(repr(text))
    read_or_refuse(text)


@st.composite
def separators(draw: st.DrawFn) -> Seps:
    element, component, repetition = draw(st.lists(st.sampled_from(POOL), min_size=3, max_size=3, unique=True))
    segment = draw(st.sampled_from([c for c in POOL + "\n" if c not in (element, component, repetition)]))
    line_break = draw(st.sampled_from(["", "\n", "\r\n"])) if segment != "\n" else ""
    return Seps(element=element, component=component, segment=segment, repetition=repetition, line_break=line_break)


@st.composite
def shipments(draw: st.DrawFn) -> list[list[tuple[str, str]]]:
    numbers = draw(st.lists(st.integers(0, 10**6 - 1), min_size=1, max_size=12, unique=True))
    devices = []
    for n in numbers:
        ids = draw(st.sampled_from([[iccid(n)], [imei(n)], [iccid(n), imei(n)], [imei(n), iccid(n)]]))
        devices.append([(draw(st.sampled_from(["LIN", "REF"])), v) for v in ids])
    return devices


@PROPERTY
@given(shipments(), separators(), st.sampled_from(["00401", "00501"]), st.data())
def test_random_valid_856_round_trips(
    devices: list[list[tuple[str, str]]], seps: Seps, version: str, data: st.DataObject
) -> None:
    text = render(interchange([("856", ship_notice_body(devices))], seps, version=version), seps)
    note(repr(text))
    parsed = parse_interchange(text)
    assert check_856(parsed) == []
    expected = [{k: v for k, v in (("iccid", _pick(d, 19)), ("imei", _pick(d, 15))) if v} for d in devices]
    assert [d.request_entry() for d in shipped_devices(parsed)] == expected
    assert request_from_856(parsed, SETTINGS)[0]["devices"] == expected

    ack = parse_interchange(ack_997(parsed, [], counter()))
    assert ack.separators == parsed.separators
    assert [s.elements for g in ack.groups for tx in g.transactions for s in tx.segments if s.id == "AK5"] == [("A",)]

    statuses = data.draw(
        st.lists(st.sampled_from(["PROCESSED", "API_FAILED", "ERROR"]), min_size=len(devices), max_size=len(devices))
    )
    rows = [
        {
            "iccid": e.get("iccid"),
            "imei": e.get("imei"),
            "status": s,
            "status_details": f"why{seps.element}{seps.segment}",
        }
        for e, s in zip(expected, statuses, strict=True)
    ]
    advice = parse_interchange(advice_824(parsed, rows, counter()))
    assert check_envelope(advice) == []
    otis = [s for g in advice.groups for tx in g.transactions for s in tx.segments if s.id == "OTI"]
    assert [o.get(1) for o in otis[1:]] == ["IA" if s == "PROCESSED" else "IR" for s in statuses]
    assert [o.get(3) for o in otis[1:]] == [e.get("iccid") or e.get("imei") for e in expected]


def _pick(device: list[tuple[str, str]], length: int) -> str | None:
    return next((v for _, v in device if len(v) in ((19, 20) if length == 19 else (15,))), None)


@PROPERTY
@given(st.lists(st.text(min_size=1, max_size=30).filter(lambda v: not set(v) & set("*~>^")), min_size=1, max_size=5))
def test_hostile_serial_values_are_refused_or_round_trip(values: list[str]) -> None:
    """Whatever a partner puts in REF*SE reaches the JSON intake as sent (stripped), where it is
    validated like any JSON request: refused with an IntakeError, or accepted with the value kept."""
    devices = [[("REF", v)] for v in values]
    parsed = parse_interchange(render(interchange([("856", ship_notice_body(devices))])))
    issues = check_856(parsed)
    if any(not v.strip() for v in values):
        assert any("no serial number" in i.message for i in issues)
        return
    assert issues == []
    (request,) = request_from_856(parsed, SETTINGS)
    sent = [next(iter(entry.values())) for entry in request["devices"]]
    assert sent == [v.strip() for v in values]
    try:
        model = request_from_dict(request)
    except IntakeError as exc:
        assert str(exc)
    else:
        assert [e.identifier for e in model.entries()] == [v.strip() for v in values]
