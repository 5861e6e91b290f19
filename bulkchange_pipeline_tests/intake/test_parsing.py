"""CSV and JSON parsing: file-level errors are clear, row-level problems are kept per row."""

from __future__ import annotations

import json

import pytest

from bulkchange_pipeline.domain import ChangeType
from bulkchange_pipeline.intake.parsing import IntakeError, IntakeLimits, formula_reason, parse_csv, parse_json, read_request_file

ICCID = "8901100000000000000"


def test_csv_with_wire_and_snake_names() -> None:
    data = f"ICCID,targetStatus,effective_date\n{ICCID},DEACTIVATED,2030-01-01\n\n".encode()
    parsed = parse_csv(data, change_type="StatusUpdate", service_provider_id=1)
    req = parsed.request
    assert req.change_type is ChangeType.STATUS_UPDATE and req.service_provider_id == 1
    entry = req.entries()[0]
    assert entry.iccid == ICCID
    assert entry.values == {"status": "DEACTIVATED", "effective_date": "2030-01-01"}
    assert parsed.row_numbers == [2]


def test_csv_header_columns_must_agree() -> None:
    ok = f"changeType,serviceProviderId,device,carrierRatePlan\n7,3,{ICCID},IOT-1GB\n7,3,{ICCID},IOT-5GB\n".encode()
    req = parse_csv(ok).request
    assert req.change_type is ChangeType.CARRIER_RATE_PLAN_CHANGE and req.service_provider_id == 3
    bad = f"changeType,serviceProviderId,device,carrierRatePlan\n7,3,{ICCID},A\n1,3,{ICCID},B\n".encode()
    with pytest.raises(IntakeError, match="same value on every row"):
        parse_csv(bad)
    with pytest.raises(IntakeError, match="command line"):
        parse_csv(ok, change_type=1)


def test_csv_bom_is_accepted() -> None:
    assert parse_csv(f"\ufefficcid,status\n{ICCID},ACTIVATED\n".encode(), change_type=1, service_provider_id=1).request


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"iccid,status\n\xff\xfe1,2\n", r"not UTF-8: byte 0xFF at offset 13 \(line 2\)"),
        (b"", "empty"),
        (b"\n \n", "empty"),
        (b"iccid,status\n", "no device rows"),
        (b"status\nACTIVATED\n", "no identifier column"),
        (b"iccid,colour,status\n1,red,A\n", "unknown column.*'colour'"),
        (b"iccid,iccid\n1,2\n", "given twice"),
        (b"iccid,carrierRatePlan\n1,A\n", "not fields of StatusUpdate"),
        (b"iccid,status\n\"1,A\n", r"CSV error on line 2: unexpected end of data"),
    ],
)
def test_csv_file_errors(data: bytes, message: str) -> None:
    with pytest.raises(IntakeError, match=message):
        parse_csv(data, change_type=1, service_provider_id=1)


def test_csv_needs_change_type_and_provider() -> None:
    with pytest.raises(IntakeError, match="no change type"):
        parse_csv(f"iccid,status\n{ICCID},A\n".encode(), service_provider_id=1)
    with pytest.raises(IntakeError, match="no service provider"):
        parse_csv(f"iccid,status\n{ICCID},A\n".encode(), change_type=1)
    with pytest.raises(IntakeError, match="unknown change type 6"):
        parse_csv(f"iccid,status\n{ICCID},A\n".encode(), change_type=6, service_provider_id=1)


def test_oversize_files_are_refused() -> None:
    data = ("iccid,status\n" + "".join(f"{ICCID},ACTIVATED\n" for _ in range(50))).encode()
    with pytest.raises(IntakeError, match="the limit is"):
        parse_csv(data, change_type=1, service_provider_id=1, limits=IntakeLimits(max_bytes=100))
    with pytest.raises(IntakeError, match="more than 10 device rows"):
        parse_csv(data, change_type=1, service_provider_id=1, limits=IntakeLimits(max_rows=10))


def test_ragged_row_is_a_row_error_not_a_file_error() -> None:
    data = f"iccid,status\n{ICCID},A\n{ICCID},A,extra\n".encode()
    parsed = parse_csv(data, change_type=1, service_provider_id=1)
    assert len(parsed.request.devices) == 2
    assert parsed.row_errors == {1: "line 3 has 3 cells, the header has 2; check for an unquoted comma"}


def test_formula_reason() -> None:
    for value in ("=1+1", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\t=x"):
        assert formula_reason("username", value)
    for value in ("+15551234567", "-5", "12", "plain", "", None, 3):
        assert formula_reason("username", value) is None


def test_json_errors_are_readable() -> None:
    with pytest.raises(IntakeError, match="invalid JSON at line 1"):
        parse_json(b"{nope")
    with pytest.raises(IntakeError, match="unknown change type 11"):
        parse_json(json.dumps({"serviceProviderId": 1, "changeType": 11, "devices": [ICCID]}))
    with pytest.raises(IntakeError, match="serviceProviderId: Field required"):
        parse_json(json.dumps({"changeType": 1, "devices": [ICCID]}))
    with pytest.raises(IntakeError, match="carrierRatePlanUpdate does not belong to changeType 1"):
        parse_json(json.dumps({"serviceProviderId": 1, "changeType": 1, "devices": [ICCID], "carrierRatePlanUpdate": {}}))
    with pytest.raises(IntakeError, match="JSON object"):
        parse_json(b"[1, 2]")
    with pytest.raises(IntakeError, match="not UTF-8"):
        parse_json(b'{"a": "\xe9"}')


def test_read_request_file_detects_kind(tmp_path) -> None:
    j = tmp_path / "req.txt"
    j.write_text(json.dumps({"serviceProviderId": 1, "changeType": 4, "devices": [ICCID], "customerRatePlanUpdate": {"customerRatePlanId": 1}}))
    parsed = read_request_file(j, idempotency_key="abc")
    assert parsed.kind == "json" and parsed.request.idempotency_key == "abc"
    c = tmp_path / "req.csv"
    c.write_text(f"iccid,status\n{ICCID},ACTIVATED\n")
    assert read_request_file(c, change_type="1", service_provider_id=1).kind == "csv"
    with pytest.raises(IntakeError, match="cannot read"):
        read_request_file(tmp_path / "missing.csv")
