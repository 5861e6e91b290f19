"""Every carrier has a public description here, and every claim in it names its source."""

from __future__ import annotations

import pytest

from bulkchange_pipeline.domain.enums import Integration
from bulkchange_pipeline_tests.contracts.contract import CONTRACT_DIR, Contract, load_contract

CARRIERS = sorted(i.value for i in Integration)


@pytest.mark.parametrize("carrier", CARRIERS)
def test_each_carrier_has_a_sourced_description(carrier: str) -> None:
    contract = load_contract(carrier)
    assert contract.carrier == carrier
    assert contract.operations, f"{carrier}.yaml describes no operation"
    for op in contract.operations.values():
        assert op.method in {"GET", "POST", "PUT", "PATCH", "DELETE"}, (carrier, op.name, op.method)
        assert op.path.startswith("/"), (carrier, op.name, op.path)


def test_no_stray_descriptions() -> None:
    """A yaml for an integration we do not have would be checked by nothing."""
    stray = {p.stem for p in CONTRACT_DIR.glob("*.yaml")} - set(CARRIERS)
    assert not stray, stray


def test_an_operation_without_a_source_is_refused() -> None:
    raw = {
        "carrier": "x",
        "sources": {"doc": {"ref": "https://example.invalid/doc", "tag": "D"}},
        "operations": {"op": {"method": "GET", "path": "/a", "sources": []}},
    }
    with pytest.raises(ValueError, match="names no public source"):
        Contract(raw)
    raw["operations"]["op"]["sources"] = ["doc"]
    raw["sources"]["doc"]["tag"] = "maybe"
    with pytest.raises(ValueError, match="needs a ref and a tag"):
        Contract(raw)


def test_request_errors_name_the_field() -> None:
    raw = {
        "carrier": "x",
        "sources": {"doc": {"ref": "https://example.invalid/doc", "tag": "D"}},
        "operations": {
            "edit": {
                "method": "PUT",
                "path": "/devices/{iccid}",
                "sources": ["doc"],
                "request": {
                    "type": "object",
                    "required": ["status"],
                    "properties": {"status": {"enum": ["ACTIVATED"]}},
                    "additionalProperties": False,
                },
            }
        },
    }
    op = Contract(raw).find("PUT", "/devices/8901")
    assert op is not None and Contract(raw).find("PUT", "/devices/8901/x") is None
    assert op.request_errors({"status": "ACTIVATED"}) == []
    assert any("extra" in e for e in op.request_errors({"status": "ACTIVATED", "extra": 1}))
    assert any("status" in e for e in op.request_errors({"status": "active"}))
