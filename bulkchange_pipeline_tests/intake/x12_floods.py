"""Small X12 files that used to make huge 997s (review of issue 20): many groups under one GS06,
megabytes of bare segment terminators, many transaction sets under one ST02, many bad segments."""

from __future__ import annotations

from .x12_inputs import STANDARD, isa, render

GROUP = "GS*SH*DISTRIB01*BULKCHANGE*20261205*0630*905*X*005010~ST*856*0001~BSN*00*S*20261205*0630~SE*3*0001~GE*1*905~"
SET = "ST*856*0001~BSN*00*S*20261205*0630~SE*3*0001~"
OPEN_GROUP = "GS*SH*DISTRIB01*BULKCHANGE*20261205*0630*905*X*005010~"


def _head() -> str:
    return render([isa(STANDARD)])


def many_groups_one_gs06(groups: int = 3000) -> bytes:
    """3,000 groups numbered 905 (132 KB that made a 117 MB 997 in 47 s)."""
    return (_head() + GROUP * groups + f"IEA*{groups}*000000905~").encode()


def bare_terminators(size: int = 5_000_000) -> bytes:
    """An ISA and then ``size`` segment terminators: five million empty segments."""
    return (_head() + "~" * size).encode()


def many_sets_one_st02(sets: int = 1000) -> bytes:
    """``sets`` transaction sets numbered 0001 in one group (each a repeat, each missing its HL)."""
    return (_head() + OPEN_GROUP + SET * sets + f"GE*{sets}*905~IEA*1*000000905~").encode()


def many_bad_segments(count: int = 150_000) -> bytes:
    """One transaction set with ``count`` segments whose id is not an X12 segment id, each a segment issue."""
    body = "ST*856*0001~BSN*00*S*20261205*0630~" + "z1*1~" * count + f"SE*{count + 3}*0001~"
    return (_head() + OPEN_GROUP + body + "GE*1*905~IEA*1*000000905~").encode()


FLOODS = {
    "3000 groups one GS06": many_groups_one_gs06,
    "5 MB of bare terminators": bare_terminators,
    "1000 sets one ST02": many_sets_one_st02,
    "150000 bad segment ids": many_bad_segments,
}
