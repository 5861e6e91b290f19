"""Hostile XML on both ways in (issue 19): property-based tests with hypothesis, as
``test_hostile_properties`` does for JSON and CSV.

The input is the hostile JSON requests of ``hostile_inputs`` (arbitrary unicode with lone
surrogates, control and zero-width characters, whitespace around ``= + - @``, numbers beyond 64
bits and negative ones, NaN, deep nesting, unknown keys, in every field) written as XML, then
damaged at the byte or markup level (``xml_inputs.DAMAGE``: DOCTYPEs, entities, XXE, instructions,
CDATA, encodings that lie, BOMs, namespaces, attributes, 10,000 levels...).

The property, for every input, through ``POST /bulk-changes:dry-run``, ``POST /bulk-changes`` and
``bulkchange dry-run`` / ``submit``:
- either it is refused clearly (a 4xx problem with a reason; a one-line ``Error:`` and a non-zero
  exit) and nothing is stored; every damage but the harmless ones (a BOM, a comment, no
  declaration, a namespace prefix) must be refused;
- or it is accepted and round-trips: the stored rows hold exactly the values the XML says (after
  the documented normalisation), the idempotency key is the one sent, and the XML results
  download reads back as the JSON results.
Never a 5xx, a logged traceback or a traceback on the terminal.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from fastapi.testclient import TestClient
from hypothesis import given, note
from hypothesis import strategies as st

from bulkchange_pipeline.cli import main
from bulkchange_pipeline.domain import PAYLOAD_KEYS, ChangeType, Integration
from bulkchange_pipeline.intake.app import create_app
from bulkchange_pipeline.store.api_keys import create_api_key
from bulkchange_pipeline.store.bulk_changes import get_bulk_change
from bulkchange_pipeline.store.db import shared_engine
from bulkchange_pipeline.store.device_rows import iter_device_results
from bulkchange_pipeline.store.seed import seed_demo

from . import hostile_inputs as h
from . import xml_inputs as x
from .test_hostile_properties import (
    HEADER_KEYS,
    HOSTILE,
    MAX_KEY,
    Harness,
    _check_no_traceback,
    _stored_delta,
    argv_text,
    with_examples,
)


@pytest.fixture
def xml_harness(engine: sa.Engine, db_url: str, caplog: pytest.LogCaptureFixture) -> Iterator[Harness]:
    seed = seed_demo(engine, devices_per_carrier=20)
    headers = {"Authorization": f"Bearer {create_api_key(engine, seed.tenant_id, 'hostile-xml')}"}
    with TestClient(create_app(db_url), raise_server_exceptions=False) as client:
        yield Harness(client, engine, seed, headers, caplog)
    shared_engine(db_url).dispose()


def round_trip_problems(rows: list[dict[str, Any]], case: x.XmlCase, integrations: dict[int, Integration]) -> list[str]:
    """How the stored rows differ from what the (accepted) XML says."""
    sent = x.as_sent(case.body)
    payload = sent.get(PAYLOAD_KEYS[ChangeType.parse(sent["changeType"])])
    devices = sent["devices"]
    values = [h.sent_values(payload, d) for d in devices]
    integration = integrations[int(sent["serviceProviderId"])]
    return h.row_problems(rows, [h.sent_identifier(d) for d in devices], values, integration)


def check_download(hz: Harness, bc_id: int) -> None:
    """The XML results download holds exactly the JSON results."""
    items = hz.client.get(f"/bulk-changes/{bc_id}/devices", params={"pageSize": 1000}, headers=hz.headers).json()
    download = hz.client.get(f"/bulk-changes/{bc_id}/devices", params={"format": "xml"}, headers=hz.headers)
    assert download.status_code == 200, download.text
    assert x.results_items(download.content) == items["items"], "the XML download differs from the JSON results"


def case(body: dict[str, Any], header_key: str | None = None) -> dict[str, Any]:
    return {"case": x.XmlCase(body, h.to_bytes(x.to_xml(body)), "none"), "header_key": header_key}


def examples(hz: Harness) -> list[dict[str, Any]]:
    """One of each hostile form, on a valid request, tried first on every run."""
    iccid = h.device_ids(h.JASPER_INDEX)["iccid"]
    jasper = hz.seed.service_providers["jasper"]

    def body(devices: list[Any], values: dict[str, Any], change_type: int = 10, **extra: Any) -> dict[str, Any]:
        return {
            "serviceProviderId": jasper,
            "changeType": change_type,
            "devices": devices,
            PAYLOAD_KEYS[ChangeType(change_type)]: values,
            **extra,
        }

    valid = body([iccid[0]], {"username": "dev-1"})
    xml = x.to_xml(valid)
    damaged = {
        name: x.XmlCase(valid, data, name)
        for name, data in {
            "entity": x.with_doctype(xml, x.BILLION_LAUGHS).encode(),
            "doctype": x.with_doctype(xml, x.QUADRATIC).encode(),
            "xxe": x.with_doctype(xml, x.xxe("file:///etc/passwd")).encode(),
            "utf16": xml.encode("utf-16"),
            "declared_utf16": xml.replace("UTF-8", "UTF-16").encode(),
            "bom": b"\xef\xbb\xbf" + xml.encode(),
            "deep": xml.replace("<devices>", "<devices>" + "<a>" * 10_000 + "</a>" * 10_000).encode(),
        }.items()
    }
    return [
        *({"case": c, "header_key": None} for c in damaged.values()),
        case(body([iccid[1]], {"username": " dev-1\r\n"})),  # a carriage return, escaped: stored stripped
        case(body([iccid[2]], {"username": "\u200b=x\u202e", "costCenter": "\ufeff"})),  # zero-width and a formula
        case(body([iccid[3]], {"username": "a\x85b"})),  # a C1 control: XML carries it, intake refuses it
        case(body([iccid[4]], {"username": "a\ud800b"})),  # a lone surrogate: not UTF-8
        case(body([iccid[5]], {"username": "a\x1bb"})),  # ESC: XML 1.0 cannot carry it
        case(body([iccid[6]], {"customerRatePlanId": 2**64}, 4)),  # beyond 64 bits
        case(body([iccid[6]], {"customerRatePlanId": -1, "customerDataAllocationMB": -5}, 4)),  # negative
        case(body([iccid[7]], {"targetStatus": " \t=DEACTIVATED"}, 1)),  # whitespace around '='
        case(body([f" {iccid[8]} ", "+" + iccid[9], "@x"], {"username": "x"}, idempotencyKey=" k-1 ")),
        case(body([iccid[10]], {"username": "x"}), header_key=" hk-1 "),
    ]


def test_xml_api_refuses_clearly_or_round_trips(xml_harness: Harness) -> None:
    hz = xml_harness
    integrations = {sp_id: Integration(name) for name, sp_id in hz.seed.service_providers.items()}
    keys_seen: set[str] = set()

    @HOSTILE
    @given(case=x.xml_case(hz.seed), header_key=h.weighted((6, st.none()), (1, st.sampled_from(HEADER_KEYS))))
    @with_examples(*examples(hz))
    def run(case: x.XmlCase, header_key: str | None) -> None:
        note(f"damage: {case.damage}\nbody: {case.data[:3000]!r}")
        before = hz.start()
        xml = {"Content-Type": "application/xml"}
        dry = hz.client.post("/bulk-changes:dry-run", content=case.data, headers={**hz.headers, **xml})
        hz.check_answer(dry, "POST /bulk-changes:dry-run")
        assert hz.counts() == before, f"the dry run stored something: {_stored_delta(before, hz.counts())}"
        idem = {"Idempotency-Key": header_key.encode("latin-1")} if header_key is not None else {}
        sub = hz.client.post("/bulk-changes", content=case.data, headers={**hz.headers, **xml, **idem})
        hz.check_answer(sub, "POST /bulk-changes")
        after = hz.counts()
        if sub.status_code >= 400:
            hz.refused += 1
            assert after == before, f"refused ({sub.status_code}) but stored {_stored_delta(before, after)}"
            return
        hz.accepted += 1
        assert case.may_round_trip, f"a document with damage {case.damage!r} was accepted"
        assert dry.status_code == 200 or header_key, f"the dry run refused what the submit accepted: {dry.text[:300]}"
        answer = sub.json()
        sent = x.as_sent(case.body)
        key = h.expected_key(header_key or sent.get("idempotencyKey"))
        if key is None or key not in keys_seen:
            assert answer["created"] is True and sub.status_code == 201, answer
            delta = _stored_delta(before, after)
            assert delta.get("bulk_change") == 1 and delta.get("device_change") == len(sent["devices"]), delta
        else:
            assert after == before, f"a repeated idempotency key stored {_stored_delta(before, after)}"
        if key:
            keys_seen.add(key)
        stored_key = hz.client.get(f"/bulk-changes/{answer['id']}", headers=hz.headers).json()["idempotencyKey"]
        assert stored_key == key and len(key or "") <= MAX_KEY, f"key stored as {stored_key!r}, sent {key!r}"
        if answer["created"]:
            problems = round_trip_problems(hz.device_rows(answer["id"]), case, integrations)
            assert not problems, "accepted, but what was stored is not what was sent:\n" + "\n".join(problems)
        check_download(hz, answer["id"])

    run()
    print(f"\nXML API: accepted {hz.accepted}, refused {hz.refused}")
    assert hz.accepted and hz.refused, f"accepted {hz.accepted}, refused {hz.refused}: the generator misses one side"


@st.composite
def cli_xml_case(draw: st.DrawFn, seed: Any) -> tuple[str, str, x.XmlCase, str | None]:
    command = draw(st.sampled_from(["submit", "dry-run"]))
    suffix = draw(st.sampled_from([".xml", ".xml", ".request"]))  # no known extension: known by its '<'
    key = draw(
        h.weighted((3, st.none()), (2, h.HOSTILE_TEXT.map(argv_text)), (1, st.sampled_from(["cli-x", " cli-x "])))
    )
    return command, suffix, draw(x.xml_case(seed)), key


def test_cli_refuses_xml_clearly_or_round_trips(xml_harness: Harness, db_url: str, tmp_path: Path) -> None:
    hz = xml_harness
    runner = CliRunner()
    integrations = {sp_id: Integration(name) for name, sp_id in hz.seed.service_providers.items()}

    @HOSTILE
    @given(args=cli_xml_case(hz.seed))
    @with_examples(*({"args": ("submit", ".xml", e["case"], e["header_key"])} for e in examples(hz)))
    def run(args: tuple[str, str, x.XmlCase, str | None]) -> None:
        command, suffix, case, key = args
        path = tmp_path / f"request{suffix}"
        path.write_bytes(case.data)
        argv = [command, str(path), "--database-url", db_url, *(["--idempotency-key", key] if key is not None else [])]
        note(f"bulkchange {command} {suffix} key={key!r} damage={case.damage}\nfile: {case.data[:2000]!r}")
        before = hz.start()
        result = runner.invoke(main, argv, env={"COLUMNS": "250"}, catch_exceptions=True)
        _check_no_traceback(result)
        hz.check_logs(f"bulkchange {command}")
        after = hz.counts()
        errors = [
            line for line in result.stderr.split("\n") if line.strip() and not line.startswith(("Usage: ", "Try '"))
        ]
        if errors or result.exit_code not in (0, 1) or (command == "submit" and result.exit_code != 0):
            hz.refused += 1
            assert result.exit_code != 0 and len(errors) == 1 and errors[0].startswith("Error: "), result.output[-1500:]
            assert after == before, f"refused (exit {result.exit_code}) but stored {_stored_delta(before, after)}"
            assert not h.control_chars(result.stderr), f"control characters on the terminal: {result.stderr!r}"
            return
        hz.accepted += 1
        assert case.may_round_trip, f"a file with damage {case.damage!r} was accepted"
        if command == "dry-run":
            assert after == before, f"the dry run stored {_stored_delta(before, after)}"
            return
        found = re.search(r"(?:created bulk change|already submitted as bulk change) (\d+)", result.stdout)
        assert found, f"submit exit 0 without a bulk change id: {result.stdout[-1000:]!r}"
        bc = get_bulk_change(hz.engine, int(found.group(1)), hz.seed.tenant_id)
        sent = x.as_sent(case.body)
        expected = h.expected_key(key or sent.get("idempotencyKey"))
        assert bc["idempotency_key"] == expected, f"key stored as {bc['idempotency_key']!r}, sent {expected!r}"
        if "created bulk change" in result.stdout:
            rows = list(iter_device_results(hz.engine, hz.seed.tenant_id, bc["id"]))
            problems = round_trip_problems(rows, case, integrations)
            assert not problems, "accepted, but what was stored is not what was sent:\n" + "\n".join(problems)

    run()
    print(f"\nXML CLI: accepted {hz.accepted}, refused {hz.refused}")
    assert hz.accepted and hz.refused, f"accepted {hz.accepted}, refused {hz.refused}: the generator misses one side"
