"""A submission's results XML (``intake.drops.submission_xml``: the API's ``?format=xml`` download and
a file drop's results file) is valid against ``schemas/submission_results.xsd``, on both backends:
a real split submission with a child row answered by a carrier, a child row still NEW and the
devices no service provider took, whatever unicode the device ids, the carrier's answer and the
refusal reasons hold. The XSD's row is the writer's element list, so neither can drift alone."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from bulkchange_pipeline.domain import BulkChangeRequest, DeviceChangeStatus
from bulkchange_pipeline.intake.drops.submission_xml import (
    SUBMISSION_ELEMENTS,
    SUBMISSION_RESULTS_SCHEMA,
    submission_xml_chunks,
)
from bulkchange_pipeline.intake.results_xml import RESULTS_NAMESPACE, RESULTS_SCHEMA
from bulkchange_pipeline.intake.submit import submit
from bulkchange_pipeline.schemas import schema_path
from bulkchange_pipeline.store.device_changes import RowResult, claim, record_results
from bulkchange_pipeline.store.device_rows import iter_device_results
from bulkchange_pipeline.store.schema import submission_refused
from bulkchange_pipeline.store.seed import DemoSeed
from bulkchange_pipeline.store.submissions import iter_submission_results

from ..intake.test_api import Api, make_api
from .conftest import UNKNOWN_ICCID, edit_body

XS = "{http://www.w3.org/2001/XMLSchema}"
NS = f"{{{RESULTS_NAMESPACE}}}"
SCHEMA = etree.XMLSchema(etree.parse(str(schema_path(SUBMISSION_RESULTS_SCHEMA))))


@pytest.fixture
def api(engine: sa.Engine, db_url: str) -> Iterator[Api]:
    yield from make_api(engine, db_url, devices_per_carrier=20)


def _xml(engine: sa.Engine, seed: DemoSeed, sid: int) -> bytes:
    """The document a file drop writes for submission ``sid`` (the API streams the same chunks)."""
    rows = iter_submission_results(engine, sid, seed.tenant_id)
    return "".join(submission_xml_chunks(sid, rows)).encode("utf-8")


def _valid(document: bytes) -> etree._Element:
    root = etree.fromstring(document)
    assert SCHEMA.validate(root), SCHEMA.error_log
    return root


def _split(engine: sa.Engine, seed: DemoSeed, *devices: str) -> tuple[int, list[int]]:
    request = BulkChangeRequest.model_validate(edit_body([seed.sample_iccids["jasper"][0], *devices]))
    outcome = submit(engine, seed.tenant_id, request, "api-key:ops")
    assert outcome.submission_id is not None
    return outcome.submission_id, [c.bulk_change_id for c in outcome.children]


def _answer(engine: sa.Engine, seed: DemoSeed, bc_id: int, details: str, request_id: str | None) -> None:
    """The child's first row answered by the carrier (API_FAILED, its text as given)."""
    row = next(iter(iter_device_results(engine, seed.tenant_id, bc_id)))
    claim(engine, [row["id"]])
    failed = RowResult(row["id"], DeviceChangeStatus.API_FAILED, details, carrier_request_id=request_id)
    record_results(engine, tenant_id=seed.tenant_id, bulk_change_id=bc_id, results=[failed], process_by="test")


def test_the_schema_row_is_the_writers_row_and_the_statuses_are_the_codes() -> None:
    xsd = etree.parse(str(schema_path(SUBMISSION_RESULTS_SCHEMA))).getroot()
    assert xsd.get("targetNamespace") == RESULTS_NAMESPACE
    row = xsd.find(f"{XS}complexType[@name='SubmissionDeviceResult']")
    assert tuple(e.get("name") for e in row.iter(f"{XS}element")) == SUBMISSION_ELEMENTS
    assert {e.get("value") for e in xsd.iter(f"{XS}enumeration")} == {s.value for s in DeviceChangeStatus}
    both = etree.XMLSchema(  # one namespace, two files: a tool can load them together
        etree.XML(
            '<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:bulkchange:results:1">'
            f'<xs:include schemaLocation="{schema_path(RESULTS_SCHEMA).as_uri()}"/>'
            f'<xs:include schemaLocation="{schema_path(SUBMISSION_RESULTS_SCHEMA).as_uri()}"/></xs:schema>'
        )
    )
    empty = b'<submissionResults xmlns="urn:bulkchange:results:1"><submissionId>7</submissionId></submissionResults>'
    assert both.validate(etree.fromstring(empty)) and SCHEMA.validate(etree.fromstring(empty))


