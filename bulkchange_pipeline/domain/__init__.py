"""Pure domain model: no I/O, imports nothing else of ours."""

from .capabilities import MATRIX, Capability, Handling, capability, unsupported_reason
from .enums import (
    FINAL_BULK_STATUSES,
    FINAL_DEVICE_STATUSES,
    BulkChangeStatus,
    ChangeType,
    DeviceChangeStatus,
    Integration,
    PortalType,
    bulk_status_detail,
    derive_bulk_status,
    refused_detail,
)
from .identifiers import (
    IdentifierKind,
    check_eid,
    check_iccid,
    check_imei,
    check_msisdn,
    classify,
    luhn_check_digit,
    luhn_valid,
    normalize,
    rev_io_id,
)
from .outcome import Outcome, outcome_of
from .requests import PAYLOAD_KEYS, BulkChangeRequest, DeviceEntry, build_target, canonical_key
from .transitions import TRANSITIONS, canonical_status, transition_error

__all__ = [
    "rev_io_id",
    "Outcome",
    "outcome_of",
    "MATRIX",
    "Capability",
    "Handling",
    "capability",
    "unsupported_reason",
    "FINAL_BULK_STATUSES",
    "FINAL_DEVICE_STATUSES",
    "BulkChangeStatus",
    "ChangeType",
    "DeviceChangeStatus",
    "Integration",
    "PortalType",
    "bulk_status_detail",
    "derive_bulk_status",
    "refused_detail",
    "IdentifierKind",
    "classify",
    "check_eid",
    "check_iccid",
    "check_imei",
    "check_msisdn",
    "luhn_check_digit",
    "luhn_valid",
    "normalize",
    "PAYLOAD_KEYS",
    "BulkChangeRequest",
    "DeviceEntry",
    "build_target",
    "canonical_key",
    "TRANSITIONS",
    "canonical_status",
    "transition_error",
]
