"""Hostile input for the property tests in ``test_hostile_properties.py`` (issue 15 §6).

Strategies aimed at the real fields of a bulk change (device identifiers, targetStatus,
carrierRatePlan, customerRatePlanId, effectiveDate, idempotencyKey, serviceProviderId, changeType),
mixing valid values with arbitrary unicode (lone surrogates included), control and zero-width
characters, whitespace around ``= + - @``, numbers beyond 64 bits, NaN/Infinity literals and deep
nesting; CSV files with non-UTF-8 bytes, semicolons, blank and ragged rows; and the checks that
decide whether what the system stored is what was sent.

JSON is written by ``dump`` rather than ``json.dumps`` so that a body can hold what Python cannot
serialise: a lone surrogate as the escape ``\\ud800`` (a ``str`` holding one cannot be UTF-8
encoded), NaN/Infinity, a 5000-digit integer, ``1e400`` and 1000-deep nesting (``Raw`` literals).
"""

from __future__ import annotations

import csv
import io
import json
import math
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_from_bytes

from hypothesis import strategies as st

from bulkchange_pipeline.domain import Integration, canonical_status, normalize
from bulkchange_pipeline.domain.requests import FIELD_ALIASES, canonical_key
from bulkchange_pipeline.store.seed import DemoSeed, demo_eid, demo_iccid, demo_imei, demo_msisdn

# --- characters and text ------------------------------------------------------------------------

ZERO_WIDTH = ["\u200b", "\ufeff", "\u202e", "\u2066", "\u00ad", "\u200d"]
CONTROL = ["\x00", "\x01", "\x07", "\x1b", "\x1c", "\x1f", "\x7f", "\x85", "\x0b", "\x0c"]
SPACES = [" ", "\t", "\n", "\r", "\r\n", "\u00a0", "\u2028", "\u3000", "\x85", "\x1c", "\x1f"]  # all str.isspace()
SURROGATES = ["\ud800", "\udbff", "\udc00", "\udfff"]
FORMULA_LEADS = ["=", "+", "-", "@"]
SPECIAL_TEXT = [
    "",
    " ",
    "\u200b",
    "\ufeff",
    "=1+1",
    " =cmd|' /C calc'!A0",
    "\t=2+2",
    "@SUM(1)",
    "-2+3",
    "+1",
    "\ud800",
    "a\x00b",
    "NaN",
    "Infinity",
    "9" * 30,
    "x" * 300,
    "[/]",
    "[bold]x",
    "[link=http://x]y[/link]",
    "\x1b[31mred",
    "%s%n",
    "{0}",
    "\\",
    '"',
    "'",
    "\u202egnp.exe",
    "1;DROP TABLE device;--",
]
HOSTILE_CHAR = st.one_of(
    st.characters(),
    st.sampled_from(ZERO_WIDTH + CONTROL + SURROGATES + [c for c in SPACES if len(c) == 1] + FORMULA_LEADS),
)
WHITESPACE_PAD = st.lists(st.sampled_from(SPACES), min_size=1, max_size=2).map(
    "".join
)  # removed by the documented str.strip
PAD = st.one_of(
    st.just(""),
    WHITESPACE_PAD,
    WHITESPACE_PAD,
    st.lists(st.sampled_from(SPACES + ZERO_WIDTH + CONTROL + SURROGATES[:1]), min_size=1, max_size=2).map("".join),
)


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """``one_of`` with weights (a branch listed n times is drawn n times as often)."""
    return st.one_of(*[strategy for weight, strategy in choices for _ in range(weight)])


def padded(core: st.SearchStrategy[str], pad: st.SearchStrategy[str] = PAD) -> st.SearchStrategy[str]:
    return st.builds(lambda a, c, b: a + c + b, pad, core, pad)


# Console markup (the CLI prints with rich) and terminal escapes
MARKUP = [
    "[/]",
    "x[/]",
    "[/bold]",
    "[red]x[/blue]",
    "[link=javascript:alert(1)]x[/link]",
    "[bold",
    "\\[x]",
    "\x1b[2J\x1b[H",
    "\x1b]8;;http://evil\x1b\\click\x1b]8;;\x1b\\",
    "\x07\x08\x08\x08",
]
HOSTILE_TEXT = st.one_of(
    st.text(HOSTILE_CHAR, max_size=12),
    st.builds(
        lambda pre, lead, rest: pre + lead + rest,
        PAD,
        st.sampled_from(FORMULA_LEADS),
        st.text(HOSTILE_CHAR, max_size=6),
    ),
    st.sampled_from(SPECIAL_TEXT),
    st.builds(
        lambda a, m, b: a + m + b,
        st.sampled_from(["", "dev-", "8901100000000000000"]),
        st.sampled_from(MARKUP),
        st.sampled_from(["", "x"]),
    ),
)


