"""A request file on disk, JSON, XML or CSV (the CLI's ``submit`` and ``dry-run``): read under the
size cap, then parsed as ``parse_json``, ``parse_xml`` or ``parse_csv`` would parse an upload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..domain import ChangeType
from ..domain.requests import MAX_IDEMPOTENCY_KEY
from .csv_file import parse_csv
from .parsing import IntakeError, IntakeLimits, ParsedFile, change_type_option, check_size, parse_json
from .xml_request import looks_like_xml, parse_xml


def read_request_file(
    path: str | Path,
    *,
    change_type: ChangeType | int | str | None = None,
    service_provider_id: int | None = None,
    idempotency_key: str | None = None,
    limits: IntakeLimits = IntakeLimits(),
) -> ParsedFile:
    """Read a JSON, XML or CSV request file (by extension, else by its first character: ``{`` or
    ``[`` JSON, ``<`` XML, anything else CSV).

    Options given for a JSON or XML file override its fields (the idempotency key, typically).
    """
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise IntakeError(f"cannot read {p}: {exc.strerror}") from None
    check_size(size, limits)
    try:  # read under the cap: a pipe or device (/dev/zero) says size 0 and never ends
        with p.open("rb") as f:
            data = f.read(limits.max_bytes + 1)
    except OSError as exc:
        raise IntakeError(f"cannot read {p}: {exc.strerror}") from None
    return parse_request_data(
        data,
        p.suffix,
        change_type=change_type,
        service_provider_id=service_provider_id,
        idempotency_key=idempotency_key,
        limits=limits,
    )


def parse_request_data(
    data: bytes,
    suffix: str = "",
    *,
    change_type: ChangeType | int | str | None = None,
    service_provider_id: int | None = None,
    idempotency_key: str | None = None,
    limits: IntakeLimits = IntakeLimits(),
) -> ParsedFile:
    """A request file's bytes, read by ``suffix`` (``.json``, ``.xml``, ``.csv``) or else by its
    first character, with the options of ``read_request_file``. The one dispatch for files from the
    command line and from drop inboxes (``intake.drops``), which hold bytes, not local paths."""
    check_size(len(data), limits)
    suffix = suffix.lower()
    known = suffix in (".json", ".xml", ".csv")
    is_json = suffix == ".json" or (not known and data.lstrip()[:1] in (b"{", b"["))
    is_xml = suffix == ".xml" or (not known and not is_json and looks_like_xml(data))
    if not is_json and not is_xml:
        return parse_csv(
            data,
            change_type=change_type,
            service_provider_id=service_provider_id,
            idempotency_key=idempotency_key,
            limits=limits,
        )
    parsed = parse_json(data, limits=limits) if is_json else parse_xml(data, limits=limits)
    updates: dict[str, Any] = {}
    if idempotency_key and idempotency_key.strip():  # validated like the file's own key (model_copy does not)
        if len(idempotency_key.strip()) > MAX_IDEMPOTENCY_KEY:
            raise IntakeError(
                f"the idempotency key has {len(idempotency_key.strip())} characters; the limit is {MAX_IDEMPOTENCY_KEY}"
            )
        updates["idempotency_key"] = idempotency_key.strip()
    if service_provider_id is not None and service_provider_id != parsed.request.service_provider_id:
        raise IntakeError(
            f"the file says serviceProviderId {parsed.request.service_provider_id}, the command line {service_provider_id}"
        )
    option_change_type = change_type_option(change_type)
    if option_change_type is not None and option_change_type is not parsed.request.change_type:
        raise IntakeError(
            f"the file says changeType {parsed.request.change_type.value}, the command line {change_type}"
        )
    if updates:
        parsed.request = parsed.request.model_copy(update=updates)
    return parsed


__all__ = ["parse_request_data", "read_request_file"]
