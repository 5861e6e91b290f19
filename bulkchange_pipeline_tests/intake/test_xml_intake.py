"""XML at intake (issue 19), on both backends: an XML request through the API and the CLI stores the
same bulk change as its JSON twin (header, rows, fingerprint), dry runs store nothing and report
alike, idempotency is shared with JSON, the XSDs are published and match what intake reads, and
the results download as XML reads back as the JSON results."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from lxml import etree

from bulkchange_pipeline.cli import main
from bulkchange_pipeline.domain import PAYLOAD_KEYS, ChangeType, DeviceChangeStatus
from bulkchange_pipeline.domain.requests import TARGET_MODELS, canonical_key
from bulkchange_pipeline.intake.api_models import DeviceResultOut
from bulkchange_pipeline.intake.results_xml import RESULT_ELEMENTS
from bulkchange_pipeline.intake.xml_request import element_shapes, xml_request_body
from bulkchange_pipeline.schemas import schema_path
from bulkchange_pipeline.store.bulk_changes import get_bulk_change
from bulkchange_pipeline.store.device_changes import RowResult, claim, record_results
from bulkchange_pipeline.store.device_rows import iter_device_results
from bulkchange_pipeline.store.seed import DemoSeed

from . import hostile_inputs as h
from . import xml_inputs as x
from .conftest import table_counts
from .test_api import BAD_ICCID, Api, make_api

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
XML = {"Content-Type": "application/xml"}
XS = "{http://www.w3.org/2001/XMLSchema}"


@pytest.fixture
def api(engine: sa.Engine, db_url: str) -> Iterator[Api]:
    yield from make_api(engine, db_url, devices_per_carrier=20)


def bodies(seed: DemoSeed) -> list[dict[str, Any]]:
    """One request per change type the seed's providers take, with payload values, per-device
    values, whitespace to strip and a device that is refused."""
    out = []
    for spec in h.change_specs(seed):
        ids = h.device_ids(h.THINGSPACE_INDEX if spec.integration == "thingspace" else h.JASPER_INDEX)
        first = {name: values[0] for name, values in spec.fields.items()}
        override = {name: values[-1] for name, values in spec.fields.items()}
        out.append(
            {
                "serviceProviderId": seed.service_providers[spec.integration],
                "changeType": spec.name if spec.change_type % 2 else spec.change_type,
                "devices": [
                    ids["iccid"][0],
                    {"iccid": f" {ids['iccid'][1]} ", **override},
                    {"imei": ids["imei"][2]},
                    BAD_ICCID,
                ],
                spec.payload_key: {**first, "effectiveDate": "2000-01-01T00:00:00Z"},
            }
        )
    out.append({**seed.example_customer_rate_plan_request(), "processChanges": False})
    return out


def stored(engine: sa.Engine, seed: DemoSeed, bc_id: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A bulk change as stored, without what differs between two submissions (ids, times)."""
    bc = get_bulk_change(engine, bc_id, seed.tenant_id)
    assert bc is not None
    header = {k: bc[k] for k in ("service_provider_id", "change_type", "process_changes", "request", "status")}
    rows = [
        {k: v for k, v in r.items() if k not in ("id", "processed_at")}
        for r in iter_device_results(engine, seed.tenant_id, bc_id)
    ]
    return header, rows


def test_xml_maps_to_the_dict_its_json_twin_decodes_to(seed: DemoSeed) -> None:
    for body in bodies(seed):
        assert xml_request_body(x.to_xml(body).encode()) == body
    example = (EXAMPLES / "customer_rate_plan_change.json").read_text()
    assert xml_request_body((EXAMPLES / "customer_rate_plan_change.xml").read_bytes()) == h.decoded(example.encode())[1]
    with_products = {
        "serviceProviderId": 1,
        "changeType": 8,
        "devices": ["x"],
        "createRevService": {"customerId": 5, "productIds": [1, 2]},
    }
    assert xml_request_body(x.to_xml(with_products).encode()) == with_products
    empty_list = {**with_products, "createRevService": {"productIds": []}}
    assert xml_request_body(x.to_xml(empty_list).encode()) == empty_list