@dataclass(frozen=True)
class Raw:
    """A JSON literal written as is (NaN, Infinity, huge numbers, deep nesting)."""

    text: str

    def __repr__(self) -> str:
        return f"Raw({self.text[:40]!r}{'...' if len(self.text) > 40 else ''})"


# Characters str.isdigit() accepts: a superscript int() refuses, Arabic-Indic digits int() reads as 1, fullwidth
ODD_DIGITS = ["²", "1²", "١", "１", "1\u200b"]
NUMBER_LITERALS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e308",
    "1e400",
    "-1e400",
    "1" + "0" * 5000,
    str(2**63),
    str(-(2**63) - 1),
    str(2**64),
    "-0",
    "0.5",
    "1.0",
    "1E2",
    "-1",
    "0",
]
DEEP = [Raw("[" * 1000 + "]" * 1000), Raw('{"a":' * 1000 + "1" + "}" * 1000), Raw("[" * 60 + "1" + "]" * 60)]
HOSTILE_NUMBER = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([Raw(x) for x in NUMBER_LITERALS]),
    st.floats(allow_nan=True, allow_infinity=True),
)
HOSTILE_SCALAR = st.one_of(HOSTILE_TEXT, HOSTILE_NUMBER, st.booleans(), st.none())
HOSTILE_VALUE = st.one_of(
    *[HOSTILE_SCALAR] * 8,
    st.sampled_from(DEEP),
    st.lists(HOSTILE_SCALAR, max_size=2),
    st.dictionaries(HOSTILE_TEXT, HOSTILE_SCALAR, max_size=2),
)


def has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def dump(value: Any, ascii_only: bool = False) -> str:
    """JSON text of ``value``; strings with a lone surrogate are written with escapes."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=ascii_only or has_surrogate(value))
    if isinstance(value, dict):
        return "{" + ", ".join(f"{dump(str(k), ascii_only)}: {dump(v, ascii_only)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(dump(v, ascii_only) for v in value) + "]"
    return json.dumps(value)  # None, bools, ints, floats (NaN and Infinity as their literals)


def to_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def decoded(raw: bytes) -> tuple[bool, Any]:
    """What a server that reads the body as UTF-8 JSON gets: (True, value) or (False, None)."""
    try:
        text = raw.decode("utf-8-sig")
        return True, json.loads(text)
    except (ValueError, RecursionError):
        return False, None


@st.composite
def broken_bytes(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a byte sequence that is not UTF-8 put somewhere."""
    bad = draw(st.sampled_from([b"\xff", b"\x80", b"\xc3", b"\xed\xa0\x80", b"\xfe\xff", b"\xe9"]))
    at = draw(st.integers(0, len(data)))
    return data[:at] + bad + data[at:]


# --- the tenant's real data ---------------------------------------------------------------------

JASPER_INDEX, THINGSPACE_INDEX, TEAL_INDEX = 1, 2, 4  # seed.PROVIDERS order
ID_FIELDS = ("iccid", "device", "imei", "msisdn", "eid")  # validation's order of preference


def device_ids(index: int, n: int = 20, teal: bool = False) -> dict[str, list[str]]:
    ids = {
        "iccid": [demo_iccid(index, 0, i) for i in range(n)],
        "imei": [demo_imei(index, 0, i) for i in range(n)],
        "msisdn": [demo_msisdn(index, 0, i) for i in range(n)],
    }
    if teal:
        ids["eid"] = [demo_eid(index, 0, i) for i in range(n)]
    return ids


@dataclass(frozen=True)
class ChangeSpec:
    """One change type as a strategy: its payload key, provider, and valid values per wire field."""

    change_type: int
    name: str
    payload_key: str
    integration: str
    fields: dict[str, list[Any]]