def test_the_download_of_a_real_submission_is_valid(api: Api) -> None:
    s = api.seed.sample_iccids
    body = edit_body([s["jasper"][0], s["telegence"][0], s["jasper"][1], UNKNOWN_ICCID])
    sid = api.client.post("/bulk-changes", json=body, headers=api.demo).json()["submissionId"]
    children = api.client.get(f"/submissions/{sid}", headers=api.demo).json()["children"]
    _answer(api.engine, api.seed, children[0]["bulkChangeId"], "line 1\r\nline 2 <b>&amp;</b> ]]> \x1b end", "r-<1>")
    r = api.client.get(f"/submissions/{sid}/devices", params={"format": "xml"}, headers=api.demo)
    assert r.status_code == 200, r.text
    root = _valid(r.content)
    assert root.findtext(f"{NS}submissionId") == str(sid)
    rows = root.findall(f"{NS}deviceResult")
    assert [e.findtext(f"{NS}iccid") for e in rows] == [
        s["jasper"][0],
        s["jasper"][1],
        s["telegence"][0],
        UNKNOWN_ICCID,
    ]
    assert rows[0].findtext(f"{NS}statusDetails") == "line 1\r\nline 2 <b>&amp;</b> ]]> \ufffd end"
    refused = rows[-1]
    assert refused.find(f"{NS}id") is None and refused.find(f"{NS}bulkChangeId") is None
    assert refused.findtext(f"{NS}status") == "ERROR" and UNKNOWN_ICCID in refused.findtext(f"{NS}statusDetails")
    assert r.content == _xml(api.engine, api.seed, sid)  # the drop's file is the same document


# What a database stores: any character but NUL and lone surrogates (neither SQLite's UTF-8 nor
# PostgreSQL's text can hold them), so controls, U+FFFE/U+FFFF, bidi overrides and markup.
_HOSTILE = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00") | st.sampled_from("\x1b\r\u202e\ufffe\uffff&<>]]"),
    min_size=1,
    max_size=40,
)
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _readable(text: str) -> str:
    """``text`` as an XML 1.0 parser reads it back: what XML cannot carry is U+FFFD."""
    return _NOT_XML.sub("\ufffd", text)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(identifier=_HOSTILE, reason=_HOSTILE, details=_HOSTILE, request_id=st.none() | _HOSTILE)
def test_hostile_unicode_in_device_ids_and_reasons_stays_valid(
    engine: sa.Engine, seed: DemoSeed, identifier: str, reason: str, details: str, request_id: str | None
) -> None:
    """A device id no carrier has, a refusal reason and a carrier's answer with any characters (a
    lone surrogate, U+FFFE, controls, ``]]>``, bidi overrides): the document is still valid, and
    each reads back as written, or with U+FFFD where XML 1.0 has no character."""
    sid, children = _split(engine, seed, UNKNOWN_ICCID)
    _answer(engine, seed, children[0], details, request_id)
    with engine.begin() as conn:  # a refused device as stored, whatever intake let through or will
        conn.execute(
            sa.insert(submission_refused).values(submission_id=sid, row_number=99, identifier=identifier, reason=reason)
        )
    root = _valid(_xml(engine, seed, sid))
    rows = root.findall(f"{NS}deviceResult")
    assert len(rows) == 3  # the child's row, the refused unknown ICCID, the inserted one

    assert rows[0].findtext(f"{NS}statusDetails") == _readable(details)
    if request_id is not None:
        assert rows[0].findtext(f"{NS}carrierRequestId") == _readable(request_id)
    last = rows[-1]
    assert last.findtext(f"{NS}statusDetails") == _readable(reason)
    assert json.loads(last.findtext(f"{NS}changeRequest")) == {"device": identifier, "row": 99}
