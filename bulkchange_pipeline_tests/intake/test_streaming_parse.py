"""A big CSV file is checked a megabyte at a time and its values are held to ``check_values`` one
by one only when a scan of the whole text says one could fail it (``csv_file._csv_check``): what is
refused, and the message, must be the same as when every value was checked, wherever in the file
the fault is (past the first megabyte, across a block boundary)."""

from __future__ import annotations

import pytest

from bulkchange_pipeline.domain import luhn_check_digit
from bulkchange_pipeline.intake.csv_file import SCAN_BYTES, parse_csv
from bulkchange_pipeline.intake.parsing import IntakeError, IntakeLimits, decode_utf8

ROWS = 60_000  # about 2.5 MB: the fault lands past the first block
LIMITS = IntakeLimits(max_rows=ROWS)


def _lines(n: int) -> list[str]:
    out = []
    for i in range(n):
        body = f"8901770{i:012d}"
        out.append(f"{body}{luhn_check_digit(body)},DEACTIVATED\n")
    return out


def _file(lines: list[str]) -> bytes:
    return ("iccid,targetStatus\n" + "".join(lines)).encode()


def test_a_plain_big_file_parses_with_its_lines():
    parsed = parse_csv(_file(_lines(ROWS)), change_type=1, service_provider_id=1, limits=LIMITS)
    assert len(parsed.request.devices) == ROWS
    assert parsed.row_numbers is not None and parsed.row_numbers[-1] == ROWS + 1 and len(parsed.row_numbers) == ROWS


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("DEACTIV\x1bATED", r"contains the control character U\+001B \(at position 8\)"),
        ("DEACTIV\u0085ATED", r"contains the control character U\+0085"),  # C1, two bytes in UTF-8
    ],
)
def test_a_value_no_column_can_hold_deep_in_the_file_refuses_it_as_before(value, reason):
    lines = _lines(ROWS)
    lines[50_000] = lines[50_000].replace("DEACTIVATED", value)
    with pytest.raises(IntakeError, match=reason):
        parse_csv(_file(lines), change_type=1, service_provider_id=1, limits=LIMITS)


def test_a_byte_that_is_not_utf8_past_the_first_block_is_named_with_its_offset_and_line():
    data = _file(_lines(ROWS))
    at = SCAN_BYTES + 7  # in the second block
    data = data[:at] + b"\xff" + data[at + 1 :]
    with pytest.raises(IntakeError) as found:
        decode_utf8(data)
    with pytest.raises(IntakeError, match="not UTF-8") as raised:
        parse_csv(data, change_type=1, service_provider_id=1, limits=LIMITS)
    assert str(raised.value) == str(found.value) and f"offset {at} " in str(raised.value)


def test_a_character_split_across_two_blocks_is_read_whole():
    """A two-byte character whose first byte ends a block is not an error (decoded incrementally),
    and a file with a non-ASCII value but nothing ``text_reason`` refuses parses."""
    head, line = b"iccid,targetStatus\n", _lines(1)[0].encode()
    full = (SCAN_BYTES - len(head)) // len(line) - 1
    prefix = head + line * full
    iccid = line.split(b",")[0]
    pad = SCAN_BYTES - 1 - len(prefix) - len(iccid) - 1
    data = prefix + iccid + b"," + b"A" * pad + "é".encode() + b"\n" + line * 10
    assert data[SCAN_BYTES - 1 : SCAN_BYTES + 1] == "é".encode()
    parsed = parse_csv(data, change_type=1, service_provider_id=1, limits=LIMITS)
    assert len(parsed.request.devices) == full + 11