def change_specs(seed: DemoSeed) -> list[ChangeSpec]:
    plans = seed.carrier_rate_plans["jasper"]
    return [
        ChangeSpec(
            10,
            "EditUsernameCostCenter",
            "usernameCostCenterUpdate",
            "jasper",
            {"username": ["dev-1", "Ops team"], "costCenter": ["CC-1", "R&D"]},
        ),
        ChangeSpec(
            1,
            "StatusUpdate",
            "statusUpdate",
            "jasper",
            {"targetStatus": ["DEACTIVATED", "RETIRED", "deactivated"], "reasonCode": ["FF", "x"]},
        ),
        ChangeSpec(
            4,
            "CustomerRatePlanChange",
            "customerRatePlanUpdate",
            "jasper",
            {
                "customerRatePlanId": list(seed.customer_rate_plans.values()),
                "customerPoolId": list(seed.pools.values()),
                "customerDataAllocationMB": [0, 100, 5120],
            },
        ),
        ChangeSpec(
            5,
            "CustomerAssignment",
            "customerAssignment",
            "jasper",
            {"customerId": list(seed.customers.values()), "revCustomerId": ["1", "2147483647"]},
        ),
        ChangeSpec(
            7,
            "CarrierRatePlanChange",
            "carrierRatePlanUpdate",
            "jasper",
            {"carrierRatePlan": [*plans, plans[0].lower()], "communicationPlan": ["CP-IOT-DATA", "cp x"]},
        ),
        ChangeSpec(3, "Archival", "archival", "jasper", {"overrideUsageCheck": [True, False]}),
        ChangeSpec(
            9,
            "ChangeICCIDAndIMEI",
            "iccidImeiChange",
            "thingspace",
            {
                "newIccid": [demo_iccid(THINGSPACE_INDEX, 0, 900 + i) for i in range(3)],
                "newImei": [demo_imei(THINGSPACE_INDEX, 0, 900 + i) for i in range(3)],
            },
        ),
    ]


DATES = [
    "2999-01-01T00:00:00Z",
    "2000-01-01T00:00:00",
    "2020-06-30T12:00:00+02:00",
    "2000-01-01",
    "0001-01-01T00:00:00",
    "9999-12-31T23:59:59+14:00",
    "2024-02-30",
    "tomorrow",
    "",
    " 2999-01-01T00:00:00Z ",
]
DATE = st.one_of(st.sampled_from(DATES), padded(st.sampled_from(DATES[:3])), HOSTILE_TEXT, HOSTILE_NUMBER)


def field_value(spec: ChangeSpec, name: str) -> st.SearchStrategy[Any]:
    valid = spec.fields.get(name, ["x"])
    as_text = [v for v in valid if isinstance(v, str)] or [str(v) for v in valid if not isinstance(v, bool)] or ["true"]
    return weighted(
        (4, st.sampled_from(valid)),
        (2, padded(st.sampled_from(as_text))),
        (
            1,
            st.builds(
                lambda pad, lead, v: pad + lead + v,
                WHITESPACE_PAD,
                st.sampled_from(FORMULA_LEADS),
                st.sampled_from(as_text),
            ),
        ),
        (2, HOSTILE_VALUE),
    )


def identifier(ids: dict[str, list[str]], other: list[str]) -> st.SearchStrategy[Any]:
    every = [v for values in ids.values() for v in values]
    return weighted(
        (5, st.sampled_from(every)),
        (2, padded(st.sampled_from(every))),
        (
            1,
            st.builds(
                lambda lead, v: lead + v,
                st.sampled_from(["+", "=", "-", "@", " =", "\u200b", "\ufeff"]),
                st.sampled_from(every),
            ),
        ),
        (1, st.sampled_from(other)),
        (2, HOSTILE_TEXT),
        (
            1,
            st.sampled_from(
                ["8901100000000000999", "89011" + "0" * 40, "1" * 20, "١٢٣٤٥٦٧٨٩٠١٢٣٤٥٦٧٨٩", "8901-1000-0000-0000-001"]
            ),
        ),
    )


MUTATIONS = [
    "padded_value",
    "padded_value",
    "padded_device",
    "device",
    "device",
    "device_value",
    "device_value",
    "payload_value",
    "payload_value",
    "idempotencyKey",
    "effectiveDate",
    "serviceProviderId",
    "changeType",
    "processChanges",
    "portalTypeId",
    "extra_key",
    "devices",
    "payload",
    "id_key",
]