def test_xml_submission_stores_the_same_bulk_change_as_json(api: Api) -> None:
    for i, body in enumerate(bodies(api.seed)):
        by_json = api.client.post("/bulk-changes", json=body, headers=api.demo)
        by_xml = api.client.post("/bulk-changes", content=x.to_xml(body), headers={**api.demo, **XML})
        assert by_json.status_code == by_xml.status_code == 201, (by_json.text, by_xml.text)
        assert by_xml.json()["validation"] == by_json.json()["validation"]
        json_stored = stored(api.engine, api.seed, by_json.json()["id"])
        assert stored(api.engine, api.seed, by_xml.json()["id"]) == json_stored
        assert len(json_stored[1]) == 4
        assert (json_stored[1][-1]["status"] == "ERROR") is (BAD_ICCID in body["devices"])
        # The same idempotency key for the JSON and the XML form: one bulk change (one fingerprint).
        key = {"idempotencyKey": f"twin-{i}"}
        first = api.client.post("/bulk-changes", json={**body, **key}, headers=api.demo)
        again = api.client.post("/bulk-changes", content=x.to_xml({**body, **key}), headers={**api.demo, **XML})
        assert first.status_code == 201 and again.status_code == 200, again.text
        assert again.json()["id"] == first.json()["id"] and again.json()["created"] is False


def test_dry_run_of_xml_reports_like_json_and_stores_nothing(api: Api) -> None:
    for body in bodies(api.seed):
        before = table_counts(api.engine)
        for media in ("application/xml", "text/xml", "application/vnd.bulkchange+xml"):
            r = api.client.post(
                "/bulk-changes:dry-run", content=x.to_xml(body), headers={**api.demo, "Content-Type": media}
            )
            assert r.status_code == 200 and r.json()["stored"] is False, r.text
            twin = api.client.post("/bulk-changes:dry-run", json=body, headers=api.demo)
            assert r.json()["validation"] == twin.json()["validation"]
        assert table_counts(api.engine) == before


def test_idempotency_of_xml_is_that_of_json(api: Api) -> None:
    body = x.valid_body(api.seed, idempotencyKey="xml-key-1")
    first = api.client.post("/bulk-changes", content=x.to_xml(body), headers={**api.demo, **XML})
    assert first.status_code == 201, first.text
    before = table_counts(api.engine)
    same = api.client.post("/bulk-changes", content=x.to_xml(body), headers={**api.demo, **XML})
    assert same.status_code == 200 and same.json()["id"] == first.json()["id"] and not same.json()["created"]
    changed = x.valid_body(api.seed, idempotencyKey="xml-key-1", statusUpdate={"targetStatus": "RETIRED"})
    conflict = api.client.post("/bulk-changes", content=x.to_xml(changed), headers={**api.demo, **XML})
    assert conflict.status_code == 409 and conflict.json()["bulkChangeId"] == first.json()["id"], conflict.text
    by_header = api.client.post(
        "/bulk-changes",
        content=x.to_xml(x.valid_body(api.seed)),
        headers={**api.demo, **XML, "Idempotency-Key": "xml-key-1"},
    )
    assert by_header.status_code == 200 and by_header.json()["id"] == first.json()["id"]
    differ = api.client.post(
        "/bulk-changes", content=x.to_xml(body), headers={**api.demo, **XML, "Idempotency-Key": "other"}
    )
    assert differ.status_code == 422 and "differ" in differ.json()["detail"]
    assert table_counts(api.engine) == before


