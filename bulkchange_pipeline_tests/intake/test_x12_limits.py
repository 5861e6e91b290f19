"""Bounds on one interchange (review of issue 20): a small file must not make a huge 997 or stall
the drop sensor. Each flood is answered in well under two seconds with a 997 under 64 KB that our
own tokenizer reads back, and too many segments / groups / sets are refused with one clear issue."""

from __future__ import annotations

import time
from itertools import count

import pytest

from bulkchange_pipeline.intake.x12 import ack_997, check_856, check_envelope, parse_interchange
from bulkchange_pipeline.intake.x12.acks import MAX_SEGMENT_ERRORS
from bulkchange_pipeline.intake.x12.tokens import MAX_GROUPS, MAX_SEGMENTS, MAX_TRANSACTIONS

from .x12_floods import FLOODS, GROUP, OPEN_GROUP, SET, _head, bare_terminators, many_groups_one_gs06
from .x12_inputs import interchange, render, ship_notice_body, three_devices

MAX_ACK = 64 * 1024


@pytest.mark.parametrize("name", list(FLOODS))
def test_a_flood_is_answered_fast_with_a_small_readable_997(name):
    data = FLOODS[name]()
    started = time.process_time()  # CPU seconds, not wall time: a loaded CI machine must not fail it
    parsed = parse_interchange(data)
    issues = check_856(parsed)
    ack = ack_997(parsed, issues, count(1).__next__)
    assert time.process_time() - started < 2  # the flood this guards against cost 47 s
    assert issues and len(ack) < MAX_ACK
    answer = parse_interchange(ack)
    assert check_envelope(answer) == []
    statuses = [s.get(4) for s in answer.ta1] + [
        seg.get(1) for g in answer.groups for tx in g.transactions for seg in tx.segments if seg.id == "AK9"
    ]
    assert "R" in statuses and "A" not in statuses and "P" not in statuses


def test_too_many_groups_is_one_interchange_issue_and_a_ta1_only():
    parsed = parse_interchange(many_groups_one_gs06(MAX_GROUPS + 1))
    (issue,) = check_856(parsed)
    assert issue.level == "interchange" and issue.code == "024"
    assert (
        issue.message
        == f"the interchange holds {MAX_GROUPS + 1:,} functional groups (GS); we take at most {MAX_GROUPS}"
    )
    ack = parse_interchange(ack_997(parsed, [issue], count(1).__next__))
    assert [s.elements[3:] for s in ack.ta1] == [("R", "024")] and ack.groups == []


def test_too_many_segments_is_one_issue():
    (issue,) = check_envelope(parse_interchange(bare_terminators(MAX_SEGMENTS + 1)))
    assert issue.message == f"the interchange holds more than {MAX_SEGMENTS:,} segments; send it in several files"


def test_exactly_the_segment_limit_is_read():
    parsed = parse_interchange(bare_terminators(MAX_SEGMENTS))
    assert parsed.too_large is None
    issues = check_envelope(parsed)
    assert issues[-2].message == f"and {MAX_SEGMENTS - 10:,} more segments outside any GS/GE group"


def test_too_many_transaction_sets_is_one_issue():
    sets = MAX_TRANSACTIONS + 1
    data = (_head() + OPEN_GROUP + SET * sets + f"GE*{sets}*905~IEA*1*000000905~").encode()
    (issue,) = check_856(parse_interchange(data))
    assert (
        issue.message == f"the interchange holds {sets:,} transaction sets (ST); we take at most {MAX_TRANSACTIONS:,}"
    )


def test_a_repeated_gs06_rejects_the_interchange_with_one_issue_and_one_ak1():
    data = (_head() + GROUP * 3 + "IEA*3*000000905~").encode()
    parsed = parse_interchange(data)
    repeated = [i for i in check_envelope(parsed) if "numbers more than one" in i.message]
    assert [(i.level, i.code) for i in repeated] == [("interchange", "024")]
    ack = parse_interchange(ack_997(parsed, check_856(parsed), count(1).__next__))
    assert [s.get(5) for s in ack.ta1] == ["024"]
    ak1 = [seg for g in ack.groups for tx in g.transactions for seg in tx.segments if seg.id == "AK1"]
    assert len(ak1) == 1


def test_segment_errors_beyond_the_cap_are_counted_not_listed():
    sets = "".join(f"ST*856*{n:04d}~BSN*00*S*20261205*0630~" + "z1*1~" * 12 + f"SE*15*{n:04d}~" for n in range(1, 21))
    parsed = parse_interchange((_head() + OPEN_GROUP + sets + "GE*20*905~IEA*1*000000905~").encode())
    issues = check_856(parsed)
    assert sum(i.level == "segment" and i.code == "1" for i in issues) == 20 * 10  # 10 named per set
    ack = parse_interchange(ack_997(parsed, issues, count(1).__next__))
    segs = [seg for g in ack.groups for tx in g.transactions for seg in tx.segments]
    assert sum(s.id == "AK3" for s in segs) == MAX_SEGMENT_ERRORS
    assert [s.elements for s in segs if s.id == "AK5"] == [("R", "5")] * 20  # every set still rejected
    assert [s.elements for s in segs if s.id == "AK9"] == [("R", "20", "20", "0")]


def test_an_empty_gs08_is_refused_naming_gs08():
    segs = interchange([("856", ship_notice_body(three_devices()))])
    next(s for s in segs if s[0] == "GS")[8] = ""
    parsed = parse_interchange(render(segs))
    issues = [i for i in check_856(parsed) if i.level == "group"]
    assert [(i.code, i.message) for i in issues] == [
        ("2", "GS08 (version / release / industry identifier code) is missing; it is mandatory")
    ]
    ack = parse_interchange(ack_997(parsed, issues, count(1).__next__))
    ak9 = [seg for g in ack.groups for tx in g.transactions for seg in tx.segments if seg.id == "AK9"]
    assert ak9[0].get(1) == "R" and ak9[0].get(5) == "2"


def test_an_iea01_count_mismatch_says_why_in_the_ta1():
    segs = interchange([("856", ship_notice_body(three_devices()))])
    segs[-1][1] = "3"
    parsed = parse_interchange(render(segs))
    ack = parse_interchange(ack_997(parsed, check_856(parsed), count(1).__next__))
    assert [(s.get(4), s.get(5)) for s in ack.ta1] == [("R", "021")]