def hostile_field_name(spec: ChangeSpec) -> st.SearchStrategy[str]:
    return weighted(
        (4, st.sampled_from(list(spec.fields))),
        (1, st.sampled_from(["status", "effectiveDate", "newStatus", "iccid"])),
        (1, padded(st.sampled_from(list(spec.fields)))),
        (1, HOSTILE_TEXT),
    )


@st.composite
def json_request(draw: st.DrawFn, seed: DemoSeed) -> dict[str, Any]:
    """A valid bulk change for one of the tenant's change types, then up to three hostile
    mutations, each aimed at one real field (a device identifier, a value, the key...)."""
    spec = draw(st.sampled_from(change_specs(seed)))
    sp_id = seed.service_providers[spec.integration]
    ids = device_ids(THINGSPACE_INDEX if spec.integration == "thingspace" else JASPER_INDEX)
    devices: list[Any] = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(sorted(ids)))
        ident = draw(st.sampled_from(ids[kind]))
        devices.append(ident if draw(st.booleans()) else {draw(st.sampled_from([kind, "device"])): ident})
    payload = {
        name: draw(st.sampled_from(spec.fields[name]))
        for name in draw(
            st.lists(st.sampled_from(list(spec.fields)), unique=True, min_size=1, max_size=len(spec.fields))
        )
    }
    body: dict[str, Any] = {
        "serviceProviderId": sp_id,
        "changeType": spec.change_type,
        "devices": devices,
        spec.payload_key: payload,
    }
    for mutation in draw(st.lists(st.sampled_from(MUTATIONS), max_size=3)):
        i = draw(st.integers(0, len(devices) - 1))
        entry = devices[i]
        if mutation == "padded_value":  # a valid value with whitespace around it: stored stripped
            name = draw(st.sampled_from(list(spec.fields)))
            text = [v for v in spec.fields[name] if isinstance(v, str)] or [str(v).lower() for v in spec.fields[name]]
            value = draw(padded(st.sampled_from(text), WHITESPACE_PAD))
            if isinstance(entry, dict) and draw(st.booleans()):
                entry[name] = value
            else:
                payload[name] = value
        elif mutation in ("device", "padded_device"):
            ident = draw(
                identifier(ids, seed.other_iccids)
                if mutation == "device"
                else padded(st.sampled_from([v for vs in ids.values() for v in vs]), WHITESPACE_PAD)
            )
            if isinstance(entry, dict):
                entry[next(iter(entry))] = ident
            else:
                devices[i] = ident
        elif mutation == "device_value":
            entry = devices[i] = entry if isinstance(entry, dict) else {"device": entry}
            name = draw(hostile_field_name(spec))
            entry[name] = draw(DATE if name == "effectiveDate" else field_value(spec, name))
        elif mutation == "id_key" and isinstance(entry, dict):
            key = next(iter(entry))
            devices[i] = {
                draw(st.sampled_from(["ICCID", " iccid", "Device", "imei", "msisdn", "eid"]) | HOSTILE_TEXT): entry[
                    key
                ],
                **{k: v for k, v in entry.items() if k != key},
            }
        elif mutation == "payload_value":
            name = draw(hostile_field_name(spec))
            payload[name] = draw(DATE if name == "effectiveDate" else field_value(spec, name))
        elif mutation == "idempotencyKey":
            body["idempotencyKey"] = draw(
                weighted(
                    (3, HOSTILE_TEXT),
                    (2, padded(st.sampled_from(["k-1", "key"]))),
                    (1, HOSTILE_NUMBER),
                    (1, st.just("k" * 201)),
                )
            )
        elif mutation == "effectiveDate":
            (body if draw(st.booleans()) else payload)["effectiveDate"] = draw(DATE)
        elif mutation == "serviceProviderId":
            body["serviceProviderId"] = draw(
                st.one_of(
                    st.sampled_from(
                        [
                            str(sp_id),
                            f" {sp_id} ",
                            float(sp_id),
                            seed.other_service_provider_id,
                            0,
                            -1,
                            999,
                            *ODD_DIGITS,
                        ]
                    ),
                    HOSTILE_NUMBER,
                    HOSTILE_TEXT,
                )
            )
        elif mutation == "changeType":
            body["changeType"] = draw(
                st.one_of(
                    st.sampled_from(
                        [
                            spec.name,
                            str(spec.change_type),
                            f" {spec.name} ",
                            spec.name.lower(),
                            float(spec.change_type),
                            6,
                            0,
                        ]
                    ),
                    padded(st.just(spec.name)),
                    HOSTILE_NUMBER,
                    HOSTILE_TEXT,
                )
            )
        elif mutation in ("processChanges", "portalTypeId"):
            body[mutation] = draw(HOSTILE_SCALAR)
        elif mutation == "extra_key":
            body[draw(HOSTILE_TEXT)] = draw(HOSTILE_VALUE)
        elif mutation == "devices":
            body["devices"] = draw(st.sampled_from([[], None, "x", {}, *DEEP, devices * 2]))
        elif mutation == "payload":
            body[spec.payload_key] = draw(st.sampled_from([None, [], "x", *DEEP[:2]]))
    return body