def test_the_xsds_are_published_without_a_key_and_are_the_ones_intake_reads(api: Api) -> None:
    doc = api.client.get("/openapi.json").json()
    for route, name in (
        ("/schemas/bulk-change-request.xsd", "bulk_change_request.xsd"),
        ("/schemas/bulk-change-results.xsd", "bulk_change_results.xsd"),
        ("/schemas/submission-results.xsd", "submission_results.xsd"),
    ):
        r = api.client.get(route)  # no API key
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/xml")
        assert r.content == schema_path(name).read_bytes()
        etree.XMLSchema(etree.fromstring(r.content))  # a schema an XML tool can load
        assert "application/xml" in doc["paths"][route]["get"]["responses"]["200"]["content"]
    content = doc["paths"]["/bulk-changes"]["post"]["requestBody"]["content"]
    assert {"application/json", "application/xml", "text/xml"} <= set(content)
    schema = etree.XMLSchema(etree.fromstring(api.client.get("/schemas/bulk-change-request.xsd").content))
    for body in bodies(api.seed):
        assert schema.validate(etree.fromstring(x.to_xml(body).encode())), schema.error_log


def test_every_field_of_every_change_type_has_its_element() -> None:
    """The XSD's payload elements hold exactly the change type's fields, a device entry any of
    them: a field added to a target model without its element fails here."""
    xsd = etree.parse(str(schema_path("bulk_change_request.xsd"))).getroot()
    shapes = element_shapes()

    def children(name: str) -> set[str]:
        decl = xsd.find(f"{XS}element[@name='{name}']")
        assert decl is not None, name
        inline = decl.find(f"{XS}complexType")
        if inline is None:
            inline = xsd.find(f"{XS}complexType[@name='{decl.get('type').split(':')[1]}']")
        return {e.get("ref").split(":")[1] for e in inline.iter(f"{XS}element")}

    every_field: set[str] = set()
    for change_type, key in PAYLOAD_KEYS.items():
        fields = set(TARGET_MODELS[change_type].model_fields)
        assert {canonical_key(n) for n in children(key)} == fields, change_type
        every_field |= fields
        assert shapes[key] == "object"
    entry = children("deviceEntry") - {"device", "iccid", "imei", "msisdn", "eid"}
    assert {canonical_key(n) for n in entry} == every_field
    results = etree.parse(str(schema_path("bulk_change_results.xsd"))).getroot()
    row = results.find(f"{XS}complexType[@name='DeviceResult']")
    assert tuple(e.get("name") for e in row.iter(f"{XS}element")) == RESULT_ELEMENTS
    assert tuple(f.alias for f in DeviceResultOut.model_fields.values()) == RESULT_ELEMENTS
    statuses = {e.get("value") for e in results.iter(f"{XS}enumeration")}
    assert statuses == {s.value for s in DeviceChangeStatus}
    assert set(ChangeType.__members__.values()) == set(PAYLOAD_KEYS)