@st.composite
def json_body_bytes(draw: st.DrawFn, seed: DemoSeed) -> bytes:
    """A request body: a generated request as (hostile) JSON text, sometimes broken at byte level."""
    body = draw(json_request(seed))
    raw = to_bytes(dump(body, ascii_only=draw(st.booleans())))
    damage = draw(
        st.sampled_from(["none"] * 16 + ["bom", "not-utf8", "empty", "blank", "null", "array", "deep", "trailing"])
    )
    if damage == "bom":
        return b"\xef\xbb\xbf" + raw
    if damage == "not-utf8":
        return draw(broken_bytes(raw))
    if damage == "trailing":
        return raw + b" , }"
    return {
        "none": raw,
        "empty": b"",
        "blank": b" \r\n\t",
        "null": b"null",
        "array": b"[" + raw + b"]",
        "deep": DEEP[0].text.encode(),
    }[damage]


# --- CSV files ------------------------------------------------------------------------------------

HEADER_ALIASES = {
    "targetStatus": ["targetStatus", "status", "newStatus", "TargetStatus"],
    "carrierRatePlan": ["carrierRatePlan", "carrier_rate_plan"],
    "customerRatePlanId": ["customerRatePlanId", "customer_rate_plan_id"],
    "username": ["username", "Username"],
}


@dataclass
class CsvUpload:
    """A CSV file and the options sent with it; ``keys`` is each column's intended canonical key
    (None: a column that must make the file refused)."""

    data: bytes
    change_type: str | None
    service_provider: str | None
    idempotency_key: str | None
    dry_run: bool
    keys: list[str | None] | None  # None: the header does not read back as written (unquoted line breaks...)
    spec: ChangeSpec
    notes: list[str] = field(default_factory=list)


def _intended(name: str, key: str | None) -> str | None:
    """The key a header cell names once surrounding whitespace is stripped (str.strip, as documented)."""
    return key if key is not None and name.strip() in (key_name for key_name in _spellings(key)) else None


def _spellings(key: str) -> list[str]:
    if key in ("iccid", "imei", "msisdn", "eid", "device"):
        return [key, key.upper(), key.title()]
    if key in ("changeType", "serviceProviderId", "idempotencyKey"):
        return [key, key.lower()]
    wire = [w for w, k in FIELD_ALIASES.items() if k == key]
    return [key, *wire, *[w[0].upper() + w[1:] for w in wire]]


CSV_MUTATIONS = [
    "cell_pad",
    "cell_pad",
    "cell_hostile",
    "cell_hostile",
    "id_hostile",
    "id_pad",
    "blank_cell",
    "blank_row",
    "header_pad",
    "header_hostile",
    "ragged",
    "semicolon",
    "unquoted",
    "encoding",
    "bad_bytes",
    "blank_lines",
    "nul",
    "option_ct",
    "option_sp",
    "option_key",
    "no_rows",
    "newline_in_cell",
    "header_columns",
]


@st.composite
def csv_upload(draw: st.DrawFn, seed: DemoSeed, *, options_for_cli: bool = False) -> CsvUpload:
    """A valid CSV for one of the tenant's change types, then up to three hostile mutations
    (cells, header, rows, delimiter, encoding, bytes, options)."""
    spec = draw(st.sampled_from([s for s in change_specs(seed) if s.change_type in (10, 1, 4, 7, 5)]))
    sp_id = seed.service_providers[spec.integration]
    ids = device_ids(JASPER_INDEX)
    id_kind = draw(st.sampled_from(["iccid", "imei", "msisdn", "device"]))
    wire_fields = draw(st.lists(st.sampled_from(list(spec.fields)), unique=True, min_size=1, max_size=2))
    header_keys: list[str] = [id_kind, *[canonical_key(w) for w in wire_fields]]
    names = [draw(st.sampled_from(_spellings(k))) for k in header_keys]
    keys: list[str | None] = list(header_keys)
    pool = ids["iccid"] if id_kind == "device" else ids[id_kind]
    rows = [
        [
            draw(st.sampled_from(pool)),
            *[
                str(draw(st.sampled_from(spec.fields[w]))).lower()
                if isinstance(spec.fields[w][0], bool)
                else str(draw(st.sampled_from(spec.fields[w])))
                for w in wire_fields
            ],
        ]
        for _ in range(draw(st.integers(1, 3)))
    ]
    options: dict[str, str | None] = {
        "change_type": draw(st.sampled_from([str(spec.change_type), spec.name])),
        "service_provider": str(sp_id)
        if not options_for_cli
        else draw(st.sampled_from([str(sp_id), spec.integration])),
        "idempotency_key": None,
    }
    delimiter, quoted, encoding, prefix = ",", True, "utf-8", ""
    damage: list[str] = []
    for mutation in draw(st.lists(st.sampled_from(CSV_MUTATIONS), max_size=3)):
        r = draw(st.integers(0, len(rows) - 1)) if rows else 0
        c = draw(st.integers(0, len(names) - 1))
        if mutation in ("cell_pad", "id_pad") and rows and c < len(rows[r]):
            c = 0 if mutation == "id_pad" else c
            rows[r][c] = draw(padded(st.just(rows[r][c]), WHITESPACE_PAD))
        elif mutation == "cell_hostile" and rows and len(rows[r]) > 1:
            c = draw(st.integers(1, len(rows[r]) - 1))
            rows[r][c] = draw(
                field_value(spec, wire_fields[c - 1] if c - 1 < len(wire_fields) else "x").map(
                    lambda v: v if isinstance(v, str) else "" if v is None else dump(v)
                )
            )
        elif mutation == "id_hostile" and rows:
            rows[r][0] = draw(identifier(ids, seed.other_iccids).filter(lambda v: isinstance(v, str)))
        elif mutation == "blank_cell" and rows and c < len(rows[r]):
            rows[r][c] = draw(st.sampled_from(["", " ", "\t"]))
        elif mutation == "blank_row":
            rows.insert(r, [draw(st.sampled_from(["", " "])) for _ in names])
        elif mutation == "header_pad":
            names[c] = draw(padded(st.just(names[c]), WHITESPACE_PAD))
        elif mutation == "header_hostile":
            names[c] = draw(st.one_of(HOSTILE_TEXT, padded(st.just(names[c]))))
            keys[c] = _intended(names[c], header_keys[c])
        elif mutation == "ragged" and rows:
            rows[r] = rows[r][:-1] if draw(st.booleans()) else [*rows[r], draw(HOSTILE_TEXT)]
        elif mutation == "semicolon":
            delimiter = ";"
        elif mutation == "unquoted":
            quoted = False
        elif mutation == "encoding":
            encoding = draw(st.sampled_from(["utf-8-sig", "utf-16", "cp1252", "latin-1"]))
        elif mutation in ("bad_bytes", "nul"):
            damage.append(mutation)
        elif mutation == "blank_lines":
            prefix = draw(st.sampled_from(["\n", "\r\n\r\n", ",\n", " \n"]))
        elif mutation == "option_ct":
            options["change_type"] = draw(
                st.one_of(
                    st.none(),
                    padded(st.just(spec.name)),
                    st.sampled_from(["99", "0", "-1", str(2**64), "6"]),
                    HOSTILE_TEXT,
                )
            )
        elif mutation == "option_sp":
            options["service_provider"] = draw(
                st.one_of(
                    st.none(),
                    padded(st.just(str(sp_id))),
                    HOSTILE_TEXT,
                    st.sampled_from(["0", "-1", str(2**63), str(2**64), "1e3", "+1", *ODD_DIGITS]),
                )
            )
        elif mutation == "option_key":
            options["idempotency_key"] = draw(st.one_of(HOSTILE_TEXT, padded(st.just("csv-key")), st.just("k" * 201)))
        elif mutation == "no_rows":
            rows = []
        elif mutation == "newline_in_cell" and rows and len(rows[r]) > 1:
            rows[r][-1] = rows[r][-1] + draw(st.sampled_from(["\n", "\r\n", "\nx"]))
        elif (
            mutation == "header_columns"
        ):  # changeType / serviceProviderId / idempotencyKey as columns instead of options
            column = draw(st.sampled_from(["changeType", "serviceProviderId", "idempotencyKey"]))
            if column not in header_keys:
                value = {
                    "changeType": str(spec.change_type),
                    "serviceProviderId": str(sp_id),
                    "idempotencyKey": "col-key",
                }[column]
                header_keys.append(column)
                keys.append(column)
                names.append(draw(st.sampled_from(_spellings(column))))
                for row in rows:
                    row.append(draw(st.sampled_from([value, value, f" {value} ", "", draw(HOSTILE_TEXT)])))
                if column == "changeType":
                    options["change_type"] = None
                elif column == "serviceProviderId":
                    options["service_provider"] = None
    buf = io.StringIO()
    if quoted:
        writer = csv.writer(buf, delimiter=delimiter, lineterminator="\r\n")
        writer.writerow(names)
        writer.writerows(rows)
    else:
        buf.write("\n".join(delimiter.join(r) for r in [names, *rows]) + "\n")
    text = prefix + buf.getvalue()
    if _header_as_read(text) != names:  # an unquoted delimiter or line break moved the columns: no key is known
        keys = None
    if "nul" in damage:
        at = draw(st.integers(0, len(text)))
        text = text[:at] + "\x00" + text[at:]
    data = text.encode(encoding, "surrogatepass" if encoding.startswith("utf-8") else "replace")
    if "bad_bytes" in damage:
        data = draw(broken_bytes(data))
    if options_for_cli:
        options = {k: None if v is None else v.replace("\x00", "") for k, v in options.items()}
    return CsvUpload(
        data=data,
        change_type=options["change_type"],
        service_provider=options["service_provider"],
        idempotency_key=options["idempotency_key"],
        dry_run=draw(st.booleans()),
        keys=keys,
        spec=spec,
    )