def test_results_download_as_xml_reads_back_as_the_json_results(api: Api) -> None:
    iccids = api.seed.sample_iccids["jasper"]
    body = {
        **x.valid_body(api.seed, [*iccids[:4], BAD_ICCID]),
        "statusUpdate": {"targetStatus": "DEACTIVATED", "reasonCode": "a&b <c>"},
    }
    bc_id = api.client.post("/bulk-changes", content=x.to_xml(body), headers={**api.demo, **XML}).json()["id"]
    rows = [r["id"] for r in iter_device_results(api.engine, api.seed.tenant_id, bc_id)]
    claim(api.engine, rows[:3])
    carrier_text = "line 1\r\nline 2 <b>&amp;</b> ]]> \x1b[31m \ufffe end"  # what a carrier may answer
    record_results(
        api.engine,
        tenant_id=api.seed.tenant_id,
        bulk_change_id=bc_id,
        process_by="test",
        results=[
            RowResult(rows[0], DeviceChangeStatus.PROCESSED, "", carrier_request_id="req-<1>&"),
            RowResult(rows[1], DeviceChangeStatus.API_FAILED, carrier_text),
            RowResult(rows[2], DeviceChangeStatus.API_FAILED, "\t tab and spaces \n"),
        ],
    )
    pages = api.client.get(f"/bulk-changes/{bc_id}/devices", params={"pageSize": 1000}, headers=api.demo).json()[
        "items"
    ]
    results_xsd = etree.XMLSchema(etree.parse(str(schema_path("bulk_change_results.xsd"))))
    for status in (None, "API_FAILED", "ERROR"):
        params = {"format": "xml", **({"status": status} if status else {})}
        r = api.client.get(f"/bulk-changes/{bc_id}/devices", params=params, headers=api.demo)
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/xml")
        assert f"bulk-change-{bc_id}-devices.xml" in r.headers["content-disposition"]
        assert results_xsd.validate(etree.fromstring(r.content)), results_xsd.error_log
        expected = [i for i in pages if status is None or i["status"] == status]
        for item in expected:  # what XML 1.0 cannot carry is U+FFFD; the rest exactly
            if item["statusDetails"]:
                item["statusDetails"] = re.sub("[\x1b\ufffe]", "\ufffd", item["statusDetails"])
        assert x.results_items(r.content) == expected
    got = {
        i["id"]: i
        for i in x.results_items(api.client.get(f"/bulk-changes/{bc_id}/devices?format=xml", headers=api.demo).content)
    }
    assert got[rows[1]]["statusDetails"] == carrier_text.replace("\x1b", "\ufffd").replace("\ufffe", "\ufffd")
    assert got[rows[2]]["statusDetails"] == "\t tab and spaces \n" and got[rows[0]]["statusDetails"] == ""
    assert got[rows[0]]["changeRequest"]["reason_code"] == "a&b <c>" and got[rows[0]]["carrierRequestId"] == "req-<1>&"
    assert api.client.get(f"/bulk-changes/{bc_id}/devices?format=xml", headers=api.other).status_code == 404
    assert api.client.get("/bulk-changes/999999/devices?format=xml", headers=api.demo).status_code == 404


# --- the CLI ----------------------------------------------------------------------------------------


@pytest.fixture
def run(db_url: str) -> Any:
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(main, [*args, "--database-url", db_url], env={"COLUMNS": "250"}, catch_exceptions=False)

    return invoke


def _created(result: Result) -> int:
    found = re.search(r"(?:created bulk change|already submitted as bulk change) (\d+)", result.output)
    assert found and result.exit_code == 0, result.output
    return int(found.group(1))


def test_cli_submits_and_dry_runs_xml_like_json(run: Any, api: Api, tmp_path: Path) -> None:
    for i, body in enumerate(bodies(api.seed)):
        json_file, xml_file, bare = tmp_path / f"r{i}.json", tmp_path / f"r{i}.xml", tmp_path / f"r{i}.request"
        json_file.write_text(h.dump(body))
        xml_file.write_text(x.to_xml(body))
        bare.write_text("\n  " + x.to_xml(body, declaration=False))  # no extension: known by its leading '<'
        before = table_counts(api.engine)
        dry_json, dry_xml = run("dry-run", str(json_file)), run("dry-run", str(xml_file))
        assert dry_xml.exit_code == dry_json.exit_code and dry_xml.output == dry_json.output
        assert dry_json.exit_code == (0 if body.get("processChanges") is False else 1)  # the example has no bad device
        assert table_counts(api.engine) == before
        by_json = stored(api.engine, api.seed, _created(run("submit", str(json_file))))
        assert stored(api.engine, api.seed, _created(run("submit", str(xml_file)))) == by_json
        assert stored(api.engine, api.seed, _created(run("submit", str(bare)))) == by_json
    xml_file = tmp_path / "keyed.xml"
    xml_file.write_text(x.to_xml(x.valid_body(api.seed)))
    first = _created(run("submit", str(xml_file), "--idempotency-key", "cli-xml"))
    again = run("submit", str(xml_file), "--idempotency-key", "cli-xml")
    assert _created(again) == first and "nothing new created" in again.output
    mismatch = run("submit", str(xml_file), "--service-provider", "teal")
    assert mismatch.exit_code == 2 and "the file says serviceProviderId" in mismatch.output