def _header_as_read(text: str) -> list[str] | None:
    try:
        rows = [r for r in csv.reader(io.StringIO(text, newline=""), strict=True) if any(c.strip() for c in r)]
    except csv.Error:
        return None
    return rows[0] if rows else None


def csv_rows_as_sent(data: bytes) -> list[list[str]] | None:
    """The data rows of a CSV file as a UTF-8 reader sees them (blank rows and leading blank
    lines skipped), or None when it cannot be read at all."""
    try:
        text = data.decode("utf-8-sig")
        rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except (UnicodeDecodeError, csv.Error):
        return None
    rows = [r for r in rows if any(c.strip() for c in r)]
    return rows[1:] if rows else []


def multipart(fields: dict[str, str | None], data: bytes, filename: str = "devices.csv") -> tuple[bytes, str]:
    """A multipart/form-data body built by hand, so form fields can carry any bytes."""
    boundary = "hostile-boundary-7f3a9c"
    parts = []
    for name, value in fields.items():
        if value is None:
            continue
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + to_bytes(value)
            + b"\r\n"
        )
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        f"Content-Type: text/csv\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def percent(text: str) -> str:
    """Percent-encode every byte of ``text`` as UTF-8 (lone surrogates too: an invalid sequence)."""
    return quote_from_bytes(to_bytes(text), safe="")


# --- what was sent and what was stored --------------------------------------------------------------

TRUTHY = {"1", "true", "t", "yes", "y", "on"}
FALSY = {"0", "false", "f", "no", "n", "off"}


def sent_identifier(entry: Any) -> str:
    """The identifier a device entry names (the first of iccid, device, imei, msisdn, eid given)."""
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict):
        for name in ID_FIELDS:
            if entry.get(name):
                return str(entry[name])
    return ""


def sent_values(payload: Any, entry: Any, top_date: Any = None) -> dict[str, Any]:
    """The per-device values as sent: the payload's, a top-level effectiveDate (payload wins), and
    the device object's own (device wins), by canonical key."""
    merged: dict[str, Any] = {}
    if top_date is not None:
        merged["effective_date"] = top_date
    items = list(payload.items()) if isinstance(payload, dict) else []
    if isinstance(entry, dict):
        items += [(k, v) for k, v in entry.items() if k not in ID_FIELDS]
    for k, v in items:
        merged[canonical_key(k)] = v
    return {k: v for k, v in merged.items() if v is not None and v != ""}


def _instant(value: Any) -> datetime | None:
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
        return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    return None


def value_matches(key: str, sent: Any, stored: Any, integration: Integration) -> bool:
    """Whether a stored target value is the sent one after the documented normalisation:
    surrounding whitespace stripped (str.strip); a status in the carrier's spelling; a rate plan
    code matched case-insensitively; new identifiers without separators; dates as instants."""
    if isinstance(sent, str):
        s = sent.strip()
        if key == "status":
            return stored == canonical_status(integration, s)
        if key == "carrier_rate_plan":
            return isinstance(stored, str) and stored.lower() == s.lower()
        if key in ("new_iccid", "new_imei"):
            return stored == normalize(s)
        if key == "effective_date":
            return _instant(stored) is not None and _instant(stored) == _instant(s)
        if isinstance(stored, bool):
            return s.lower() in (TRUTHY if stored else FALSY)
        if isinstance(stored, int):
            try:
                return float(s) == stored
            except ValueError:
                return False
        return stored == s
    if isinstance(sent, float) and (math.isnan(sent) or math.isinf(sent)):
        return False  # NaN and Infinity are no value a field can hold
    if key == "effective_date":
        return stored is not None  # a number read as a Unix time (pydantic's rule)
    if isinstance(stored, bool) and isinstance(sent, (int, float)) and not isinstance(sent, bool):
        return sent == stored  # 0 and 1 read as false and true
    if isinstance(sent, bool) or isinstance(stored, bool):
        return stored is sent
    return stored == sent


def camel_to_snake_row(item: dict[str, Any]) -> dict[str, Any]:
    names = {"statusDetails": "status_details", "changeRequest": "change_request", "deviceId": "device_id"}
    return {names.get(k, k): v for k, v in item.items()}


def row_problems(
    rows: list[dict[str, Any]],
    devices: list[Any],
    values: list[dict[str, Any]],
    integration: Integration,
    *,
    id_keys: list[str] | None = None,
) -> list[str]:
    """Every way the stored device rows differ from what was sent; [] when they round-trip.

    ``devices[i]`` is the identifier sent for row i (raw), ``values[i]`` its values by canonical key.
    An ERROR row must carry a non-empty reason and report the identifier as sent; an accepted row
    must hold the identifier (normalised) and every value sent."""
    problems = []
    if len(rows) != len(devices):
        return [f"{len(rows)} device rows stored for {len(devices)} devices sent"]
    for i, (row, raw, sent) in enumerate(zip(rows, devices, values), start=1):
        cr = row.get("change_request") or {}
        if row["status"] == "ERROR":
            if not (row.get("status_details") or "").strip():
                problems.append(f"row {i}: ERROR without a reason")
            reported = cr.get("device")
            if not isinstance(reported, str) or reported.strip() not in (raw[:200].strip(), raw.strip()[:200]):
                problems.append(f"row {i}: refused row reports device {reported!r}, {raw!r} was sent")
            continue
        if row["status"] not in ("NEW", "SCHEDULED"):
            problems.append(f"row {i}: accepted row has status {row['status']}")
        held = {row.get(k) for k in ("iccid", "imei", "msisdn", "eid")} - {None}
        if normalize(raw) not in held:
            problems.append(f"row {i}: accepted row holds {sorted(held)}, {raw!r} was sent")
        for key, value in sent.items():
            if key not in cr:
                problems.append(f"row {i}: {key}={value!r} was sent but is not stored ({cr!r})")
            elif not value_matches(key, value, cr[key], integration):
                problems.append(f"row {i}: {key} stored as {cr[key]!r}, sent {value!r}")
    return problems


def expected_key(key: Any) -> str | None:
    """An idempotency key as stored: stripped; blank is no key."""
    return key.strip() or None if isinstance(key, str) else None


def control_chars(text: str) -> list[str]:
    """C0/C1 control characters (other than newline and tab) and bidi overrides in terminal output."""
    return sorted(
        {
            repr(c)
            for c in text
            if (unicodedata.category(c) == "Cc" and c not in "\n\t") or c in "\u202e\u202d\u2066\u2067\u2068"
        }
    )
